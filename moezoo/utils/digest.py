"""File digests: the sha256 and size checks that stand between a stored file and the code that reads it.

Example:
    >>> import tempfile, pathlib
    >>> file = pathlib.Path(tempfile.mkdtemp()) / "w.bin"
    >>> _ = file.write_bytes(b"abc")
    >>> sha256_file(file)[:16]
    'ba7816bf8f01cfea'
    >>> check_file(file, size=3, sha256=sha256_file(file))
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20


class DigestMismatch(ValueError):
    """A file whose size or sha256 is not the recorded one (the message names the file and both values)."""


def sha256_file(path: str | os.PathLike) -> str:
    """The hex sha256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_file(path: str | os.PathLike, size: int | None = None, sha256: str | None = None,
               restore: str = "") -> None:
    """Raise unless ``path`` exists with ``size`` bytes and the hex digest ``sha256`` (``None``: not checked).

    The size is compared first (a stat); a file of the wrong size is then hashed only to report its digest.

    Args:
        path: the file.
        size: the expected size in bytes.
        sha256: the expected hex digest.
        restore: a sentence appended to the error saying how to get the right file back.

    Raises:
        FileNotFoundError: no such file.
        DigestMismatch: the size or the digest differs; the message has the path, the expected and the
            actual value.

    Example:
        >>> import tempfile, pathlib
        >>> file = pathlib.Path(tempfile.mkdtemp()) / "w.bin"
        >>> _ = file.write_bytes(b"abd")
        >>> check_file(file, sha256="ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        moezoo.utils.digest.DigestMismatch: ...w.bin: sha256 mismatch: expected ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad, found ...
    """
    path = Path(path)
    tail = f" {restore}" if restore else ""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing.{tail}")
    if size is not None:
        actual_size = path.stat().st_size
        if actual_size != size:
            expected = f" (sha256 {sha256.lower()})" if sha256 else ""
            found = f" (sha256 {sha256_file(path)})" if sha256 else ""
            raise DigestMismatch(f"{path}: size mismatch: expected {size} bytes{expected}, found {actual_size} "
                                 f"bytes{found}.{tail}")
    if sha256 is not None:
        actual = sha256_file(path)
        if actual != sha256.lower():
            raise DigestMismatch(f"{path}: sha256 mismatch: expected {sha256.lower()}, found {actual}.{tail}")
