"""File names, safetensors I/O, dtype names and state-dict checks shared by the
moezoo checkpoint format and the transformers converters.

Weights are only ever read with safetensors: no pickle, no remote code.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moezoo.utils.io import atomic_path

CONFIG_NAME = "moezoo_config.json"
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
FORMAT_VERSION = 1


def save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``state`` to ``path`` atomically (contiguous CPU copies).

    Example:
        >>> import tempfile
        >>> path = Path(tempfile.mkdtemp()) / WEIGHTS_NAME
        >>> save_safetensors({"w": torch.ones(2)}, path)
        >>> read_safetensors(path.parent)["w"].tolist()
        [1.0, 1.0]
    """
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp),
                  metadata=metadata or {"format": "pt"})


# Pickled weight files: never downloaded (moezoo.hub) nor read, because unpickling a file can run code.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle")


class PickleOnlyCheckpointError(FileNotFoundError, ValueError):
    """A checkpoint dir whose weights are only pickled files (no safetensors): refused, with how to convert."""


def read_safetensors(path: str | Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint dir: ``model.safetensors``, or the shards of its index.

    Raises:
        PickleOnlyCheckpointError: the dir holds only pickled weights (the message names the file and says how
            to convert it); ``FileNotFoundError``: no weights at all; ``ValueError``: an unreadable file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if (path / WEIGHTS_NAME).exists():
        files = [path / WEIGHTS_NAME]
    elif (path / INDEX_NAME).exists():
        weight_map = json.loads((path / INDEX_NAME).read_text())["weight_map"]
        files = [path / shard for shard in sorted(set(weight_map.values()))]
    else:
        pickles = sorted({p.name for pattern in PICKLE_PATTERNS for p in path.glob(pattern)}) if path.is_dir() else []
        if pickles:
            raise PickleOnlyCheckpointError(
                f"{path / pickles[0]}: this checkpoint holds only pickled weights ({', '.join(pickles)}); moezoo "
                "reads safetensors checkpoints only, because unpickling a file can run arbitrary code. Convert it "
                "once, in an environment you trust (with the model's own code installed where it needs it): "
                "`model = AutoModelForCausalLM.from_pretrained(dir)` (or `torch.load(file)` of each file), then "
                "`model.save_pretrained(out_dir, safe_serialization=True)`, which writes safetensors only (or "
                "safetensors' `save_file`), and "
                "copy config.json and the tokenizer files beside it")
        found = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
        raise FileNotFoundError(f"no {WEIGHTS_NAME} or {INDEX_NAME} in {path} (found {found}); "
                                "moezoo reads safetensors checkpoints only (no pickled .bin files)")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        try:
            state.update(load_file(str(file)))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{file} is not a readable safetensors file ({err}); re-download or re-save it") from None
    return state


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept ``torch.bfloat16`` or ``"bfloat16"``.

    Example:
        >>> resolve_dtype("bfloat16"), resolve_dtype(None)
        (torch.bfloat16, None)
    """
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
    return resolved


def check_state_dict(expected: dict[str, torch.Size], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError listing missing / unexpected keys and naming any shape mismatch.

    Example:
        >>> check_state_dict({"w": torch.Size([2])}, {"w": torch.ones(3)}, "ckpt")
        Traceback (most recent call last):
        ...
        ValueError: cannot load weights from ckpt: shape mismatch for tensor 'w': checkpoint has (3,), the model expects (2,)
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}")
    for name in sorted(set(expected) & set(found)):
        if tuple(found[name].shape) != tuple(expected[name]):
            problems.append(f"shape mismatch for tensor {name!r}: checkpoint has {tuple(found[name].shape)}, "
                            f"the model expects {tuple(expected[name])}")
    if problems:
        raise ValueError(f"cannot load weights from {source}: " + "; ".join(problems))


def _listing(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... and {len(keys) - limit} more" if len(keys) > limit else "")
