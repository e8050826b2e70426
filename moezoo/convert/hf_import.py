"""Import transformers checkpoints of the supported text families into moezoo.

``import_hf`` reads ``config.json`` (+ ``generation_config.json``) and safetensors,
sharded or not, in both expert layouts (see :mod:`moezoo.convert.hf_weights`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moezoo.checkpoint.files import read_safetensors, resolve_dtype
from moezoo.checkpoint.reader import build_model
from moezoo.convert.families import FAMILIES
from moezoo.convert.hf_config import lm_config_from_hf, with_head_bias
from moezoo.convert.hf_weights import hf_to_moezoo
from moezoo.models.lm import LM_SPEC, MoEForCausalLM
from moezoo.models.spec import register_importer
from moezoo.processing.tokenizer import load_tokenizer


def read_hf_config(path: str | Path) -> tuple[dict, dict]:
    """``(config.json, generation_config.json or {})`` of a transformers checkpoint dir."""
    path = Path(path)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path / 'config.json'} is not valid JSON ({err})") from None
    gen_path = path / "generation_config.json"
    return cfg, json.loads(gen_path.read_text()) if gen_path.exists() else {}


def checkpoint_dtype(cfg: dict, dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``dtype`` if given, else the ``dtype`` / ``torch_dtype`` a ``config.json`` records."""
    if dtype is None and isinstance(cfg.get("dtype", cfg.get("torch_dtype")), str):
        dtype = cfg.get("dtype", cfg.get("torch_dtype"))
    return resolve_dtype(dtype)


def import_hf(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None,
              with_tokenizer: bool = True) -> MoEForCausalLM:
    """Load a transformers checkpoint dir of a supported family as a :class:`MoEForCausalLM`.

    Raises:
        ValueError: unsupported architecture (the message lists the supported ones), missing
            or unexpected weight keys (listed), or a tensor of the wrong shape (named).
    """
    path = Path(path)
    cfg, generation = read_hf_config(path)
    config = lm_config_from_hf(cfg, generation)
    state = hf_to_moezoo(read_safetensors(path), config)
    config = with_head_bias(config, "lm_head.bias" in state)
    model = build_model(config, state, str(path), device, checkpoint_dtype(cfg, dtype))
    if with_tokenizer:
        model.tokenizer = load_tokenizer(path, required=False)
    return model


for _model_type, _family in FAMILIES.items():
    register_importer(LM_SPEC, _model_type, import_hf, _family.architecture)
