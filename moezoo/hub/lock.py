"""Hub entries that follow a branch: the commit of their first fetch, locked in moezoo's cache.

A hub entry pins a 40-hex commit. A few releases have no commit that any public source records, and
moezoo never makes one up: their entries name a branch (``revision="main"``) instead. The first fetch
of such an entry resolves the branch to a commit (``snapshot_download``, or the hub cache's
``refs/main`` offline), verifies that snapshot, and writes the commit to
``$MOEZOO_CACHE/models/locks/NAME.json``. Every later fetch takes the locked commit, whatever the
branch points at by then, so the weights behind a name never change under a user (trust on first
use, as a lock file does for packages). ``moezoo info NAME`` shows the lock; deleting the file
follows the branch again at the next fetch.

Example:
    >>> is_commit("6d84c48581ece794365f2b8e9cfb043c68ade9c5"), is_commit("main"), is_commit(None)
    (True, False, False)
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from moezoo.hub.cache import models_cache
from moezoo.utils.io import atomic_write_text

LOCK_FORMAT = 1
_COMMIT = re.compile(r"[0-9a-f]{40}")


def is_commit(revision: str | None) -> bool:
    """Whether ``revision`` is a full 40-hex commit (a pin), not a branch or tag name."""
    return bool(revision) and _COMMIT.fullmatch(revision) is not None


def lock_path(name: str) -> Path:
    """Where the lock of entry ``name`` lives: ``$MOEZOO_CACHE/models/locks/NAME.json``.

    Example:
        >>> lock_path("libmoe_phi3_5_siglip_smoe.fsoft").name
        'libmoe_phi3_5_siglip_smoe.fsoft.json'
    """
    return models_cache() / "locks" / f"{name}.json"


def read_lock(name: str, repo_id: str, branch: str, subfolder: str | None = None) -> dict[str, Any] | None:
    """The lock of entry ``name``, or ``None`` when there is none or it was taken for another repo / branch
    / sub-folder (the entry changed: the next fetch locks again).

    Raises:
        ValueError: the lock file is unreadable; the message names it and says to delete it.
    """
    path = lock_path(name)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        commit = data["commit"]
        same = (data["repo_id"], data["branch"], data.get("subfolder")) == (repo_id, branch, subfolder)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{name}: the lock file {path} is unreadable ({type(err).__name__}: {err}); delete it, "
                         f"and the next fetch locks the commit {branch!r} of {repo_id} points at then") from err
    if not is_commit(commit):
        raise ValueError(f"{name}: the lock file {path} holds {commit!r}, not a 40-hex commit; delete it, and the "
                         f"next fetch locks the commit {branch!r} of {repo_id} points at then")
    return data if same else None


def write_lock(name: str, repo_id: str, branch: str, subfolder: str | None, commit: str) -> Path:
    """Record that entry ``name`` (repo ``repo_id``, following ``branch``) is locked at ``commit``; atomic.

    Example:
        >>> import os, tempfile
        >>> before = os.environ.get("MOEZOO_CACHE"); os.environ["MOEZOO_CACHE"] = tempfile.mkdtemp()
        >>> _ = write_lock("toy.v1", "org/toy", "main", None, "a" * 40)
        >>> read_lock("toy.v1", "org/toy", "main")["commit"] == "a" * 40, read_lock("toy.v1", "org/other", "main")
        (True, None)
        >>> _ = os.environ.pop("MOEZOO_CACHE") if before is None else os.environ.update(MOEZOO_CACHE=before)
    """
    if not is_commit(commit):
        raise ValueError(f"{name}: can only lock a 40-hex commit, not {commit!r}")
    path = lock_path(name)
    record = {"format": LOCK_FORMAT, "name": name, "repo_id": repo_id, "branch": branch, "subfolder": subfolder,
              "commit": commit, "locked_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    return path


def snapshot_commit(folder: Path) -> str:
    """The commit of a hub-cache snapshot folder (``.../snapshots/COMMIT[/SUBFOLDER]``).

    Example:
        >>> snapshot_commit(Path("/c/models--o--n/snapshots/" + "b" * 40 + "/sft_full/smoe")) == "b" * 40
        True
    """
    for part in (folder, *folder.parents):
        if part.parent.name == "snapshots" and is_commit(part.name):
            return part.name
    raise ValueError(f"{folder} is not inside a hub-cache snapshot (.../snapshots/COMMIT/...)")


def describe_revision(name: str, repo_id: str, revision: str | None, subfolder: str | None = None) -> str:
    """One line on what ``revision`` means for entry ``name``: a pin, or a branch and its lock here.

    Example:
        >>> describe_revision("a.b", "org/a", "6d84c48581ece794365f2b8e9cfb043c68ade9c5")
        'pinned commit 6d84c48581ece794365f2b8e9cfb043c68ade9c5'
    """
    if is_commit(revision):
        return f"pinned commit {revision}"
    if not revision:
        return "no revision recorded: it cannot be fetched"
    head = f"follows branch {revision!r} (no public source pins a commit of this release)"
    try:
        lock = read_lock(name, repo_id, revision, subfolder)
    except ValueError as err:
        return f"{head}; {err}"
    if lock is None:
        return f"{head}; not fetched here yet: the first fetch locks the commit it gets"
    return f"{head}; locked here at {lock['commit']} since {lock['locked_at']} ({lock_path(name)})"
