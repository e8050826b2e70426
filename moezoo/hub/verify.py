"""Verify downloaded files once against known digests, then trust a marker that re-checks sizes only.

Hashing a 90 GB snapshot takes minutes, so it happens once: after the download, each file
is hashed and compared with the digest the hub published for it (the sha256 of an LFS file;
the git blob id, a sha1 of ``b"blob <size>\\0" + content``, of a small one). The digests and
sizes go into a JSON marker (:func:`moezoo.hub.cache.marker_path`); later loads compare only
the files' sizes with it (:func:`check_marker`), which catches a truncated or replaced file
but, by design, not a flipped byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moezoo.utils.digest import DigestMismatch, sha256_file
from moezoo.utils.io import atomic_write_text

MARKER_FORMAT = 1
_CHUNK = 1 << 24


class VerificationError(DigestMismatch):
    """A file does not hash to, or no longer has the size of, what was published or recorded.

    A :class:`moezoo.utils.digest.DigestMismatch` (a ``ValueError``), as a shipped file's mismatch is.
    """


@dataclass(frozen=True)
class Expected:
    """What one file must be: its size and a digest (sha256, or the git blob id of a non-LFS file)."""

    size: int | None = None
    sha256: str | None = None
    git_sha1: str | None = None
    source: str = "hub"  # where the digests come from, for the messages and the marker


def git_blob_sha1(path: str | os.PathLike) -> str:
    """The git object id of a file (what the hub reports as a non-LFS file's ``blob_id``).

    Example (``git hash-object`` of a file holding ``hello\\n``):
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "x"; _ = p.write_bytes(b"hello\\n")
        >>> git_blob_sha1(p)
        'ce013625030ba8dba906f756967f9e9ca394464a'
    """
    digest = hashlib.sha1(f"blob {os.path.getsize(path)}\0".encode())
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def verify_files(root: Path, expected: dict[str, Expected], what: str) -> dict[str, dict[str, Any]]:
    """Hash every file in ``expected`` (paths relative to ``root``) and compare; return the marker's records.

    Args:
        root: the folder the paths are relative to.
        expected: path -> :class:`Expected`; a file with no digest is hashed and recorded unchecked.
        what: names the source in errors, e.g. ``"mistralai/Mixtral-8x7B-v0.1@fc7ac94"``.

    Raises:
        VerificationError: a size or digest differs; the message names the file and both values.
    """
    records: dict[str, dict[str, Any]] = {}
    for rel, exp in sorted(expected.items()):
        path = root / rel
        size = path.stat().st_size
        if exp.size is not None and size != exp.size:
            raise VerificationError(f"{what}: {path} has {size:,} bytes, expected {exp.size:,} ({exp.source}); "
                                    "the download is truncated or corrupt: delete it and fetch again")
        actual = sha256_file(path)
        checked = None
        if exp.sha256 is not None:
            if actual != exp.sha256.lower():
                raise VerificationError(f"{what}: sha256 mismatch for {path}: expected {exp.sha256} ({exp.source}), "
                                        f"got {actual}; the file is corrupt: delete it and fetch again")
            checked = f"sha256 ({exp.source})"
        elif exp.git_sha1 is not None:
            blob = git_blob_sha1(path)
            if blob != exp.git_sha1.lower():
                raise VerificationError(f"{what}: git blob id mismatch for {path}: expected {exp.git_sha1} "
                                        f"({exp.source}), got {blob}; the file is corrupt: delete it and fetch again")
            checked = f"git-sha1 ({exp.source})"
        records[rel] = {"size": size, "sha256": actual, "checked": checked}
    return records


def write_marker(marker: Path, records: dict[str, dict[str, Any]], **meta: Any) -> None:
    """Record verified files (from :func:`verify_files`) and what they are (``meta``), atomically.

    Example:
        >>> import tempfile, pathlib
        >>> m = pathlib.Path(tempfile.mkdtemp()) / "v" / "m.json"
        >>> write_marker(m, {"a": {"size": 1, "sha256": "00", "checked": None}}, revision="r")
        >>> sorted(json.loads(m.read_text()))
        ['files', 'format', 'revision', 'verified_at']
    """
    data = {"format": MARKER_FORMAT, **meta, "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": records}
    atomic_write_text(marker, json.dumps(data, indent=1, sort_keys=True) + "\n")


def read_marker(marker: Path, **meta: Any) -> dict[str, Any] | None:
    """The marker's contents if it exists, is readable and matches ``meta``; ``None`` otherwise."""
    try:
        data = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != MARKER_FORMAT:
        return None
    if any(data.get(key) != value for key, value in meta.items()):
        return None
    return data


def check_marker(data: dict[str, Any], root: Path, paths: set[str], what: str) -> bool:
    """Whether ``root`` still holds exactly the marker's files (``paths``) at their recorded sizes.

    Returns ``False`` when the set of files differs (a file is missing or new: verify again).

    Raises:
        VerificationError: a recorded file's size changed since it was verified.
    """
    files = data.get("files", {})
    if set(files) != paths:
        return False
    for rel, record in sorted(files.items()):
        size = (root / rel).stat().st_size
        if size != record["size"]:
            raise VerificationError(
                f"{what}: {root / rel} has {size:,} bytes but {record['size']:,} when it was verified "
                f"(sha256 {record['sha256']}); it changed since: delete it and fetch again")
    return True
