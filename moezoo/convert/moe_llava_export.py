"""``model.save_pretrained(dir, format="moe_llava")``: a multimodal model as a MoE-LLaVA checkpoint.

Writes MoE-LLaVA's ``config.json`` (its base's text fields under the base's own names, the nested ``"moe"``
dict, the ``mm_*`` fields of ``moellava/model/llava_arch.py``), ``model.safetensors`` in its key layout
(:mod:`moezoo.convert.moe_llava`), ``generation_config.json`` and the tokenizer. moezoo adds one field that
MoE-LLaVA ignores: ``mm_image_tower_config``, the tower's ``CLIPVisionConfig`` / ``SiglipVisionConfig``, so a
tower not on the Hub reads back; ``mm_image_tower`` names the tower (its Hub name, which MoE-LLaVA builds it
from). A SigLIP tower's post-layernorm and pooling head, which MoE-LLaVA's features never reach, are written
back as they were read. ``moezoo.load`` of the result gives back the same state dict, bit for bit.

A model MoE-LLaVA cannot express (no CLIP or SigLIP tower, a connector other than ``mlp2x_gelu``, an LLM whose
base is not StableLM, Phi-2 or Qwen1.5, a router other than ``deepspeed_top2``, differing expert counts) gets a
``ValueError`` naming what stands in the way, before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moezoo.convert.hf_config import family_problems, hf_config_from_lm
from moezoo.convert.hf_export import dtype_name, generation_config, write_hf_dir
from moezoo.convert.moe_llava import (
    BASES,
    FORMAT,
    KNOWN_TOWERS,
    SELECT_FEATURES,
    STABLELM_RENAMES,
    TOWER_CONFIG_FIELD,
    TOWER_PREFIXES,
    builder_family,
    moezoo_to_moe_llava,
)
from moezoo.convert.towers import hub_tower_name
from moezoo.models.spec import register_format

_TEXT_DROPS = ("architectures", "dtype", "rope_parameters")
_STABLELM_DROPS = ("qk_layernorm", "use_parallel_residual")  # StableLMEpochConfig has neither


def moe_llava_problems(config: Any) -> list[str]:
    """Why a multimodal config cannot be written as a MoE-LLaVA checkpoint (empty: it can).

    Example:
        >>> from moezoo.models.lm import LMConfig
        >>> from moezoo.models.multimodal import MultimodalConfig
        >>> cfg = MultimodalConfig(llm=LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, ffn_dim=64),
        ...                        vision={"kind": "cnn", "channels": [8, 8, 16, 16], "film": False})
        >>> [p.split(";")[0] for p in moe_llava_problems(cfg)][:2]
        ["the image encoder is 'cnn'", 'the LLM has no MoE layer']
    """
    problems, llm, vision, connector = [], config.llm, config.vision, config.image_connector
    if vision is None or vision.kind != "hf_vision" or vision.vision_config.get("model_type") not in TOWER_PREFIXES:
        kind = None if vision is None else vision.kind
        problems.append(f"the image encoder is {kind!r}; MoE-LLaVA's tower is a transformers CLIPVisionModel or "
                        "SiglipVisionModel")
    elif vision.moe is not None:
        problems.append("the vision tower's MLPs are experts (vision.moe); MoE-LLaVA's tower is dense")
    elif vision.select_strategy not in SELECT_FEATURES.values():
        problems.append(f"vision.select_strategy={vision.select_strategy!r} has no mm_vision_select_feature")
    elif not isinstance(vision.feature_layer, int):
        problems.append(f"vision.feature_layer={vision.feature_layer} must be one layer (mm_vision_select_layer)")
    elif _tower_name(vision.vision_config) is None:
        problems.append("the tower has no Hub name for mm_image_tower (MoE-LLaVA builds its tower from that name): "
                        "set vision.vision_config['_name_or_path'], or use a tower of "
                        f"{sorted(KNOWN_TOWERS)}")
    elif (other := builder_family(_tower_name(vision.vision_config), vision.vision_config["model_type"])):
        problems.append(f"mm_image_tower={_tower_name(vision.vision_config)!r} would make MoE-LLaVA's builder.py "
                        f"build a {other} tower, but the tower is {vision.vision_config['model_type']!r}")
    if connector is None or connector.kind != "mlp2x_gelu" or not connector.bias or connector.activation != "gelu":
        problems.append("the image connector must be mlp2x_gelu with biases and exact GELU (MoE-LLaVA's "
                        "image_projector_type 'mlp2x_gelu': Linear -> nn.GELU() -> Linear)")
    for name in ("audio", "video"):
        if getattr(config, name) is not None:
            problems.append(f"MoE-LLaVA's image models take no {name} ({name} is set)")
    if config.modality_attention != "causal":
        problems.append(f"modality_attention={config.modality_attention!r}; MoE-LLaVA attends causally")
    moe = llm.moe
    if moe is None or not llm.sparse_layers():
        problems.append("the LLM has no MoE layer")
    else:
        fc = llm.mlp_activation != "swiglu"
        if moe.router != "deepspeed_top2" or moe.top_k != 2 or moe.capacity_factor is None:
            problems.append(f"the LLM's MoE must be DeepSpeed's top-2 gate with a capacity (router="
                            f"{moe.router!r}, top_k={moe.top_k}, capacity_factor={moe.capacity_factor})")
        if moe.expert_dim != llm.ffn_dim or moe.activation != llm.mlp_activation or moe.expert_bias != fc:
            problems.append("MoE-LLaVA's experts are copies of the dense MLP (moe.expert_dim, activation and "
                            "expert_bias must equal the dense FFN's)")
        if moe.num_shared_experts or moe.num_heads != 1 or moe.routed_scaling_factor != 1.0:
            problems.append("DeepSpeed's MoE has no shared experts, MH-MoE heads or routed scaling")
    if llm.lm_head_bias:
        problems.append("MoE-LLaVA's LM head is a bias-free Linear (lm_head_bias=True)")
    family = _family(llm)
    if family == "stablelm" and (llm.qk_norm != "none" or llm.parallel_block):
        problems.append("MoE-LLaVA's StableLM (stablelm_epoch) has neither qk_layernorm nor a parallel residual "
                        f"(qk_norm={llm.qk_norm!r}, parallel_block={llm.parallel_block})")
    if family is None:
        problems.append(f"the LLM fits none of MoE-LLaVA's bases ({', '.join(f for f, _ in BASES.values())}): "
                        + "; ".join(f"{f}: {', '.join(family_problems(_dense(llm), f))}" for f, _ in BASES.values()))
    return problems


def _tower_name(vision_config: dict[str, Any]) -> str | None:
    """``mm_image_tower``: the name the tower was read under, else the known Hub tower with its config."""
    return vision_config.get("_name_or_path") or hub_tower_name(vision_config, KNOWN_TOWERS)


def _dense(llm: Any) -> Any:
    """The LLM as its base would be without experts (what the base's family must fit)."""
    return llm.replace(moe=None, moe_layers=None)


def _family(llm: Any) -> str | None:
    families = [f for f, _ in BASES.values()]
    for family in ([llm.family] if llm.family in families else []) + families:
        if not family_problems(_dense(llm), family):
            return family
    return None


def export_moe_llava(model: Any, path: str | Path, max_shard_size: int | None = None) -> Path:
    """Write the multimodal ``model`` as a MoE-LLaVA checkpoint dir (see the module docstring).

    Raises:
        ValueError: the model has no MoE-LLaVA equivalent (every reason listed); nothing is written.
    """
    config = model.config
    problems = moe_llava_problems(config)
    if problems:
        raise ValueError("cannot export as a MoE-LLaVA checkpoint: " + "; ".join(problems))
    llm, vision = config.llm, config.vision
    family = _family(llm)
    model_type, (_, architecture) = next((t, b) for t, b in BASES.items() if b[0] == family)
    dtype = dtype_name(model.llm.embed_tokens.weight)
    text = hf_config_from_lm(_dense(llm), family, dtype)
    text.update(rope_theta=llm.rope_theta)
    if llm.rope_scaling:
        text["rope_scaling"] = dict(llm.rope_scaling)
    if family == "stablelm":  # StableLMEpochConfig's names
        text["partial_rotary_factor"] = llm.rotary_fraction
        for old, (new, _) in STABLELM_RENAMES.items():
            text[old] = text.pop(new)
        for name in _STABLELM_DROPS:
            text.pop(name)
    elif family == "phi":
        text["partial_rotary_factor"] = llm.rotary_fraction
    moe = llm.moe
    layers = llm.sparse_layers()
    tower = {k: v for k, v in vision.vision_config.items() if k != "_name_or_path"}
    hf_config = {
        "architectures": [architecture], "model_type": model_type,
        **{k: v for k, v in text.items() if k not in _TEXT_DROPS and k != "model_type"},
        "moe": {"moe_enable": True, "moe_mode": "custom", "moe_layers_idx": layers, "ep_size": 1, "top_k_experts": 2,
                "capacity_factor": moe.capacity_factor,
                "eval_capacity_factor": moe.eval_capacity_factor or moe.capacity_factor,
                "min_capacity": moe.min_capacity, "use_residual": moe.use_residual,
                "router_aux_loss_coef": moe.aux_loss_coef, "train_modules": [],
                "num_experts": [moe.num_experts] * len(layers)},
        "mm_image_tower": _tower_name(vision.vision_config),
        TOWER_CONFIG_FIELD: tower, "mm_hidden_size": tower.get("hidden_size"),
        "mm_vision_select_layer": vision.feature_layer,
        "mm_vision_select_feature": {v: k for k, v in SELECT_FEATURES.items()}[vision.select_strategy],
        "image_projector_type": "mlp2x_gelu", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
        "image_aspect_ratio": vision.image_aspect_ratio, "use_mm_proj": True, "mm_video_tower": None,
        "torch_dtype": dtype,
    }
    state = moezoo_to_moe_llava(model.state_dict(), llm, family)
    return write_hf_dir(path, state, hf_config, max_shard_size, generation_config(llm), model.tokenizer)


register_format(FORMAT, export_moe_llava)
