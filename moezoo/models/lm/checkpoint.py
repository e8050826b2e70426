"""moezoo's native checkpoint format for the LM, and safe state-dict loading.

A checkpoint dir holds ``moezoo_config.json`` (the :class:`LMConfig`, like litgpt's
``model_config.yaml``), ``model.safetensors`` and the tokenizer files. Weights are
only ever read with safetensors: no pickle, no remote code. Models are built on the
meta device and the loaded tensors assigned in place, so a large checkpoint is not
first filled with random numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from moezoo.models.lm.config import LMConfig
from moezoo.models.lm.model import MoEForCausalLM
from moezoo.utils.io import atomic_path, atomic_save_pretrained, atomic_write_text

CONFIG_NAME = "moezoo_config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_VERSION = 1


def check_state_dict(expected: dict[str, torch.Size], found: dict[str, torch.Tensor], source: str) -> None:
    """Raise a ValueError listing missing / unexpected keys and naming any shape mismatch."""
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


def build_model(config: LMConfig, state_dict: dict[str, torch.Tensor], source: str,
                device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> MoEForCausalLM:
    """A model for ``config`` holding exactly ``state_dict`` (checked key by key, shape by shape).

    ``dtype=None`` keeps the checkpoint's floating dtype.
    """
    with torch.device("meta"):
        model = MoEForCausalLM(config)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_state_dict(expected, state_dict, source)
    if dtype is None:
        floats = [t.dtype for t in state_dict.values() if t.is_floating_point()]
        dtype = floats[0] if floats else torch.float32
    state = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
             for k, v in state_dict.items()}
    model.load_state_dict(state, assign=True)
    return model.eval()


def resolve_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """Accept ``torch.bfloat16`` or ``"bfloat16"``."""
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    resolved = getattr(torch, str(dtype).replace("torch.", ""), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}; use e.g. 'float32', 'bfloat16' or 'float16'")
    return resolved


def save_safetensors(state: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write ``state`` to ``path`` atomically (contiguous CPU copies, tied tensors de-duplicated)."""
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file({k: v.detach().to("cpu").contiguous() for k, v in state.items()}, str(tmp),
                  metadata=metadata or {"format": "pt"})


def save_tokenizer(tokenizer: Any, path: Path) -> None:
    """Save ``tokenizer``'s files into ``path``, each written atomically."""
    if tokenizer is not None:
        atomic_save_pretrained(tokenizer, path)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in ``path`` (via transformers' ``AutoTokenizer``), or ``None``."""
    path = Path(path)
    if not any((path / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def save(model: MoEForCausalLM, path: str | Path) -> Path:
    """Write ``model`` to ``path`` in moezoo's format; :func:`load` reads it back exactly.

    Example:
        >>> import tempfile
        >>> from moezoo.models.lm import LMConfig
        >>> model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
        >>> path = save(model, tempfile.mkdtemp())
        >>> torch.equal(load(path).embed_tokens.weight, model.embed_tokens.weight)
        True
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.state_dict(), path / WEIGHTS_NAME)
    save_tokenizer(model.tokenizer, path)
    header = {"format": "moezoo", "version": FORMAT_VERSION, "architecture": type(model).__name__,
              "config": model.config.to_dict()}
    atomic_write_text(path / CONFIG_NAME, json.dumps(header, indent=2) + "\n")
    return path


def load(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
         with_tokenizer: bool = True) -> MoEForCausalLM:
    """Read a checkpoint written by :func:`save`."""
    from safetensors.torch import load_file

    path = Path(path)
    header = json.loads((path / CONFIG_NAME).read_text())
    if header.get("format") != "moezoo" or header.get("architecture") != MoEForCausalLM.__name__:
        raise ValueError(f"{path / CONFIG_NAME} is not a moezoo {MoEForCausalLM.__name__} checkpoint "
                         f"(format={header.get('format')!r}, architecture={header.get('architecture')!r})")
    if header.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer moezoo (format version {header['version']}, "
                         f"this one reads <= {FORMAT_VERSION}); upgrade moezoo")
    config = LMConfig.from_dict(header["config"])
    model = build_model(config, load_file(str(path / WEIGHTS_NAME)), str(path), device, resolve_dtype(dtype))
    if with_tokenizer:
        model.tokenizer = load_tokenizer(path)
    return model
