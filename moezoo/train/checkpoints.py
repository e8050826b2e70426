"""Lightning checkpoints of moezoo runs: read with ``weights_only=True``, exported as model dirs.

A Lightning checkpoint is a pickle. moezoo never unpickles one without torch's
``weights_only`` restriction: tensors, containers and primitives, plus the few plain types
Lightning itself stores in a run's checkpoint (the hyper-parameters'
``AttributeDict``, ``pathlib`` paths of callback states). :func:`allow_lightning_types` adds
exactly those to torch's allow-list; ``moezoo fit --ckpt_path`` and :func:`export_checkpoint`
call it.

Writing is atomic too (:class:`AtomicCheckpointIO`, the CLI's default): a run killed while it
saves leaves the previous checkpoint as it was.
"""

from __future__ import annotations

import os
import pathlib
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from moezoo.utils.io import atomic_path


def _safe_types() -> list[type]:
    from lightning.fabric.utilities.data import AttributeDict

    return [AttributeDict, pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]


def allow_lightning_types() -> None:
    """Let ``torch.load(weights_only=True)`` read the plain types Lightning puts in a checkpoint."""
    torch.serialization.add_safe_globals(_safe_types())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``torch.save`` checkpoints, written to a temporary file beside the target, synced
    to disk, then renamed over it (``os.replace``, atomic on one filesystem).

    Lightning's own writer buffers the whole checkpoint in memory and commits it through fsspec,
    whose temporary file lives in the system temp dir: where that is another filesystem, the final
    move is a copy, and a kill during it leaves a truncated ``last.ckpt``. Here a kill at any moment
    leaves either the old file or the new one (and at worst a stray ``.NAME.*.tmp`` beside it).
    Remote URLs (``s3://...``) go to Lightning's writer.

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / "last.ckpt"
        >>> AtomicCheckpointIO().save_checkpoint({"state_dict": {"w": torch.ones(2)}}, path)
        >>> torch.load(path, weights_only=True)["state_dict"]["w"]
        tensor([1., 1.])
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(checkpoint, f)
            f.flush()
            os.fsync(f.fileno())
        return None


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
