"""Hugging Face Hub snapshots at a pinned commit: safetensors only, verified once, found offline.

:func:`fetch_snapshot` returns a folder of a repo at a revision, holding its safetensors,
JSON and tokenizer files (never a pickled ``.bin`` / ``.pt``):

1. It looks in moezoo's cache (``$MOEZOO_CACHE/models/hub``) and in the standard hub cache
   (``$HF_HUB_CACHE``, ``$HF_HOME/hub``, ...) for ``models--ORG--NAME/snapshots/COMMIT``
   (a branch or tag name is resolved through ``refs/``) holding every file the caller
   requires and every shard its ``model.safetensors.index.json`` names.
2. Otherwise it downloads with ``huggingface_hub.snapshot_download`` into the hub cache,
   unless ``HF_HUB_OFFLINE`` is set: then the error says what is missing, where it looked,
   and the one command that fetches it.
3. The first time a snapshot is used, every file is hashed and compared with the hub's
   metadata (``HfApi.model_info(files_metadata=True)``: each LFS file's sha256, each small
   file's git blob id), or offline with the blob names of the hub cache (huggingface_hub
   names each blob by that same digest). A marker in moezoo's cache records the digests;
   later uses compare only sizes with it (:mod:`moezoo.hub.verify`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import warnings
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from moezoo.checkpoint.files import PICKLE_PATTERNS
from moezoo.hub.cache import hf_hub_cache, hub_cache_dirs, is_offline, marker_path, repo_folder
from moezoo.hub.lock import is_commit
from moezoo.hub.verify import Expected, check_marker, read_marker, verify_files, write_marker

DEFAULT_PATTERNS = ("*.safetensors", "*.json", "tokenizer*", "*.model", "*.tiktoken", "*.txt", "*.jinja")
INDEX_NAME = "model.safetensors.index.json"
_SHA256 = re.compile(r"[0-9a-f]{64}")


class SnapshotNotFoundError(FileNotFoundError):
    """The snapshot is neither cached nor downloadable now; the message gives the command that fetches it."""


def fetch_snapshot(repo_id: str, revision: str | None, subfolder: str | None = None,
                   allow_patterns: Sequence[str] = DEFAULT_PATTERNS, files: Mapping[str, int | None] | None = None,
                   cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder of ``repo_id`` at ``revision`` (its ``subfolder``), found or downloaded, and verified.

    Args:
        repo_id: e.g. ``"allenai/OLMoE-1B-7B-0924"``.
        revision: a pinned 40-hex commit (or a branch / tag, resolved through the cache's ``refs/``).
        subfolder: a folder of the repo holding the checkpoint; only its files are fetched.
        allow_patterns: which files to fetch (shell wildcards); pickle formats are refused.
        files: path (relative to the subfolder) -> size or ``None``: files that must be there.
        cache_dir: where to download (default: the standard hub cache).

    Raises:
        ValueError: no revision, or a pattern that would fetch a pickle.
        SnapshotNotFoundError: not cached, and offline or the hub unreachable (the message has the command).
        moezoo.hub.verify.VerificationError: a file does not match the hub's digest or its recorded size.

    Example:
        >>> fetch_snapshot("org/name", None)
        Traceback (most recent call last):
        ...
        ValueError: org/name: no pinned revision recorded; moezoo fetches hub weights only at a pinned commit
    """
    _check_args(repo_id, revision, allow_patterns)
    files = dict(files or {})
    patterns = [f"{subfolder.strip('/')}/{p}" if subfolder else p for p in allow_patterns]
    first_missing: tuple[Path, list[str]] | None = None
    for root in _snapshots(repo_id, revision, cache_dir):
        missing = missing_files(root / (subfolder or ""), files)
        if not missing:
            return _verified(root, repo_id, subfolder, patterns, files)
        first_missing = first_missing or (root, missing)
    if is_offline():
        raise SnapshotNotFoundError(_not_found(repo_id, revision, subfolder, first_missing,
                                               "downloads are off (HF_HUB_OFFLINE is set)"))
    import huggingface_hub

    try:
        root = Path(huggingface_hub.snapshot_download(
            repo_id, revision=revision, allow_patterns=patterns, ignore_patterns=list(PICKLE_PATTERNS),
            cache_dir=str(cache_dir or hf_hub_cache())))
    except OSError as err:  # no network, hub down, gated or unknown repo: say so, with the command
        raise SnapshotNotFoundError(_not_found(repo_id, revision, subfolder, first_missing,
                                               f"the download failed ({type(err).__name__}: {err})")) from err
    missing = missing_files(root / (subfolder or ""), files)
    if missing:
        raise SnapshotNotFoundError(f"{repo_id}@{revision}: the downloaded snapshot {root} lacks {missing}; "
                                    "the entry's file list does not match the repo at this revision")
    return _verified(root, repo_id, subfolder, patterns, files)


def find_snapshot(repo_id: str, revision: str, subfolder: str | None = None,
                  files: Mapping[str, int | None] | None = None) -> Path | None:
    """The first complete cached snapshot folder (its ``subfolder``) of ``repo_id`` at ``revision``, or ``None``.

    Nothing is verified or downloaded. Example:
        >>> find_snapshot("no-such-org/no-such-model", "0" * 40) is None
        True
    """
    for root in _snapshots(repo_id, revision):
        if not missing_files(root / (subfolder or ""), dict(files or {})):
            return root / (subfolder or "")
    return None


def missing_files(folder: Path, files: Mapping[str, int | None]) -> list[str]:
    """What ``folder`` lacks of ``files`` and of the shards its safetensors index names (a broken link is missing).

    Example:
        >>> import tempfile
        >>> folder = Path(tempfile.mkdtemp())
        >>> _ = (folder / INDEX_NAME).write_text('{"weight_map": {"a": "model-1.safetensors"}}')
        >>> missing_files(folder, {"config.json": None})
        ['config.json', 'model-1.safetensors']
    """
    required = set(files)
    index = folder / INDEX_NAME
    if index.is_file():
        try:
            required |= set(json.loads(index.read_text())["weight_map"].values())
        except (ValueError, KeyError, TypeError, AttributeError):
            return [f"{INDEX_NAME} (unreadable)"]
    elif not any(folder.glob("*.safetensors")):
        required.add("model.safetensors")
    return sorted(p for p in required if not (folder / p).is_file())


def expected_from_siblings(siblings: Sequence) -> dict[str, Expected]:
    """Each file's expected size and digest from ``HfApi.model_info(..., files_metadata=True).siblings``.

    LFS files carry a sha256 (``sibling.lfs.sha256``); small files the git blob id (``blob_id``).
    Paths stay relative to the repo root.

    Example:
        >>> from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling
        >>> lfs = BlobLfsInfo(size=3, sha256="ab" * 32, pointer_size=130)
        >>> siblings = [RepoSibling("w.safetensors", 3, "b" * 40, lfs), RepoSibling("a.json", 2, "c" * 40)]
        >>> got = expected_from_siblings(siblings)
        >>> got["w.safetensors"].sha256 == "ab" * 32, got["a.json"].git_sha1 == "c" * 40
        (True, True)
    """
    out = {}
    for sibling in siblings:
        lfs = getattr(sibling, "lfs", None)
        sha256 = (lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)) if lfs else None
        out[sibling.rfilename] = Expected(size=sibling.size, sha256=sha256,
                                          git_sha1=None if sha256 else getattr(sibling, "blob_id", None),
                                          source="hub metadata")
    return out


def fetch_command(repo_id: str, revision: str, subfolder: str | None = None) -> str:
    """The one command that downloads and verifies a snapshot (with network).

    Example:
        >>> fetch_command("allenai/OLMoE-1B-7B-0924", "6d84c48581ece794365f2b8e9cfb043c68ade9c5")
        'HF_HUB_OFFLINE=0 python -m moezoo.hub allenai/OLMoE-1B-7B-0924 --revision 6d84c48581ece794365f2b8e9cfb043c68ade9c5'
    """
    return (f"HF_HUB_OFFLINE=0 python -m moezoo.hub {repo_id} --revision {revision}"
            + (f" --subfolder {subfolder}" if subfolder else ""))


def _check_args(repo_id: str, revision: str | None, allow_patterns: Sequence[str]) -> None:
    if not revision:
        raise ValueError(f"{repo_id}: no pinned revision recorded; moezoo fetches hub weights only at a pinned commit")
    if isinstance(allow_patterns, str):
        raise ValueError(f"allow_patterns must be a sequence of patterns, not the string {allow_patterns!r}")
    pickles = [p for p in allow_patterns if any(p.endswith(ext.lstrip("*")) for ext in PICKLE_PATTERNS)]
    if pickles:
        raise ValueError(f"{repo_id}: {pickles} would fetch pickled weights; moezoo reads safetensors only")


def _snapshots(repo_id: str, revision: str, cache_dir: str | os.PathLike | None = None) -> Iterator[Path]:
    """The cached snapshot folders of ``repo_id`` at ``revision``: ``cache_dir``, moezoo's cache, the hub cache."""
    for cache in ([Path(cache_dir)] if cache_dir else []) + hub_cache_dirs():
        repo = cache / repo_folder(repo_id)
        commit = revision if is_commit(revision) else _read_ref(repo / "refs" / revision)
        if commit and (repo / "snapshots" / commit).is_dir():
            yield repo / "snapshots" / commit


def _read_ref(ref: Path) -> str | None:
    try:
        commit = ref.read_text().strip()
    except OSError:
        return None
    return commit if is_commit(commit) else None


def _local_files(root: Path, patterns: Sequence[str]) -> list[str]:
    """Files under ``root`` (repo-relative POSIX paths) that the patterns select and are not pickles."""
    out = []
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and any(fnmatch.fnmatch(rel, p) for p in patterns) and \
                not any(fnmatch.fnmatch(rel, p) for p in PICKLE_PATTERNS):
            out.append(rel)
    return sorted(out)


def _verified(root: Path, repo_id: str, subfolder: str | None, patterns: Sequence[str],
              files: Mapping[str, int | None]) -> Path:
    """``root / subfolder`` after a size check against the marker, or a full verification the first time."""
    commit = root.name
    what = f"{repo_id}@{commit}"
    key = f"{repo_folder(repo_id)}/{commit}" + (f"--{subfolder.strip('/').replace('/', '--')}" if subfolder else "")
    marker = marker_path(key)
    paths = _local_files(root, patterns)
    meta = dict(repo_id=repo_id, revision=commit, subfolder=subfolder, snapshot=str(root.resolve()))
    data = read_marker(marker, **meta)
    if data is not None and check_marker(data, root, set(paths), what):
        return root / (subfolder or "")
    expected = _expected(root, repo_id, commit, paths)
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    for rel, size in files.items():  # the entry's own sizes are checked too
        if size is not None:
            exp = expected.get(prefix + rel, Expected(source="the entry"))
            expected[prefix + rel] = Expected(size, exp.sha256, exp.git_sha1, exp.source)
    records = verify_files(root, expected, what)
    unchecked = sorted(p for p, r in records.items() if r["checked"] is None)
    if unchecked:
        warnings.warn(f"{what}: no published digest for {unchecked} (offline, and not in the hub cache's blob "
                      "layout); their sha256 is recorded as found, unverified", stacklevel=3)
    write_marker(marker, records, **meta)
    return root / (subfolder or "")


def _expected(root: Path, repo_id: str, commit: str, paths: Sequence[str]) -> dict[str, Expected]:
    """Each file's digest: from the hub's metadata when online, else from the cache's blob names."""
    hub: dict[str, Expected] = {}
    if not is_offline():
        try:
            import huggingface_hub

            info = huggingface_hub.HfApi().model_info(repo_id, revision=commit, files_metadata=True)
            hub = expected_from_siblings(info.siblings or [])
        except OSError as err:  # unreachable: the blob names are the hub's digests too
            warnings.warn(f"{repo_id}@{commit}: could not read the hub's file metadata ({err}); "
                          "verifying against the hub cache's blob names", stacklevel=4)
    out = {}
    for rel in paths:
        if rel in hub:
            out[rel] = hub[rel]
            continue
        path = root / rel
        blob = os.path.basename(os.readlink(path)) if path.is_symlink() else ""
        out[rel] = Expected(sha256=blob if _SHA256.fullmatch(blob) else None,
                            git_sha1=blob if is_commit(blob) else None,  # a git blob id: 40 hex, as a commit
                            source="hub cache blob name")
    return out


def _not_found(repo_id: str, revision: str, subfolder: str | None, first_missing: tuple[Path, list[str]] | None,
               reason: str) -> str:
    where = " and ".join(str(d) for d in hub_cache_dirs())
    found = (f"; {first_missing[0]} is there but lacks {first_missing[1][:5]}"
             f"{' ...' if len(first_missing[1]) > 5 else ''}" if first_missing else "")
    return (f"{repo_id} at revision {revision}{f' (subfolder {subfolder})' if subfolder else ''} is not in the "
            f"hub caches ({where}){found}, and {reason}. Fetch it once, with network:\n"
            f"    {fetch_command(repo_id, revision, subfolder)}")
