"""Export moezoo LMs as transformers checkpoints of the matching text family.

``export_hf`` writes a dir that ``transformers.AutoModelForCausalLM.from_pretrained``
loads as the same model: its ``config.json``, ``generation_config.json``, safetensors
(sharded past ``max_shard_size``) and the tokenizer. It imports no model class, so
``model.save_pretrained(format="hf")`` can hand over to it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from moezoo.checkpoint.files import INDEX_NAME, WEIGHTS_NAME, save_safetensors
from moezoo.convert.hf_config import FAMILIES, hf_config_from_lm, infer_family
from moezoo.convert.hf_weights import moezoo_to_hf
from moezoo.models.lm.spec import LM_SPEC
from moezoo.utils.io import atomic_save_pretrained, atomic_write_text


def export_hf(model: Any, path: str | Path, family: str | None = None, expert_layout: str = "per_expert",
              max_shard_size: int | None = None) -> Path:
    """Write the :class:`~moezoo.models.lm.MoEForCausalLM` ``model`` as a transformers checkpoint.

    Args:
        family: a transformers ``model_type`` (``mixtral``, ``olmoe``, ``qwen2_moe``,
            ``qwen3_moe``, ``llama``, ``qwen2``); by default the model's own, else the first
            that can represent it.
        expert_layout: ``"per_expert"`` (the published / ``save_pretrained`` layout) or ``"fused"``.
        max_shard_size: bytes per safetensors shard; ``None`` writes one ``model.safetensors``.
    """
    config = model.config
    family = family or infer_family(config)
    # Validates before anything is written.
    hf_config = hf_config_from_lm(config, family, dtype_name(model.embed_tokens.weight))
    state = moezoo_to_hf(model.state_dict(), config, family, expert_layout)
    if FAMILIES[family].lm_head_bias and not config.lm_head_bias:  # the class always has one: a zero bias
        state["lm_head.bias"] = torch.zeros(config.vocab_size, dtype=model.embed_tokens.weight.dtype)
    return write_hf_dir(path, state, hf_config, max_shard_size, generation_config(config), model.tokenizer)


def dtype_name(tensor: torch.Tensor) -> str:
    """A tensor's dtype as ``config.json`` names it (``torch_dtype`` / ``dtype``).

    Example:
        >>> dtype_name(torch.zeros(1, dtype=torch.bfloat16))
        'bfloat16'
    """
    return str(tensor.dtype).removeprefix("torch.")


def generation_config(llm: Any) -> dict[str, Any]:
    """The ``generation_config.json`` of an :class:`~moezoo.models.lm.LMConfig`: its special token ids."""
    return {"bos_token_id": llm.bos_token_id, "eos_token_id": llm.eos_token_id, "pad_token_id": llm.pad_token_id}


def write_hf_dir(path: str | Path, state: dict[str, torch.Tensor], config_json: dict[str, Any],
                 max_shard_size: int | None = None, generation: dict[str, Any] | None = None,
                 files: Any = None) -> Path:
    """Write a checkpoint dir the way every exporter does: the weights, ``generation_config.json``, the
    processor or tokenizer files (``files``: anything with ``save_pretrained``), then ``config.json`` last, so
    that a dir holding a ``config.json`` is complete. Each file is written atomically.

    Example:
        >>> import json, os, tempfile
        >>> out = write_hf_dir(tempfile.mkdtemp(), {"w": torch.zeros(2)}, {"model_type": "toy"}, generation={})
        >>> sorted(os.listdir(out)), json.loads((out / "config.json").read_text())
        (['config.json', 'generation_config.json', 'model.safetensors'], {'model_type': 'toy'})
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    write_weights(state, path, max_shard_size)
    if generation is not None:
        atomic_write_text(path / "generation_config.json", json.dumps(generation, indent=2) + "\n")
    if files is not None:
        atomic_save_pretrained(files, path)
    atomic_write_text(path / "config.json", json.dumps(config_json, indent=2) + "\n")  # last: the dir is complete
    return path


def write_weights(state: dict[str, torch.Tensor], path: Path, max_shard_size: int | None) -> None:
    """``model.safetensors``, or shards of at most ``max_shard_size`` bytes and their index."""
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


LM_SPEC.register_exporter(export_hf)
