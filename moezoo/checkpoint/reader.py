"""Read a moezoo checkpoint dir (see :mod:`moezoo.checkpoint`) into its model.

The header names the architecture; its class and typed config come from its
:class:`~moezoo.models.spec.ArchitectureSpec`, so one reader serves every registered family. The model
is built with its parameters on the meta device and the checkpoint's tensors assigned
in place (checked key by key and shape by shape first), so a large checkpoint is not
first filled with random numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moezoo.checkpoint.files import CONFIG_NAME, FORMAT_VERSION, check_state_dict, read_safetensors, resolve_dtype
from moezoo.models.spec import spec_for
from moezoo.processing.processor import PROCESSOR_NAME, Processor
from moezoo.processing.tokenizer import load_tokenizer
from moezoo.utils.meta import meta_tensors, parameters_on_meta


def read_header(path: str | Path) -> dict[str, Any]:
    """The checked ``moezoo_config.json`` of a checkpoint dir."""
    file = Path(path) / CONFIG_NAME
    try:
        header = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); the checkpoint is corrupt") from None
    if not isinstance(header, dict) or header.get("format") != "moezoo" or "config" not in header:
        raise ValueError(f"{file} is not a moezoo checkpoint header (expected keys format='moezoo', version, "
                         f"architecture, config)")
    if header.get("version", 0) > FORMAT_VERSION:
        raise ValueError(f"{path} was written by a newer moezoo (format version {header['version']}, "
                         f"this one reads <= {FORMAT_VERSION}); upgrade moezoo")
    return header


def build_model(config: Any, state_dict: dict[str, torch.Tensor], source: str,
                device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> nn.Module:
    """The model for ``config`` holding exactly ``state_dict``, in eval mode.

    Args:
        config: a typed config of a registered architecture.
        state_dict: every weight, in moezoo's names (checked key by key, shape by shape).
        source: what to name in errors (the checkpoint path).
        device: where the model lives.
        dtype: floating dtype of the model; ``None`` keeps the checkpoint's.
    """
    with parameters_on_meta():
        model = spec_for(config).model_class(config)
    check_state_dict({k: v.shape for k, v in model.state_dict().items()}, state_dict, source)
    if dtype is None:
        floats = [t.dtype for t in state_dict.values() if t.is_floating_point()]
        dtype = floats[0] if floats else torch.float32
    state = {k: _aligned(v.to(dtype=dtype if v.is_floating_point() else v.dtype)) for k, v in state_dict.items()}
    model.load_state_dict(state, assign=True)
    left = meta_tensors(model)
    if left:
        raise ValueError(f"{type(model).__name__} has tensors the checkpoint {source} did not fill: {left[:10]}")
    return model.to(device=device, dtype=dtype).eval()


def _aligned(t: torch.Tensor) -> torch.Tensor:
    """``t``, copied if its data is not 64-byte aligned. safetensors packs tensors at 8-byte
    offsets; kernels take other (slower, and not bitwise identical) paths on such memory, so a
    loaded model would not compute exactly what the saved one did."""
    return t if t.data_ptr() % 64 == 0 else t.clone()


def load(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None) -> nn.Module:
    """Read a checkpoint written by :func:`moezoo.checkpoint.writer.save`, tokenizer and processor included."""
    path = Path(path)
    header = read_header(path)
    spec = spec_for(str(header.get("architecture")))
    config = spec.config_class.from_dict(header["config"])
    model = build_model(config, read_safetensors(path), str(path), device, resolve_dtype(dtype))
    if (path / PROCESSOR_NAME).is_file():
        model.processor = Processor.from_pretrained(path)
    elif spec.processor_reader is not None:  # a family with its own processor files
        model.processor = spec.processor_reader(path)
    else:
        model.tokenizer = load_tokenizer(path, required=False)
    return model

