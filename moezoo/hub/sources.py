"""One call from a pretrained entry to a local folder: :func:`fetch_pretrained`.

It takes any object with a :class:`moezoo.registry.pretrained.PretrainedCfg`'s fields (the hub
sits below the registry and never imports it):

- ``source="hf"``: :func:`moezoo.hub.hf.fetch_snapshot` of repo ``location`` at the pinned
  ``revision`` (its ``subfolder``); the entry's ``files`` must be there, at their sizes when given.
  An entry whose ``revision`` is a branch (no public source pins a commit of that release) takes
  the commit its first fetch got, locked in moezoo's cache (:mod:`moezoo.hub.lock`).
- ``source="url"``: each file is ``location/[subfolder/]path``, downloaded by
  :func:`moezoo.hub.url.download_url` into ``$MOEZOO_CACHE/models/url/NAME/`` and checked
  against the entry's sha256; a marker then lets later calls check sizes only. An entry
  re-pinned to other digests downloads again.
"""

from __future__ import annotations

import urllib.parse
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from moezoo.hub.cache import is_offline, marker_path, models_cache
from moezoo.hub.hf import SnapshotNotFoundError, fetch_snapshot
from moezoo.hub.lock import is_commit, lock_path, read_lock, snapshot_commit, write_lock
from moezoo.hub.url import download_url
from moezoo.hub.verify import check_marker, read_marker, write_marker


class PretrainedSource(Protocol):
    """The fields of a pretrained entry that say where its files are (``PretrainedCfg`` has them)."""

    name: str
    source: str
    location: str
    files: Sequence[Any]  # each with .path, .size, .sha256
    revision: str | None
    subfolder: str | None


def fetch_pretrained(cfg: PretrainedSource, progress: bool | None = None) -> Path:
    """The local folder holding ``cfg``'s files: found in a cache, or downloaded, and verified.

    Args:
        cfg: a pretrained entry whose ``source`` is ``"hf"`` or ``"url"``.
        progress: URL downloads show a progress bar; ``None``: only on a terminal.

    Raises:
        ValueError: a shipped entry (read from ``checkpoints/``, not downloaded), an hf entry with no
            pinned revision, or a url entry without a sha256 for every file.
        SnapshotNotFoundError: not cached and cannot be downloaded now (the message has the command).
        moezoo.hub.verify.VerificationError: a file's digest or size is wrong.

    Example:
        >>> from types import SimpleNamespace as Entry
        >>> fetch_pretrained(Entry(name="toy.v1", source="hf", location="org/toy", files=(), revision=None,
        ...                        subfolder=None))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: toy.v1: no pinned revision recorded for hub repo org/toy; ...
    """
    if cfg.source == "hf":
        if not cfg.revision:
            raise ValueError(f"{cfg.name}: no pinned revision recorded for hub repo {cfg.location}; moezoo "
                             "downloads hub weights only at a pinned commit (add revision= to its entry)")
        return _fetch_hf_entry(cfg)
    if cfg.source == "url":
        return _fetch_url_entry(cfg, progress)
    raise ValueError(f"{cfg.name}: source {cfg.source!r} is not downloaded; fetch_pretrained takes 'hf' and 'url' "
                     "entries (shipped entries are read from checkpoints/)")


def entry_url(cfg: PretrainedSource, path: str) -> str:
    """The URL of one file of a url entry.

    Example:
        >>> from types import SimpleNamespace as Entry
        >>> entry_url(Entry(location="https://example.org/w/", subfolder="v1"), "model.safetensors")
        'https://example.org/w/v1/model.safetensors'
    """
    parts = [cfg.location.rstrip("/")] + ([cfg.subfolder.strip("/")] if cfg.subfolder else [])
    return "/".join(parts + [urllib.parse.quote(path)])


def _fetch_hf_entry(cfg: PretrainedSource) -> Path:
    """A pinned entry's snapshot; a branch-following one's at its locked commit, locking it on the first fetch."""
    files = {f.path: f.size for f in cfg.files}
    if is_commit(cfg.revision):
        return fetch_snapshot(cfg.location, cfg.revision, cfg.subfolder, files=files)
    lock = read_lock(cfg.name, cfg.location, cfg.revision, cfg.subfolder)
    if lock is not None:
        return fetch_snapshot(cfg.location, lock["commit"], cfg.subfolder, files=files)
    folder = fetch_snapshot(cfg.location, cfg.revision, cfg.subfolder, files=files)
    commit = snapshot_commit(folder)
    write_lock(cfg.name, cfg.location, cfg.revision, cfg.subfolder, commit)
    warnings.warn(f"{cfg.name}: no public source pins a commit of {cfg.location}, so its entry follows branch "
                  f"{cfg.revision!r}; this first fetch got {commit}, now locked in {lock_path(cfg.name)} "
                  "(later loads take that commit; delete the file to follow the branch again)", stacklevel=3)
    return folder


def _fetch_url_entry(cfg: PretrainedSource, progress: bool | None) -> Path:
    unpinned = [f.path for f in cfg.files if not f.sha256]
    if not cfg.files or unpinned:
        raise ValueError(f"{cfg.name}: a url entry needs a sha256 for every file; "
                         f"{unpinned or 'it lists no files'}")
    folder = models_cache() / "url" / cfg.name
    marker = marker_path(f"url/{cfg.name}")
    meta = dict(name=cfg.name, location=cfg.location, subfolder=cfg.subfolder, folder=str(folder.resolve()))
    pinned = {f.path: f.sha256.lower() for f in cfg.files}
    data = read_marker(marker, **meta)
    if data is not None and {p: r.get("sha256") for p, r in data["files"].items()} == pinned \
            and all((folder / p).is_file() for p in pinned) and check_marker(data, folder, set(pinned), cfg.name):
        return folder
    if is_offline():
        raise SnapshotNotFoundError(
            f"{cfg.name}: its files are not all in moezoo's cache ({folder}), and downloads are off "
            f"(HF_HUB_OFFLINE is set). Fetch them once, with network:\n"
            f"    HF_HUB_OFFLINE=0 python -c \"import moezoo; moezoo.load('{cfg.name}')\"")
    records = {}
    for file in cfg.files:
        path = download_url(entry_url(cfg, file.path), folder / file.path, file.sha256, file.size, progress)
        records[file.path] = {"size": path.stat().st_size, "sha256": file.sha256.lower(),
                              "checked": "sha256 (the entry)"}
    write_marker(marker, records, **meta)
    return folder
