"""transformers ``config.json`` <-> :class:`~moezoo.models.lm.LMConfig`, for every family.

Field meanings follow the transformers 5 configuration classes of Llama, Qwen2,
Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, StableLM, Phi and Phi-3 (``configuration_*.py``). What differs between
them is data in :mod:`moezoo.convert.families`; the functions here only read it. The
JSON is read as plain data: nothing from transformers is imported and no remote code runs.
"""

from __future__ import annotations

from typing import Any

from moezoo.convert.families import FAMILIES, TextFamily, supported
from moezoo.models.lm.config import DENSE_FAMILIES, MOE_FAMILIES, LMConfig
from moezoo.moe import MoEConfig

__all__ = ["FAMILIES", "family_problems", "hf_config_from_lm", "infer_family", "lm_config_from_hf", "supported",
           "with_head_bias"]


def _family_of(cfg: dict[str, Any]) -> TextFamily:
    model_type = cfg.get("model_type")
    archs = cfg.get("architectures") or []
    if model_type not in FAMILIES:
        raise ValueError(f"unsupported model_type {model_type!r} (architectures {archs}); "
                         f"moezoo reads: {supported()}")
    bad = [a for a in archs if a != FAMILIES[model_type].architecture]
    if bad:
        raise ValueError(f"unsupported architectures {bad} for model_type {model_type!r}; "
                         f"moezoo reads: {supported()}")
    return FAMILIES[model_type]


def _rope(cfg: dict[str, Any], f: TextFamily) -> tuple[float, dict[str, Any] | None, float]:
    # transformers 5 writes `rope_parameters`; older files `rope_theta` + `rope_scaling`
    # (with `type` instead of `rope_type`) and a top-level `partial_rotary_factor`.
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", f.rope_theta)))
    kind = params.pop("rope_type", params.pop("type", "default"))
    kind = f.rope_type_aliases.get(kind, kind)
    fraction = params.pop("partial_rotary_factor", cfg.get("partial_rotary_factor", f.partial_rotary_default))
    fraction = 1.0 if fraction is None else float(fraction)
    if f.partial_rotary_default is None and fraction != 1.0:
        raise ValueError(f"partial_rotary_factor={fraction} is not supported for {f.model_type} (only 1.0); "
                         f"families with partial rotary: "
                         f"{', '.join(n for n, e in FAMILIES.items() if e.partial_rotary_default is not None)}")
    if kind == "default":
        return theta, None, fraction
    if kind in ("llama3", "yarn", "longrope"):
        # As transformers' `standardize_rope_params`: a top-level `original_max_position_embeddings`
        # (a field of Phi3Config, with its default) wins over the one in the RoPE dict.
        if f.original_max_default is not None or "original_max_position_embeddings" in cfg:
            params["original_max_position_embeddings"] = cfg.get("original_max_position_embeddings",
                                                                 f.original_max_default)
        params.setdefault("original_max_position_embeddings", cfg["max_position_embeddings"])
    if kind in ("yarn", "longrope") and params.get("factor") is None:
        params["factor"] = cfg["max_position_embeddings"] / params["original_max_position_embeddings"]
    return theta, {"rope_type": kind, **params}, fraction


# transformers `hidden_act` of a biased fc1/fc2 FFN -> LMConfig.mlp_activation (gelu_new is the tanh form).
FC_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu"}


def _check_supported(cfg: dict[str, Any], f: TextFamily) -> None:
    act = cfg.get("hidden_act", "silu" if f.ffn == "swiglu" else "gelu_new")
    if f.ffn == "swiglu" and act != "silu":
        raise ValueError(f"hidden_act {act!r} is not supported for {f.model_type} (only 'silu', i.e. SwiGLU)")
    if f.ffn == "fc" and act not in FC_ACTIVATIONS:
        raise ValueError(f"hidden_act {act!r} is not supported for {f.model_type} (one of {sorted(FC_ACTIVATIONS)})")
    if f.sliding_window == "switch" and cfg.get("use_sliding_window") and cfg.get("sliding_window"):
        raise ValueError(f"sliding-window attention (sliding_window={cfg['sliding_window']}, use_sliding_window=True) "
                         f"is not supported for {f.model_type}: it windows only some layers (max_window_layers)")
    if f.mlp_bias_field and cfg.get("mlp_bias"):
        raise ValueError(f"{f.model_type} with mlp_bias=True is not supported")


def _moe_from_hf(cfg: dict[str, Any], f: TextFamily) -> tuple[MoEConfig, list[int] | None]:
    num_experts = next((cfg[k] for k in f.num_experts_keys if k in cfg), None)
    if num_experts is None:
        raise ValueError(f"{f.model_type} config.json lacks {f.num_experts_keys[0]!r} (the number of experts)")
    moe = MoEConfig(
        dim=cfg["hidden_size"], expert_dim=cfg[f.expert_dim_key], num_experts=num_experts,
        top_k=cfg["num_experts_per_tok"], aux_loss_coef=cfg.get("router_aux_loss_coef", 0.01),
        norm_topk_prob=f.norm_topk_prob if f.norm_topk_prob is not None else bool(cfg.get("norm_topk_prob", False)),
    )
    if f.shared_expert:
        moe = moe.replace(num_shared_experts=1, shared_expert_dim=cfg["shared_expert_intermediate_size"],
                          shared_expert_gate=True)
    if f.sparse_layers == "all":
        return moe, None
    step, dense_only = cfg.get("decoder_sparse_step", 1), set(cfg.get("mlp_only_layers") or [])
    return moe, [i for i in range(cfg["num_hidden_layers"]) if i not in dense_only and (i + 1) % step == 0]


def lm_config_from_hf(cfg: dict[str, Any], generation: dict[str, Any] | None = None) -> LMConfig:
    """Translate a transformers ``config.json`` dict (and ``generation_config.json``) to an LMConfig.

    Example:
        >>> c = lm_config_from_hf({"model_type": "mixtral", "vocab_size": 64, "hidden_size": 32,
        ...     "intermediate_size": 16, "num_hidden_layers": 2, "num_attention_heads": 4,
        ...     "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2})
        >>> c.moe.num_experts, c.moe.norm_topk_prob, c.rope_theta, c.family
        (4, True, 1000000.0, 'mixtral')
        >>> lm_config_from_hf({"model_type": "llama", "vocab_size": 64})
        Traceback (most recent call last):
        ...
        ValueError: the llama config.json lacks the field 'hidden_size'
    """
    try:
        return _lm_config_from_hf(cfg, generation)
    except KeyError as err:  # a field transformers itself would require
        raise ValueError(f"the {cfg.get('model_type')} config.json lacks the field {err.args[0]!r}") from None


def _lm_config_from_hf(cfg: dict[str, Any], generation: dict[str, Any] | None) -> LMConfig:
    f = _family_of(cfg)
    _check_supported(cfg, f)
    dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    theta, scaling, fraction = _rope(cfg, f)
    generation = generation or {}
    qk_norm = f.qk_norm if f.qk_norm_key is None or cfg.get(f.qk_norm_key, False) else "none"
    common = dict(
        vocab_size=cfg["vocab_size"], dim=dim, num_layers=cfg["num_hidden_layers"], num_heads=heads,
        num_kv_heads=cfg.get("num_key_value_heads") or heads, head_dim=cfg.get("head_dim") or dim // heads,
        norm_eps=cfg.get(f.norm_eps_key, 1e-6 if f.norm == "rms" else 1e-5), rope_theta=theta, rope_scaling=scaling,
        max_position_embeddings=cfg.get("max_position_embeddings", 4096),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)), family=f.model_type,
        bos_token_id=generation.get("bos_token_id", cfg.get("bos_token_id")),
        eos_token_id=generation.get("eos_token_id", cfg.get("eos_token_id")),
        pad_token_id=generation.get("pad_token_id", cfg.get("pad_token_id")),
        init_std=cfg.get("initializer_range", 0.02), qk_norm=qk_norm,
        qkv_bias=f.qkv_bias == "always" or (
            f.qkv_bias == "field" and bool(cfg.get(f.qkv_bias_key, f.qkv_bias_default))),
        attention_bias=f.attention_bias_always or (f.attention_bias_field and bool(cfg.get("attention_bias", False))),
        clip_qkv=cfg.get("clip_qkv") if f.clip_qkv_field else None,
        norm=f.norm, rotary_fraction=fraction, lm_head_bias=f.lm_head_bias,
        parallel_block=f.parallel_block == "always" or (
            f.parallel_block == "field" and bool(cfg.get("use_parallel_residual", False))),
        mlp_activation="swiglu" if f.ffn == "swiglu" else FC_ACTIVATIONS[cfg.get("hidden_act", "gelu_new")],
        mlp_bias=f.ffn == "fc", sliding_window=cfg.get("sliding_window") if f.sliding_window == "always" else None,
    )
    if not f.moe:
        return LMConfig(ffn_dim=cfg["intermediate_size"], **common)
    moe, moe_layers = _moe_from_hf(cfg, f)
    return LMConfig(ffn_dim=cfg.get("intermediate_size", moe.expert_dim), moe=moe, moe_layers=moe_layers, **common)


def _attention_problems(c: LMConfig, f: TextFamily) -> list[str]:
    p, name = [], f.model_type
    if c.qk_norm != f.qk_norm and (f.qk_norm_key is None or c.qk_norm != "none"):
        p.append(f"qk_norm={c.qk_norm!r} but {name} uses {f.qk_norm!r}" + (" or 'none'" if f.qk_norm_key else ""))
    if c.clip_qkv is not None and not f.clip_qkv_field:
        p.append(f"clip_qkv is only in {', '.join(n for n, e in FAMILIES.items() if e.clip_qkv_field)}")
    if f.attention_bias_always:
        if not c.attention_bias:
            p.append(f"{name} always has q/k/v/o biases (attention_bias=False)")
    elif f.qkv_bias != "none":
        if c.attention_bias and not f.attention_bias_field:
            p.append(f"{name} has no o_proj bias (attention_bias=True)")
        if f.qkv_bias == "always" and not c.qkv_bias:
            p.append(f"{name} always has q/k/v biases (qkv_bias=False)")
    else:
        if c.qkv_bias:
            p.append(f"{name} has no separate q/k/v bias (qkv_bias=True); only attention_bias")
        if c.attention_bias and not f.attention_bias_field:
            p.append(f"{name} has no attention bias")
    if not f.head_dim_field and c.head_dim != c.dim // c.num_heads:
        p.append(f"{name} needs head_dim == dim // num_heads")
    if c.sliding_window is not None and f.sliding_window != "always":
        p.append(f"{name} has no sliding window for every layer (sliding_window={c.sliding_window})")
    return p


def _block_problems(c: LMConfig, f: TextFamily) -> list[str]:
    p, name = [], f.model_type
    if c.norm != f.norm:
        p.append(f"{name} uses norm={f.norm!r} (norm={c.norm!r})")
    if f.partial_rotary_default is None and c.rotary_fraction != 1.0:
        p.append(f"{name} rotates whole heads (rotary_fraction={c.rotary_fraction})")
    if c.parallel_block != (f.parallel_block == "always") and f.parallel_block != "field":
        p.append(f"{name} {'always' if f.parallel_block == 'always' else 'never'} runs attention and FFN in "
                 f"parallel (parallel_block={c.parallel_block})")
    if f.ffn == "swiglu" and (c.mlp_activation != "swiglu" or c.mlp_bias):
        p.append(f"{name}'s dense FFN is a bias-free SwiGLU (mlp_activation={c.mlp_activation!r}, "
                 f"mlp_bias={c.mlp_bias})")
    if f.ffn == "fc" and (c.mlp_activation not in ("gelu", "gelu_tanh") or not c.mlp_bias):
        p.append(f"{name}'s dense FFN is a biased GELU fc1/fc2 (mlp_activation={c.mlp_activation!r}, "
                 f"mlp_bias={c.mlp_bias})")
    if c.lm_head_bias and not f.lm_head_bias:  # a family with a head bias also takes a bias-free head (zeros)
        p.append(f"{name} has no LM-head bias (lm_head_bias=True)")
    return p


def _moe_problems(c: LMConfig, f: TextFamily) -> list[str]:
    m, p, name = c.moe, [], f.model_type
    if m is None or not c.sparse_layers():
        return [f"{name} is an MoE family but the model has no MoE layer"]
    if m.router != "softmax" or m.num_heads != 1 or m.capacity_factor is not None:
        p.append(f"{name} routes with a dropless softmax top-k over whole tokens "
                 f"(router={m.router!r}, num_heads={m.num_heads}, capacity_factor={m.capacity_factor})")
    if m.activation != "swiglu" or m.routed_scaling_factor != 1.0:
        p.append("experts must be SwiGLU with routed_scaling_factor=1")
    # transformers' MoE blocks have no place for these weights: exporting would silently drop them
    if m.expert_bias:
        p.append(f"{name}'s experts have no biases (expert_bias=True)")
    if m.use_residual:
        p.append(f"{name} has no Residual-MoE dense MLP and coefficient (use_residual=True)")
    if f.sparse_layers == "all" and len(c.sparse_layers()) != c.num_layers:
        p.append(f"{name} has an MoE FFN in every layer")
    if f.norm_topk_prob is not None and m.norm_topk_prob != f.norm_topk_prob:
        p.append(f"{name} {'always' if f.norm_topk_prob else 'never'} renormalises the top-k weights "
                 f"(norm_topk_prob={m.norm_topk_prob})")
    if f.shared_expert and (m.num_shared_experts != 1 or not m.shared_expert_gate):
        p.append(f"{name} needs exactly one sigmoid-gated shared expert")
    if not f.shared_expert and m.num_shared_experts:
        p.append(f"{name} has no shared experts")
    return p


def with_head_bias(config: LMConfig, has_bias: bool) -> LMConfig:
    """``config`` whose LM-head bias follows the checkpoint: a family whose head has a bias (Phi) is also
    read without one (transformers' LLaVA head, MoE-LLaVA's) when the weights hold none.

    Example:
        >>> cfg = LMConfig(vocab_size=8, dim=4, num_layers=1, num_heads=1, ffn_dim=8, lm_head_bias=True)
        >>> with_head_bias(cfg, False).lm_head_bias, with_head_bias(cfg, True).lm_head_bias
        (False, True)
    """
    return config.replace(lm_head_bias=False) if config.lm_head_bias and not has_bias else config


def family_problems(config: LMConfig, family: str) -> list[str]:
    """Why ``config`` cannot be written as a transformers ``family`` checkpoint (empty: it can).

    Example:
        >>> family_problems(LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, ffn_dim=64), "qwen2")
        ['qwen2 always has q/k/v biases (qkv_bias=False)']
    """
    if family not in FAMILIES:
        return [f"unknown family {family!r}; supported: {', '.join(FAMILIES)}"]
    f = FAMILIES[family]
    p = _attention_problems(config, f) + _block_problems(config, f)
    if f.moe:
        return p + _moe_problems(config, f)
    if config.sparse_layers():
        p.append(f"{family} is dense but layers {config.sparse_layers()} are MoE")
    return p


def infer_family(config: LMConfig) -> str:
    """The transformers family to export ``config`` as: its own, else the first that fits.

    Example:
        >>> infer_family(LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, ffn_dim=64))
        'llama'
    """
    candidates = ([config.family] if config.family in FAMILIES else []) + list(
        MOE_FAMILIES if config.sparse_layers() else DENSE_FAMILIES)
    for family in candidates:
        if not family_problems(config, family):
            return family
    reasons = "; ".join(f"{f}: {', '.join(family_problems(config, f))}" for f in dict.fromkeys(candidates))
    raise ValueError(f"this model fits no transformers family moezoo writes ({reasons})")


def hf_config_from_lm(config: LMConfig, family: str, dtype: str = "float32") -> dict[str, Any]:
    """The ``config.json`` dict of ``config`` as a transformers ``family`` checkpoint.

    Example:
        >>> cfg = LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, ffn_dim=64, qkv_bias=True)
        >>> hf_config_from_lm(cfg, "qwen2")["architectures"]
        ['Qwen2ForCausalLM']
    """
    problems = family_problems(config, family)
    if problems:
        raise ValueError(f"cannot export as {family}: " + "; ".join(problems))
    c, f = config, FAMILIES[family]
    rope = {"rope_type": "default", "rope_theta": c.rope_theta, **(c.rope_scaling or {})}
    if f.partial_rotary_default is not None:
        rope["partial_rotary_factor"] = c.rotary_fraction
    act = "silu" if f.ffn == "swiglu" else {"gelu_tanh": "gelu_new", "gelu": "gelu"}[c.mlp_activation]
    out: dict[str, Any] = {
        "architectures": [f.architecture], "model_type": family, "vocab_size": c.vocab_size,
        "hidden_size": c.dim, "num_hidden_layers": c.num_layers, "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads, "hidden_act": act, f.norm_eps_key: c.norm_eps,
        "max_position_embeddings": c.max_position_embeddings, "rope_parameters": rope,
        "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.init_std, "dtype": dtype,
        "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id, "pad_token_id": c.pad_token_id,
        "intermediate_size": c.ffn_dim,
    }
    if f.head_dim_field:
        out["head_dim"] = c.head_dim
    if f.attention_bias_field:
        out["attention_bias"] = c.attention_bias
    if f.qkv_bias == "field":
        out[f.qkv_bias_key] = c.qkv_bias
    if f.qk_norm_key is not None:
        out[f.qk_norm_key] = c.qk_norm != "none"
    if f.parallel_block == "field":
        out["use_parallel_residual"] = c.parallel_block
    if f.original_max_default is not None:
        out["original_max_position_embeddings"] = rope.get("original_max_position_embeddings",
                                                           c.max_position_embeddings)
    if f.sliding_window == "always":
        out["sliding_window"] = c.sliding_window
    if f.clip_qkv_field:
        out["clip_qkv"] = c.clip_qkv
    if f.sliding_window == "switch":
        out["use_sliding_window"] = False
    if not f.moe:
        return out
    m = c.moe
    out.update({"num_experts_per_tok": m.top_k, "router_aux_loss_coef": m.aux_loss_coef,
                f.num_experts_keys[0]: m.num_experts, f.expert_dim_key: m.expert_dim})
    if f.norm_topk_prob is None:
        out["norm_topk_prob"] = m.norm_topk_prob
    if f.sparse_layers == "step":
        out.update(decoder_sparse_step=1, mlp_only_layers=[i for i in range(c.num_layers) if not c.is_moe_layer(i)])
    if f.shared_expert:
        out["shared_expert_intermediate_size"] = m.shared_expert_dim or m.expert_dim
    return out
