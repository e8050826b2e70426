"""Lightning checkpoints of moezoo runs: read with ``weights_only=True``, exported as model dirs.

A Lightning checkpoint is a pickle. moezoo never unpickles one without torch's
``weights_only`` restriction: tensors, containers and primitives, plus the few plain types
Lightning itself stores in a run's checkpoint (:data:`SAFE_TYPES`: the hyper-parameters'
``AttributeDict``, ``pathlib`` paths of callback states). :func:`allow_lightning_types` adds
exactly those to torch's allow-list; ``moezoo fit --ckpt_path`` and :func:`export_checkpoint`
call it.
"""

from __future__ import annotations

import pathlib
from pathlib import Path
from typing import Any

import torch


def _safe_types() -> list[type]:
    from lightning.fabric.utilities.data import AttributeDict

    return [AttributeDict, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]


def allow_lightning_types() -> None:
    """Let ``torch.load(weights_only=True)`` read the plain types Lightning puts in a checkpoint."""
    torch.serialization.add_safe_globals(_safe_types())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """A Lightning checkpoint read with ``weights_only=True`` (a clear error for a missing or foreign file)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass a Lightning .ckpt file (e.g. runs/NAME/checkpoints/last.ckpt)")
    allow_lightning_types()
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (pickle, zip and unpickling errors alike)
        raise ValueError(f"{path} is not a readable Lightning checkpoint of a moezoo run ({type(err).__name__}: "
                         f"{str(err)[:300]}); it must load with torch.load(weights_only=True)") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "hyper_parameters" not in ckpt:
        raise ValueError(f"{path} holds no 'state_dict' and 'hyper_parameters': not a Lightning checkpoint of "
                         "MoEZooModule")
    return ckpt


def export_checkpoint(path: str | Path, out: str | Path, format: str = "moezoo") -> Path:
    """Write the model of a Lightning checkpoint as a dir ``moezoo.load`` (or transformers) reads.

    Args:
        path: the ``.ckpt`` of a ``moezoo fit`` run.
        out: the model dir to write (atomically).
        format: ``"moezoo"``, or ``"hf"`` for a transformers checkpoint of a supported family.
    """
    from moezoo.train.module import MoEZooModule

    ckpt = load_checkpoint(path)
    module = MoEZooModule(**{k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")})
    module.configure_model()
    missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise ValueError(f"{path} does not match the model its hyper-parameters build: missing {missing[:5]}, "
                         f"unexpected {unexpected[:5]}")
    return module.save_pretrained(out, format=format)
