"""Where downloaded weights live: moezoo's cache and the standard Hugging Face hub cache.

- moezoo's cache is ``$MOEZOO_CACHE`` (default ``~/.cache/moezoo``), the variable the data
  builders use too (``$MOEZOO_CACHE/data``); weights go under ``$MOEZOO_CACHE/models``:
  ``models/url/NAME/`` for URL downloads, ``models/hub/`` for hub snapshots a user puts there
  (the hub cache layout), ``models/verified/`` for the markers that record what was verified.
- The Hugging Face hub cache is where ``snapshot_download`` and the ``hf`` CLI put files:
  ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``$XDG_CACHE_HOME/huggingface/hub``, else
  ``~/.cache/huggingface/hub`` (huggingface_hub's own rule). Each repo is a folder
  ``models--ORG--NAME`` holding ``blobs/`` (named by ETag: the sha256 of an LFS file, the git
  blob id of a small one), ``snapshots/COMMIT/`` (links into ``blobs/``) and ``refs/BRANCH``
  (a file holding the commit).

Every path here is read from the environment when called (huggingface_hub reads its
variables once, at import), so a test or a user can point them elsewhere at any time.
"""

from __future__ import annotations

import os
from pathlib import Path

_TRUE = {"1", "on", "yes", "true"}


def cache_root() -> Path:
    """moezoo's cache: ``$MOEZOO_CACHE``, else ``~/.cache/moezoo``.

    Example:
        >>> import os
        >>> before = os.environ.get("MOEZOO_CACHE"); os.environ["MOEZOO_CACHE"] = "/tmp/mz"
        >>> str(cache_root()), str(models_cache())
        ('/tmp/mz', '/tmp/mz/models')
        >>> _ = os.environ.pop("MOEZOO_CACHE") if before is None else os.environ.update(MOEZOO_CACHE=before)
    """
    return Path(os.environ.get("MOEZOO_CACHE") or Path.home() / ".cache" / "moezoo").expanduser()


def models_cache() -> Path:
    """The models' part of moezoo's cache, ``cache_root() / "models"``."""
    return cache_root() / "models"


def hf_hub_cache() -> Path:
    """The standard Hugging Face hub cache, resolved as huggingface_hub resolves it.

    Example:
        >>> import os
        >>> saved = {k: os.environ.pop(k, None) for k in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME")}
        >>> os.environ["HF_HOME"] = "/data/hf"
        >>> str(hf_hub_cache())
        '/data/hf/hub'
        >>> for k, v in saved.items():
        ...     _ = os.environ.pop(k, None) if v is None else os.environ.update({k: v})
    """
    explicit = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    home = os.environ.get("HF_HOME")
    if home:
        return Path(home).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "huggingface" / "hub"


def hub_cache_dirs() -> list[Path]:
    """Where a hub snapshot is looked for, in order: moezoo's ``models/hub``, then the standard hub cache."""
    dirs = [models_cache() / "hub", hf_hub_cache()]
    return [d for i, d in enumerate(dirs) if d not in dirs[:i]]


def repo_folder(repo_id: str) -> str:
    """The hub cache's folder name of a model repo.

    Example:
        >>> repo_folder("mistralai/Mixtral-8x7B-v0.1")
        'models--mistralai--Mixtral-8x7B-v0.1'
    """
    return "models--" + repo_id.replace("/", "--")


def is_offline() -> bool:
    """Whether downloads are off: ``HF_HUB_OFFLINE`` set to 1 / on / yes / true (read now, not at import).

    Example:
        >>> import os
        >>> before = os.environ.get("HF_HUB_OFFLINE"); os.environ["HF_HUB_OFFLINE"] = "1"
        >>> is_offline()
        True
        >>> _ = os.environ.pop("HF_HUB_OFFLINE") if before is None else os.environ.update(HF_HUB_OFFLINE=before)
    """
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE


def marker_path(key: str) -> Path:
    """The verification marker of ``key`` (e.g. ``models--org--name/COMMIT``) in moezoo's cache.

    Markers live in moezoo's cache, not beside the files: a shared hub cache may be read-only,
    and huggingface_hub counts every file under ``snapshots/`` as a cached file of the repo.
    """
    return models_cache() / "verified" / f"{key}.json"
