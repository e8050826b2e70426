"""Import transformers checkpoints into moezoo and export moezoo LMs to transformers.

``import_hf`` reads ``config.json`` (+ ``generation_config.json``) and safetensors,
sharded or not, in both expert layouts. ``export_hf`` writes a dir that
``transformers.AutoModelForCausalLM.from_pretrained`` loads as the same model: its
``config.json``, safetensors (sharded past ``max_shard_size``) and the tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from moezoo.convert.hf_config import hf_config_from_lm, infer_family, lm_config_from_hf
from moezoo.convert.hf_weights import INDEX_NAME, hf_to_moezoo, moezoo_to_hf, read_safetensors
from moezoo.models.lm.checkpoint import (WEIGHTS_NAME, build_model, load_tokenizer, resolve_dtype, save_safetensors,
                                         save_tokenizer)
from moezoo.models.lm.model import MoEForCausalLM
from moezoo.utils.io import atomic_write_text


def read_hf_config(path: str | Path) -> tuple[dict, dict]:
    """``(config.json, generation_config.json or {})`` of a transformers checkpoint dir."""
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    gen_path = path / "generation_config.json"
    return cfg, json.loads(gen_path.read_text()) if gen_path.exists() else {}


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
    if dtype is None and isinstance(cfg.get("dtype", cfg.get("torch_dtype")), str):
        dtype = cfg.get("dtype", cfg.get("torch_dtype"))
    model = build_model(config, state, str(path), device, resolve_dtype(dtype))
    if with_tokenizer:
        model.tokenizer = load_tokenizer(path)
    return model


def export_hf(model: MoEForCausalLM, path: str | Path, family: str | None = None,
              expert_layout: str = "per_expert", max_shard_size: int | None = None) -> Path:
    """Write ``model`` as a transformers checkpoint of ``family`` (default: inferred).

    Args:
        family: a transformers ``model_type`` (``mixtral``, ``olmoe``, ``qwen2_moe``,
            ``qwen3_moe``, ``llama``, ``qwen2``); by default the model's own, else the first
            that can represent it.
        expert_layout: ``"per_expert"`` (the published / ``save_pretrained`` layout) or ``"fused"``.
        max_shard_size: bytes per safetensors shard; ``None`` writes one ``model.safetensors``.
    """
    config = model.config
    family = family or infer_family(config)
    dtype = str(model.embed_tokens.weight.dtype).replace("torch.", "")
    hf_config = hf_config_from_lm(config, family, dtype)  # validates before anything is written
    state = moezoo_to_hf(model.state_dict(), config, family, expert_layout)
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    _write_shards(state, path, max_shard_size)
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
                  "pad_token_id": config.pad_token_id}
    atomic_write_text(path / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    save_tokenizer(model.tokenizer, path)
    atomic_write_text(path / "config.json", json.dumps(hf_config, indent=2) + "\n")
    return path


def _write_shards(state: dict[str, torch.Tensor], path: Path, max_shard_size: int | None) -> None:
    if max_shard_size is None:
        save_safetensors(state, path / WEIGHTS_NAME)
        return
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for key, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_size:
            shards.append({})
            size = 0
        shards[-1][key] = tensor
        size += nbytes
    weight_map = {}
    for i, shard in enumerate(shards):
        name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_safetensors(shard, path / name)
        weight_map.update(dict.fromkeys(shard, name))
    total = sum(t.numel() * t.element_size() for t in state.values())
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    atomic_write_text(path / INDEX_NAME, json.dumps(index, indent=2) + "\n")
