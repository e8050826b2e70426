"""transformers ``config.json`` <-> :class:`~moezoo.models.lm.LMConfig`, per family.

Field meanings follow the transformers 5 configuration classes of Llama, Qwen2,
Mixtral, OLMoE, Qwen2-MoE and Qwen3-MoE (``configuration_*.py``). The JSON is read
as plain data: nothing from transformers is imported and no remote code runs.
"""

from __future__ import annotations

from typing import Any

from moezoo.models.lm.config import DENSE_FAMILIES, MOE_FAMILIES, LMConfig
from moezoo.moe import MoEConfig

# model_type -> the causal-LM architecture transformers registers for it.
FAMILIES = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "mixtral": "MixtralForCausalLM",
    "olmoe": "OlmoeForCausalLM",
    "qwen2_moe": "Qwen2MoeForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
}
# transformers' default rope_theta where a config.json omits it.
DEFAULT_THETA = {"mixtral": 1e6}


def supported() -> str:
    """Human-readable list of the supported architectures, for error messages."""
    return ", ".join(f"{arch} (model_type {mt!r})" for mt, arch in FAMILIES.items())


def _family_of(cfg: dict[str, Any]) -> str:
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r} (architectures {archs}); "
                         f"moezoo reads: {supported()}")
    bad = [a for a in archs if a != FAMILIES[model_type]]
    if bad:
        raise ValueError(f"unsupported architectures {bad} for model_type {model_type!r}; "
                         f"moezoo reads: {supported()}")
    return model_type


def _rope(cfg: dict[str, Any], family: str) -> tuple[float, dict[str, Any] | None]:
    # transformers 5 writes `rope_parameters`; older files `rope_theta` + `rope_scaling`
    # (with `type` instead of `rope_type`).
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", DEFAULT_THETA.get(family, 10000.0))))
    kind = params.pop("rope_type", params.pop("type", "default"))
    if float(params.pop("partial_rotary_factor", cfg.get("partial_rotary_factor", 1.0))) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported")
    if kind == "default":
        return theta, None
    if kind == "yarn":
        params.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
        if params.get("factor") is None:
            params["factor"] = cfg["max_position_embeddings"] / params["original_max_position_embeddings"]
    return theta, {"rope_type": kind, **params}


def lm_config_from_hf(cfg: dict[str, Any], generation: dict[str, Any] | None = None) -> LMConfig:
    """Translate a transformers ``config.json`` dict (and ``generation_config.json``) to an LMConfig.

    Example:
        >>> c = lm_config_from_hf({"model_type": "mixtral", "vocab_size": 64, "hidden_size": 32,
        ...     "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        ...     "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2})
        >>> c.moe.num_experts, c.moe.norm_topk_prob, c.rope_theta, c.family
        (4, True, 1000000.0, 'mixtral')
    """
    family = _family_of(cfg)
    if cfg.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {cfg['hidden_act']!r} is not supported (only 'silu', i.e. SwiGLU)")
    if cfg.get("sliding_window") and (family in ("mixtral",) or cfg.get("use_sliding_window")):
        raise ValueError(f"sliding-window attention (sliding_window={cfg['sliding_window']}) is not supported")
    if family == "llama" and cfg.get("mlp_bias"):
        raise ValueError("Llama with mlp_bias=True is not supported")
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    theta, scaling = _rope(cfg, family)
    generation = generation or {}
    common = dict(
        vocab_size=cfg["vocab_size"], dim=dim, num_layers=cfg["num_hidden_layers"], num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or dim // heads,
        norm_eps=cfg.get("rms_norm_eps", 1e-6), rope_theta=theta, rope_scaling=scaling,
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), family=family,
        bos_token_id=generation.get("bos_token_id", cfg.get("bos_token_id")),
        eos_token_id=generation.get("eos_token_id", cfg.get("eos_token_id")),
        pad_token_id=generation.get("pad_token_id", cfg.get("pad_token_id")),
        init_std=cfg.get("initializer_range", 0.02),
    )
    if family in ("llama", "olmoe", "qwen3_moe"):
        common["attention_bias"] = bool(cfg.get("attention_bias", False))
    if family == "qwen2":
        common["qkv_bias"] = True  # hard-wired in transformers' Qwen2Attention
    if family == "qwen2_moe":
        common["qkv_bias"] = bool(cfg.get("qkv_bias", True))
    if family == "olmoe":
        common.update(qk_norm="full", clip_qkv=cfg.get("clip_qkv"))
    if family == "qwen3_moe":
        common["qk_norm"] = "head"
    if family in DENSE_FAMILIES:
        return LMConfig(ffn_dim=cfg["intermediate_size"], **common)

    num_experts = cfg.get("num_experts", cfg.get("num_local_experts"))
    expert_dim = cfg["intermediate_size"] if family in ("mixtral", "olmoe") else cfg["moe_intermediate_size"]
    moe = MoEConfig(
        dim=dim, expert_dim=expert_dim, num_experts=num_experts, top_k=cfg["num_experts_per_tok"],
        norm_topk_prob=True if family == "mixtral" else bool(cfg.get("norm_topk_prob", False)),
        aux_loss_coef=cfg.get("router_aux_loss_coef", 0.01),
    )
    if family == "qwen2_moe":
        moe = moe.replace(num_shared_experts=1, shared_expert_dim=cfg["shared_expert_intermediate_size"],
                          shared_expert_gate=True)
    moe_layers = None
    if family in ("qwen2_moe", "qwen3_moe"):
        # transformers: sparse iff not in mlp_only_layers and (i + 1) % decoder_sparse_step == 0.
        step, dense_only = cfg.get("decoder_sparse_step", 1), set(cfg.get("mlp_only_layers") or [])
        moe_layers = [i for i in range(cfg["num_hidden_layers"]) if i not in dense_only and (i + 1) % step == 0]
    return LMConfig(ffn_dim=cfg.get("intermediate_size", expert_dim), moe=moe, moe_layers=moe_layers, **common)


def family_problems(config: LMConfig, family: str) -> list[str]:
    """Why ``config`` cannot be written as a transformers ``family`` checkpoint (empty: it can)."""
    if family not in FAMILIES:
        return [f"unknown family {family!r}; supported: {', '.join(FAMILIES)}"]
    c, p = config, []
    want_norm = {"olmoe": "full", "qwen3_moe": "head"}.get(family, "none")
    if c.qk_norm != want_norm:
        p.append(f"qk_norm={c.qk_norm!r} but {family} uses {want_norm!r}")
    if c.clip_qkv is not None and family != "olmoe":
        p.append("clip_qkv is OLMoE-only")
    if family in ("qwen2", "qwen2_moe"):
        if c.attention_bias:
            p.append(f"{family} has no o_proj bias (attention_bias=True)")
        if family == "qwen2" and not c.qkv_bias:
            p.append("qwen2 always has q/k/v biases (qkv_bias=False)")
    elif c.qkv_bias:
        p.append(f"{family} has no separate q/k/v bias (qkv_bias=True); only attention_bias")
    if family == "mixtral" and c.attention_bias:
        p.append("mixtral has no attention bias")
    if family in ("olmoe", "qwen2_moe", "qwen2") and c.head_dim != c.dim // c.num_heads:
        p.append(f"{family} needs head_dim == dim // num_heads")
    if family in DENSE_FAMILIES:
        if c.sparse_layers():
            p.append(f"{family} is dense but layers {c.sparse_layers()} are MoE")
        return p
    m = c.moe
    if m is None or not c.sparse_layers():
        return p + [f"{family} is an MoE family but the model has no MoE layer"]
    if m.router != "softmax" or m.num_heads != 1 or m.capacity_factor is not None:
        p.append(f"{family} routes with a dropless softmax top-k over whole tokens "
                 f"(router={m.router!r}, num_heads={m.num_heads}, capacity_factor={m.capacity_factor})")
    if m.activation != "swiglu" or m.routed_scaling_factor != 1.0:
        p.append("experts must be SwiGLU with routed_scaling_factor=1")
    if family in ("mixtral", "olmoe") and len(c.sparse_layers()) != c.num_layers:
        p.append(f"{family} has an MoE FFN in every layer")
    if family == "mixtral" and not m.norm_topk_prob:
        p.append("mixtral always renormalises the top-k weights (norm_topk_prob=False)")
    if family == "qwen2_moe":
        if m.num_shared_experts != 1 or not m.shared_expert_gate:
            p.append("qwen2_moe needs exactly one sigmoid-gated shared expert")
    elif m.num_shared_experts:
        p.append(f"{family} has no shared experts")
    return p


def infer_family(config: LMConfig) -> str:
    """The transformers family to export ``config`` as: its own, else the first that fits."""
    candidates = ([config.family] if config.family in FAMILIES else []) + list(
        MOE_FAMILIES if config.sparse_layers() else DENSE_FAMILIES)
    for family in candidates:
        if not family_problems(config, family):
            return family
    reasons = "; ".join(f"{f}: {', '.join(family_problems(config, f))}" for f in dict.fromkeys(candidates))
    raise ValueError(f"this model fits no transformers family moezoo writes ({reasons})")


def hf_config_from_lm(config: LMConfig, family: str, dtype: str = "float32") -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as a transformers ``family`` checkpoint."""
    problems = family_problems(config, family)
    if problems:
        raise ValueError(f"cannot export as {family}: " + "; ".join(problems))
    c = config
    rope = {"rope_type": "default", "rope_theta": c.rope_theta, **(c.rope_scaling or {})}
    out: dict[str, Any] = {
        "architectures": [FAMILIES[family]], "model_type": family, "vocab_size": c.vocab_size,
        "hidden_size": c.dim, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads, "hidden_act": "silu", "rms_norm_eps": c.norm_eps,
        "max_position_embeddings": c.max_position_embeddings, "rope_parameters": rope,
        "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.init_std, "dtype": dtype,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id,
        "intermediate_size": c.ffn_dim,
    }
    if family in ("llama", "mixtral", "qwen3_moe"):
        out["head_dim"] = c.head_dim
    if family in ("llama", "olmoe", "qwen3_moe"):
        out["attention_bias"] = c.attention_bias
    if family == "olmoe":
        out["clip_qkv"] = c.clip_qkv
    if family in DENSE_FAMILIES:
        return out
    m = c.moe
    out.update(num_experts_per_tok=m.top_k, router_aux_loss_coef=m.aux_loss_coef)
    if family in ("mixtral", "olmoe"):
        out["intermediate_size"] = m.expert_dim
    out["num_local_experts" if family == "mixtral" else "num_experts"] = m.num_experts
    if family != "mixtral":
        out["norm_topk_prob"] = m.norm_topk_prob
    if family in ("qwen2_moe", "qwen3_moe"):
        dense = [i for i in range(c.num_layers) if not c.is_moe_layer(i)]
        out.update(moe_intermediate_size=m.expert_dim, decoder_sparse_step=1, mlp_only_layers=dense,
                   use_sliding_window=False)
    if family == "qwen2_moe":
        out.update(shared_expert_intermediate_size=m.shared_expert_dim or m.expert_dim, qkv_bias=c.qkv_bias)
    return out
