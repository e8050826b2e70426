"""Qwen3-VL-MoE checkpoints: ``moezoo.load(dir)`` of a transformers ``qwen3_vl_moe`` dir and
``save_pretrained(dir, format="hf")`` back, processor files included.

The key mapping (transformers 5.24's ``Qwen3VLMoeForConditionalGeneration``, as its hub checkpoints store it):

* ``model.visual.<name>`` <-> ``visual.<name>`` (the tower's names are transformers');
* ``model.language_model.<name>`` <-> ``llm.<name>``, with the text families' renames
  (:mod:`moezoo.convert.hf_weights`: ``mlp.gate`` <-> ``mlp.router``); ``lm_head.weight`` <-> ``llm.lm_head.weight``;
* the fused experts, the one transposition: the hub files keep ``mlp.experts.gate_up_proj`` as ``(E, H, 2I)``
  and ``mlp.experts.down_proj`` as ``(E, I, H)`` (``x @ W`` layout), moezoo (like transformers in memory, which
  transposes on load through its ``conversion_mapping``) as ``(E, 2I, H)`` and ``(E, H, I)`` (``nn.Linear``
  layout): dims 1 and 2 are swapped on import and swapped back on export. A file already in the in-memory layout
  (shapes ``(E, 2I, H)`` / ``(E, H, I)``) is read as it is, as transformers' ``Transpose(check_dims=True)`` does.

The text config is Qwen3-MoE's (q/k RMSNorm per head, softmax top-k router whose weights are always
renormalised, ``decoder_sparse_step`` / ``mlp_only_layers``) plus ``rope_parameters.mrope_section`` and
``mrope_interleaved``; the word embeddings are tied when the top-level ``tie_word_embeddings`` says so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moezoo.checkpoint.files import read_safetensors
from moezoo.checkpoint.reader import build_model
from moezoo.convert.hf_config import family_problems, lm_config_from_hf
from moezoo.convert.hf_export import dtype_name, generation_config, write_hf_dir
from moezoo.convert.hf_import import checkpoint_dtype, read_hf_config
from moezoo.convert.hf_weights import hf_to_moezoo, moezoo_to_hf
from moezoo.models.encoders.qwen3_vl import HF_PREFIX, Qwen3VLVisionConfig
from moezoo.models.lm.config import LMConfig
from moezoo.models.qwen3_vl import (
    QWEN3_VL_MOE_SPEC,
    Qwen3VLMoEConfig,
    Qwen3VLMoEForConditionalGeneration,
)
from moezoo.models.spec import register_importer
from moezoo.processing.qwen3_vl import Qwen3VLProcessor

TEXT_PREFIX = "model.language_model."
_EXPERTS = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
_TOKEN_IDS = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")


def llm_config_from_hf(cfg: dict[str, Any], generation: dict[str, Any] | None = None) -> LMConfig:
    """The :class:`LMConfig` of a ``qwen3_vl_moe`` ``config.json``'s ``text_config``.

    Raises:
        ValueError: a rope type other than the default multimodal one, or a field transformers requires missing.
    """
    text = dict(cfg.get("text_config") or {})
    rope = dict(text.get("rope_parameters") or text.get("rope_scaling") or {})
    section = rope.pop("mrope_section", None)
    interleaved = bool(rope.pop("mrope_interleaved", True))  # Qwen3VLMoeTextRotaryEmbedding always interleaves
    if section is None:
        raise ValueError("text_config.rope_parameters lacks mrope_section (Qwen3-VL's multimodal RoPE)")
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ValueError(f"text_config.rope_parameters={rope} is not supported: Qwen3-VL-MoE's text model rotates "
                         "with the default multimodal RoPE")
    if not interleaved:
        raise ValueError("text_config.rope_parameters.mrope_interleaved=False is not what Qwen3-VL-MoE computes "
                         "(transformers' Qwen3VLMoeTextRotaryEmbedding always interleaves)")
    as_qwen3_moe = {**text, "model_type": "qwen3_moe", "architectures": [], "rope_parameters": rope,
                    "norm_topk_prob": True, "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False))}
    llm = lm_config_from_hf(as_qwen3_moe, generation)
    return llm.replace(mrope_section=list(section), mrope_interleaved=True)


def config_from_hf(cfg: dict[str, Any], generation: dict[str, Any] | None = None) -> Qwen3VLMoEConfig:
    """A ``qwen3_vl_moe`` ``config.json`` dict (and ``generation_config.json``) -> :class:`Qwen3VLMoEConfig`."""
    defaults = Qwen3VLMoEConfig.__dataclass_fields__
    ids = {name: cfg.get(name, defaults[name].default) for name in _TOKEN_IDS}
    return Qwen3VLMoEConfig(llm=llm_config_from_hf(cfg, generation),
                            vision=Qwen3VLVisionConfig.from_hf(cfg.get("vision_config") or {}), **ids)


def hf_to_moezoo_state(state: dict[str, torch.Tensor], config: Qwen3VLMoEConfig) -> dict[str, torch.Tensor]:
    """A ``Qwen3VLMoeForConditionalGeneration`` checkpoint's tensors in moezoo's names and layout.

    Keys outside the tower, the text model and the head keep their name, so the loader reports them."""
    m = config.llm.moe
    ours = {"gate_up_proj": (2 * m.expert_dim, config.llm.dim), "down_proj": (config.llm.dim, m.expert_dim)}
    vision, text, other = {}, {}, {}
    for key, tensor in state.items():
        if key.startswith(HF_PREFIX):
            vision["visual." + key[len(HF_PREFIX):]] = tensor
        elif key.startswith(TEXT_PREFIX):
            name = key[len(TEXT_PREFIX):]
            if name.endswith(_EXPERTS) and tuple(tensor.shape[1:]) != ours[name.rsplit(".", 1)[-1]]:
                tensor = tensor.transpose(1, 2).contiguous()  # hub (E, H, 2I) / (E, I, H) -> (E, 2I, H) / (E, H, I)
            text["model." + name] = tensor
        elif key == "lm_head.weight":
            text[key] = tensor
        else:
            other[key] = tensor
    llm = {"llm." + k: v for k, v in hf_to_moezoo(text, config.llm).items()}
    return {**vision, **llm, **other}


def moezoo_to_hf_state(state: dict[str, torch.Tensor], config: Qwen3VLMoEConfig) -> dict[str, torch.Tensor]:
    """The inverse of :func:`hf_to_moezoo_state`: the hub layout (experts ``(E, H, 2I)`` / ``(E, I, H)``)."""
    out = {HF_PREFIX + k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
    llm = {k[len("llm."):]: v for k, v in state.items() if k.startswith("llm.")}
    for key, tensor in moezoo_to_hf(llm, config.llm, "qwen3_moe", expert_layout="fused").items():
        if key == "lm_head.weight":
            out[key] = tensor
            continue
        name = key[len("model."):]
        if name.endswith(_EXPERTS):
            tensor = tensor.transpose(1, 2)  # moezoo (E, 2I, H) / (E, H, I) -> hub (E, H, 2I) / (E, I, H)
        out[TEXT_PREFIX + name] = tensor.contiguous()
    return out


def hf_config(config: Qwen3VLMoEConfig, dtype: str = "float32") -> dict[str, Any]:
    """The ``config.json`` of ``config`` as a transformers ``qwen3_vl_moe`` checkpoint.

    Raises:
        ValueError: the LLM is not one Qwen3-VL-MoE's text model can express (every reason listed).
    """
    c = config.llm
    problems = family_problems(c, "qwen3_moe")
    if not c.moe.norm_topk_prob:
        problems.append("Qwen3-VL-MoE always renormalises the top-k weights (moe.norm_topk_prob=False)")
    if not c.mrope_interleaved:
        problems.append("Qwen3-VL-MoE's multimodal RoPE is interleaved (mrope_interleaved=False)")
    if c.rope_scaling is not None:
        problems.append(f"Qwen3-VL-MoE rotates with the default RoPE (rope_scaling={c.rope_scaling})")
    if problems:
        raise ValueError("cannot export as a transformers Qwen3-VL-MoE checkpoint: " + "; ".join(problems))
    m = c.moe
    text = {
        "model_type": "qwen3_vl_moe_text", "vocab_size": c.vocab_size, "hidden_size": c.dim,
        "intermediate_size": c.ffn_dim, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads, "head_dim": c.head_dim, "hidden_act": "silu",
        "max_position_embeddings": c.max_position_embeddings, "initializer_range": c.init_std,
        "rms_norm_eps": c.norm_eps, "attention_bias": c.attention_bias, "decoder_sparse_step": 1,
        "moe_intermediate_size": m.expert_dim, "num_experts_per_tok": m.top_k, "num_experts": m.num_experts,
        "router_aux_loss_coef": m.aux_loss_coef,
        "mlp_only_layers": [i for i in range(c.num_layers) if not c.is_moe_layer(i)],
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta, "mrope_section": c.mrope_section,
                            "mrope_interleaved": True},
        "tie_word_embeddings": c.tie_embeddings, "dtype": dtype,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id,
    }
    return {"architectures": ["Qwen3VLMoeForConditionalGeneration"], "model_type": "qwen3_vl_moe",
            "text_config": text, "vision_config": config.vision.to_hf(), "tie_word_embeddings": c.tie_embeddings,
            "dtype": dtype, **{name: getattr(config, name) for name in _TOKEN_IDS}}


def import_qwen3_vl_moe(path: str | Path, device: str | torch.device = "cpu",
                        dtype: torch.dtype | str | None = None) -> Qwen3VLMoEForConditionalGeneration:
    """Load a transformers ``Qwen3VLMoeForConditionalGeneration`` dir; with tokenizer files, with its processor
    (:class:`~moezoo.processing.qwen3_vl.Qwen3VLProcessor` over the dir's image / video processor settings and
    chat template).

    Raises:
        ValueError: an unsupported config (named), missing or unexpected weights (listed), wrong shapes.
    """
    path = Path(path)
    cfg, generation = read_hf_config(path)
    config = config_from_hf(cfg, generation)
    state = hf_to_moezoo_state(read_safetensors(path), config)
    model = build_model(config, state, str(path), device, checkpoint_dtype(cfg, dtype))
    model.processor = Qwen3VLProcessor.from_pretrained(path)
    return model


def export_qwen3_vl_moe(model: Qwen3VLMoEForConditionalGeneration, path: str | Path,
                        max_shard_size: int | None = None) -> Path:
    """Write ``model`` as a transformers ``Qwen3VLMoeForConditionalGeneration`` checkpoint (hub key layout), with
    its processor files when it has a processor; ``from_pretrained(dir)`` gives the same logits.

    Raises:
        ValueError: the model has no Qwen3-VL-MoE equivalent (reasons listed); nothing is written.
    """
    config_json = hf_config(model.config, dtype_name(model.llm.embed_tokens.weight))  # validates before writing
    state = moezoo_to_hf_state(model.state_dict(), model.config)
    return write_hf_dir(path, state, config_json, max_shard_size, generation_config(model.config.llm),
                        model.processor if model.processor is not None else model.tokenizer)


register_importer(QWEN3_VL_MOE_SPEC, "qwen3_vl_moe", import_qwen3_vl_moe, "Qwen3VLMoeForConditionalGeneration")
QWEN3_VL_MOE_SPEC.register_exporter(export_qwen3_vl_moe)
