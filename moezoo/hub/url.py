"""Streamed, resumable, verified downloads of single files over HTTP(S) (stdlib ``urllib`` only).

``download_url`` writes into ``DEST.part`` beside the cache entry while hashing, checks the
sha256 (and the size) and only then renames the part over ``DEST`` (atomic on one
filesystem), so ``DEST`` exists only with the right bytes. An interrupted transfer leaves
the part behind; the next attempt (in this call, up to ``retries`` times, or a later call)
hashes what is there and asks for the rest with ``Range: bytes=N-``. A server that ignores
the range (``200`` instead of ``206``) gets a clean restart. A wrong digest deletes the part
and raises, naming the URL, the file and both digests.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from moezoo.hub.verify import VerificationError
from moezoo.utils.digest import sha256_file

_CHUNK = 1 << 20


class DownloadError(OSError):
    """The server failed or the transfer stopped early (what arrived is kept in ``DEST.part``)."""


def download_url(url: str, dest: str | os.PathLike, sha256: str, size: int | None = None,
                 progress: bool | None = None, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest``, verified against ``sha256``; resume an interrupted download.

    Args:
        url: an ``http(s)://`` URL.
        dest: the cache entry to create; its folder is made if missing.
        sha256: the file's expected hex digest.
        size: the expected size in bytes, when known (checked too, and bounds the resume).
        progress: show a tqdm bar; ``None`` shows one only when stderr is a terminal.
        retries: how many times a transfer that stops early is resumed within this call.
        timeout: seconds to wait for the server on each read.

    Returns:
        ``dest``. If it already holds the right bytes (same size and sha256), nothing is fetched.

    Raises:
        VerificationError: the bytes do not hash to ``sha256`` (nothing is left in the cache).
        DownloadError: an HTTP error, or the transfer kept stopping early (the part is kept).

    Example (the tests serve files from a loopback server)::

        path = download_url("https://example.org/w/model.safetensors", cache / "model.safetensors",
                            sha256="9f86d0...", size=4_194_304)
    """
    dest = Path(dest)
    sha256 = sha256.lower()
    if dest.is_file() and (size is None or dest.stat().st_size == size) and sha256_file(dest) == sha256:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if progress is None:
        progress = sys.stderr.isatty()
    attempts = 0
    while True:
        try:
            digest, total = _fetch(url, part, size, progress, timeout)
            break
        except DownloadError:
            attempts += 1
            if attempts > retries:
                raise
    actual = digest.hexdigest()
    if actual != sha256 or (size is not None and total != size):
        part.unlink(missing_ok=True)
        dest.unlink(missing_ok=True)  # a wrong file never stays in the cache
        got = f"{actual} ({total:,} bytes)"
        raise VerificationError(f"sha256 mismatch for {url} (cache entry {dest}): expected {sha256}"
                                f"{f' ({size:,} bytes)' if size is not None else ''}, got {got}; "
                                "nothing was kept. The URL serves other bytes than the entry pins.")
    os.replace(part, dest)
    return dest


def _fetch(url: str, part: Path, size: int | None, progress: bool, timeout: float) -> tuple[Any, int]:
    """One request: resume ``part`` if there is one, stream the rest into it; return (hasher, bytes)."""
    have = part.stat().st_size if part.is_file() else 0
    if size is not None and have > size:  # not a prefix of this file: start over
        part.unlink()
        have = 0
    if size is not None and have == size:
        return _hash_part(part), have  # complete already (a crash between the last write and the rename)
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the range is past the end: the part is not a prefix; start over
            part.unlink()
            return _fetch(url, part, size, progress, timeout)
        raise DownloadError(f"GET {url} failed: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"GET {url} failed: {getattr(err, 'reason', err)}") from None
    with response:
        resumed = bool(have) and response.status == 206 and _range_start(response.headers) == have
        if response.status == 206 and not resumed:  # a range other than the one asked for: start over
            part.unlink(missing_ok=True)
            raise DownloadError(f"GET {url} answered Content-Range {response.headers.get('Content-Range')!r} "
                                f"to Range: bytes={have}-")
        if resumed:
            digest = _hash_part(part)
        else:  # a fresh download, or a server that ignored the Range header: restart cleanly
            digest, have = hashlib.sha256(), 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else size
        bar = _bar(progress, total, have, part.name)
        received = have
        try:
            with open(part, "ab" if resumed else "wb") as out:
                while True:
                    try:
                        block = response.read(_CHUNK)
                    except (OSError, http.client.HTTPException) as err:  # a reset, a timeout, IncompleteRead
                        raise DownloadError(f"GET {url} stopped after {received:,} bytes ({err})") from None
                    if not block:
                        break
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    if bar is not None:
                        bar.update(len(block))
        finally:
            if bar is not None:
                bar.close()
    if total is not None and received < total:  # urllib returns b"" when a server closes early
        raise DownloadError(f"GET {url} stopped after {received:,} of {total:,} bytes; the rest is "
                            f"resumed from {part} with a Range request")
    return digest, received


def _hash_part(part: Path) -> Any:
    digest = hashlib.sha256()
    with open(part, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest


def _range_start(headers) -> int | None:
    """The first byte of a ``Content-Range: bytes START-END/TOTAL`` header."""
    value = headers.get("Content-Range", "")
    try:
        return int(value.split()[1].split("-")[0]) if value.startswith("bytes ") else None
    except (IndexError, ValueError):
        return None


def _bar(enabled: bool, total: int | None, initial: int, name: str):
    if not enabled:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm comes with huggingface_hub; without it, no bar
        return None
    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name.removesuffix(".part"), file=sys.stderr)
