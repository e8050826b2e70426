"""What moezoo ships beside its code: the YAML configs, the small datasets and the pretrained zoo.

In the repository they are the top-level ``configs/``, ``data/`` and ``checkpoints/``. This package
reaches them through three relative symbolic links (``moezoo/shipped/configs -> ../../configs``, and
``data`` and ``checkpoints`` likewise), which git stores as links; a wheel built by ``pip install .``
copies the files behind the links into the package (``[tool.setuptools.package-data]`` in ``pyproject.toml``). So the same
lookup works cloned, editable or installed: ``moezoo fit -c configs/quickstart.yaml`` run from any
directory finds the shipped config, and ``data_dir: data/shapes-vqa`` the shipped shards.
``$MOEZOO_DATA`` points the datasets elsewhere, ``$MOEZOO_CHECKPOINTS`` the pretrained models.

Example:
    >>> shipped_config("quickstart").name
    'quickstart.yaml'
    >>> "three_stage/1_align" in shipped_configs()
    True
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONFIG_SUFFIX = ".yaml"


def configs_root() -> Path:
    """The folder of the shipped configs."""
    return ROOT / "configs"


def data_root() -> Path:
    """The folder of the shipped datasets: ``$MOEZOO_DATA`` if set, else the package's."""
    return Path(os.environ.get("MOEZOO_DATA") or ROOT / "data")


def checkpoints_root() -> Path:
    """The folder of the shipped pretrained models (one ``ARCH.TAG/`` each): ``$MOEZOO_CHECKPOINTS`` if set,
    else the package's."""
    return Path(os.environ.get("MOEZOO_CHECKPOINTS") or ROOT / "checkpoints")


def shipped_configs() -> list[str]:
    """The shipped configs' names: their paths under ``configs/`` without ``.yaml``."""
    root = configs_root()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob(f"*{CONFIG_SUFFIX}"))


def shipped_config(name: str) -> Path:
    """The shipped config ``name``: ``quickstart``, ``quickstart.yaml`` or ``configs/quickstart.yaml``.

    Raises:
        FileNotFoundError: no such config; the message lists the closest names and every shipped one.
    """
    key = Path(name).as_posix().removesuffix(CONFIG_SUFFIX).removeprefix("./").removeprefix("configs/")
    path = configs_root() / f"{key}{CONFIG_SUFFIX}"
    if path.is_file():
        return path
    known = shipped_configs()
    close = difflib.get_close_matches(key, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise FileNotFoundError(f"no config {name!r} here or among the shipped ones; {hint}shipped: {', '.join(known)}")
