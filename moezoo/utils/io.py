"""Atomic file writes: a crash mid-write never leaves a half-written file behind.

Each write goes to a temporary file beside its target, which is then renamed over it
(``os.replace``, atomic on one filesystem). ``tempfile.mkstemp`` creates that file with
mode ``0600`` whatever the umask, so on its own every file moezoo wrote (exported models,
configs, eval JSON) would be private to its owner; here the temporary file is given the
mode ``open(path, "w")`` would give instead (:func:`file_mode`): ``0644`` under the usual
umask ``022``, the existing file's mode when one is replaced. Temporary directories that
are renamed into place get the mode ``os.mkdir`` gives (:func:`temporary_dir`).
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without a window in which it is changed where the OS allows.

    Linux reports it in ``/proc/self/status`` (kernel 4.7 and later), which leaves the umask
    untouched. Elsewhere the only way to read it is to set it (``os.umask`` returns the old
    value) and set it back. The umask is process-wide, so a file another thread creates in
    that instant would get the interim value: it is set to ``0o077``, so such a file can
    only come out more private, never more readable, and a lock keeps this function's own
    callers from reading each other's interim value.

    Example:
        >>> old = os.umask(0o027)
        >>> oct(current_umask())
        '0o27'
        >>> _ = os.umask(old)
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:
        umask = os.umask(0o077)
        os.umask(umask)
    return umask


def file_mode(path: str | os.PathLike | None = None) -> int:
    """The permission bits ``open(path, "w")`` leaves ``path`` with.

    An existing file keeps its mode (opening it for writing truncates it and changes no
    bits); a new one gets ``0o666`` less the umask (:func:`current_umask`).

    Example:
        >>> old = os.umask(0o022)
        >>> oct(file_mode())
        '0o644'
        >>> _ = os.umask(old)
    """
    if path is not None:
        try:
            return stat.S_IMODE(os.stat(path).st_mode)
        except FileNotFoundError:
            pass
    return 0o666 & ~current_umask()


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    The file ends with the mode ``open(path, "w")`` would have given it (:func:`file_mode`),
    not ``mkstemp``'s ``0600``; a missing parent directory is made as ``mkdir -p`` makes it.

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "x.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("hello")
        >>> target.read_text(), stat.S_IMODE(target.stat().st_mode) == file_mode()
        ('hello', True)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = file_mode(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # After the write: some writers (safetensors) replace the file with a fresh 0600 one.
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (mode as :func:`atomic_path` sets it).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "a" / "b.txt"
        >>> atomic_write_text(target, "hi"); target.read_text()
        'hi'
    """
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (mode as :func:`atomic_path` sets it).

    Example:
        >>> import tempfile, pathlib
        >>> target = pathlib.Path(tempfile.mkdtemp()) / "b.bin"
        >>> atomic_write_bytes(target, b"\\x00\\x01"); target.read_bytes()
        b'\\x00\\x01'
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def temporary_dir(parent: str | os.PathLike, prefix: str = ".tmp-") -> Path:
    """A new, uniquely named directory in ``parent``, to fill and then rename into place.

    Like ``tempfile.mkdtemp``, but with the mode ``os.mkdir`` gives (``0o777`` less the
    umask) rather than ``0700``, so the directory it becomes is as readable as any other.
    The caller removes it if the rename does not happen.

    Example:
        >>> import tempfile, shutil
        >>> old = os.umask(0o022)
        >>> d = temporary_dir(tempfile.mkdtemp(), prefix=".build-")
        >>> d.name.startswith(".build-"), oct(stat.S_IMODE(d.stat().st_mode))
        (True, '0o755')
        >>> _ = os.umask(old); shutil.rmtree(d)
    """
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, 0o777 & ~current_umask())
    return path


def atomic_save_pretrained(obj: Any, out_dir: str | os.PathLike) -> Path:
    """``obj.save_pretrained(out_dir)`` (a tokenizer, a processor), each file moved into place atomically.

    ``save_pretrained`` writes in place, so a crash could leave a half-written file
    over a good one; here it writes into a temporary directory first.

    Example:
        >>> import tempfile, pathlib
        >>> class Saver:
        ...     def save_pretrained(self, d):
        ...         _ = (pathlib.Path(d) / "a.json").write_text("{}")
        >>> sorted(p.name for p in atomic_save_pretrained(Saver(), tempfile.mkdtemp()).iterdir())
        ['a.json']
    """
    out_dir = Path(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        obj.save_pretrained(tmp)
        for file in sorted(Path(tmp).iterdir()):
            if file.is_file():
                atomic_write_bytes(out_dir / file.name, file.read_bytes())
    return out_dir


def read_json_if_present(file: str | os.PathLike) -> dict[str, Any]:
    """The JSON object in ``file``, or ``{}`` when there is no such file (an optional processor file).

    Raises:
        ValueError: the file is there but is not valid JSON (the message names it).

    Example:
        >>> read_json_if_present("/nonexistent/preprocessor_config.json")
        {}
    """
    file = Path(file)
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err})") from None
