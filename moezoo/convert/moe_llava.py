"""MoE-LLaVA's released checkpoints <-> moezoo's multimodal config and weights, as data.

Follows PKU-YuanGroup/MoE-LLaVA (Lin et al. 2024, arXiv 2401.15947): ``moellava/model/language_model/
llava_{stablelm,phi,qwen1_5}_moe.py`` (a config class per base whose ``__init__`` nests the MoE
settings in one ``"moe"`` dict; ``EvalMoELLaVA*ForCausalLM`` swaps ``model.layers[i].mlp`` for DeepSpeed's
``MoE(hidden_size, expert=mlp, num_experts, ep_size, k=top_k_experts, capacity_factor,
eval_capacity_factor, min_capacity, use_residual)`` at each ``moe_layers_idx``; its ``lm_head`` has no
bias, Phi's included), ``moellava/model/llava_arch.py`` + ``multimodal_encoder/{clip,siglip}_encoder.py`` (a
``CLIPVisionModel`` for an ``openai`` / ``laion`` ``mm_image_tower``, a ``SiglipVisionModel`` for a ``google`` one,
as ``multimodal_encoder/builder.py`` picks them: the ``-384`` releases' ``google/siglip-so400m-patch14-384``; at
``model.image_tower.image_tower``, features ``hidden_states[mm_vision_select_layer]``, ``[:, 1:]`` for
``mm_vision_select_feature="patch"``: for SigLIP too, which has no CLS, so a 384 image gives 728 tokens, not 729;
the tower's own image processor, ``SiglipImageProcessor`` for SigLIP) and ``multimodal_projector/builder.py``
(``image_projector_type="mlp2x_gelu"``: ``Linear -> nn.GELU() -> Linear`` at
``model.mm_projector.image_spatial_proj.{0,2}``).

Weight keys (``save_pretrained`` of the MoE-LLaVA model; ``ds.`` is ``model.layers.N.mlp.deepspeed_moe.``,
``ex.K.`` is ``ds.experts.deepspeed_experts.K.``) and moezoo's (``L.`` is ``llm.layers.N.mlp.``):

===================================================  ==========================================================
MoE-LLaVA                                            moezoo
===================================================  ==========================================================
``ds.gate.wg.weight``                                ``L.router.weight``
``ex.K.fc1.{weight,bias}`` (Phi)                     ``L.experts.up_proj[K]``, ``L.experts.up_proj_bias[K]``
``ex.K.fc2.{weight,bias}`` (Phi)                     ``L.experts.down_proj[K]``, ``L.experts.down_proj_bias[K]``
``ex.K.{gate,up}_proj.weight`` (StableLM, Qwen)      ``L.experts.gate_up_proj[K]`` (gate rows first)
``ex.K.down_proj.weight``                            ``L.experts.down_proj[K]``
``model.layers.N.mlp.mlp.*`` (``use_residual``)      ``L.residual_mlp.*`` (Phi's ``fc1`` / ``fc2`` as ``up_proj`` /
                                                     ``down_proj``)
``model.layers.N.mlp.coefficient.*``                 ``L.coefficient.*``
other ``model.*`` / ``lm_head.*`` (the base's)       ``llm.*`` (:mod:`moezoo.convert.hf_weights`)
``model.image_tower.image_tower.vision_model.*``     ``vision.vision_tower.*`` (CLIP's or SigLIP's own names; SigLIP's
                                                     ``post_layernorm.*`` and pooling ``head.*``, which the
                                                     features never reach, are kept and written back)
``model.mm_projector.image_spatial_proj.{0,2}.*``    ``connectors.image.linear_{1,2}.*``
===================================================  ==========================================================

Routing: DeepSpeed's ``top2gating`` maps onto moezoo's ``router="deepspeed_top2"`` (fp32 gate, renormalised
top-2, capacity from ``eval_capacity_factor`` / ``min_capacity`` in eval, drops by position). One documented
difference: the DeepSpeed that MoE-LLaVA pins (0.9.5) samples the second expert with Gumbel noise even at
eval; moezoo takes the deterministic second choice (DeepSpeed >= 0.14's ``top2_2nd_expert_sampling=False``).
Capacity depends on the tokens of each forward, so a prompt is prefilled in one forward, as MoE-LLaVA does.

MoE-LLaVA puts ``IMAGE_TOKEN_INDEX = -200`` (``moellava/constants.py``) into ``input_ids`` and replaces that one id
by the image's features; moezoo expands a placeholder token into one id per feature, so the importer adds
``<image>`` to the tokenizer (the first unused row of the embedding) and the processor expands it.
MoE-LLaVA pads non-square images to a square (``image_aspect_ratio="pad"``, with the processor's mean colour)
before the tower's image processor (``process_images`` in ``moellava/mm_utils.py``); the importer carries the
setting to the tower's :class:`~moezoo.models.encoders.hf_vision.HFVisionEncoderConfig`, so moezoo's processor
pads the same way and the pixels are equal.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import torch

from moezoo.convert.hf_config import lm_config_from_hf
from moezoo.convert.hf_weights import hf_to_moezoo, moezoo_to_hf
from moezoo.convert.llava import complete_text_config
from moezoo.convert.towers import towers_of
from moezoo.models.encoders.hf_vision import ASPECT_RATIOS
from moezoo.moe import MoEConfig

FORMAT = "moe_llava"
CONFIG_FILE = "config.json"
# MoE-LLaVA model_type -> (moezoo text family, its architecture). Each base's conv_templates entry ("stablelm",
# "phi", "qwen") is the same SeparatorStyle.TWO conversation: one CHAT_TEMPLATE.
BASES = {
    "moe_llava_stablelm": ("stablelm", "MoELLaVAStablelmForCausalLM"),
    "moe_llava_phi": ("phi", "MoELLaVAPhiForCausalLM"),
    "moe_llava_qwen1_5": ("qwen2", "MoELLaVAQwen1_5ForCausalLM"),
}
# model_types MoE-LLaVA defines that moezoo refuses, and why.
REFUSED = {
    "moe_llava_qwen": "its base is Qwen-1 (QWenLMHeadModel), whose modeling code only exists as Hub remote code; "
                      "moezoo reads Qwen1.5 (moe_llava_qwen1_5) and runs no remote code",
}
# StableLMEpochConfig (moellava/model/language_model/stablelm/configuration_stablelm_epoch.py): its field
# names and defaults, as transformers' StableLmConfig names them.
STABLELM_EPOCH = {"vocab_size": 50304, "intermediate_size": 6912, "hidden_size": 2560, "num_hidden_layers": 32,
                  "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu",
                  "rope_theta": 10000, "max_position_embeddings": 4096, "initializer_range": 0.02,
                  "use_qkv_bias": True, "bos_token_id": 0, "eos_token_id": 2, "tie_word_embeddings": False}
STABLELM_RENAMES = {"rope_pct": ("partial_rotary_factor", 0.25), "norm_eps": ("layer_norm_eps", 1e-5)}
# The "moe" dict's defaults (MoELLaVA*Config.__init__).
MOE_DEFAULTS = {"moe_enable": True, "moe_mode": "sparse", "moe_layers_idx": None, "ep_size": 1, "top_k_experts": 2,
                "capacity_factor": 1.0, "eval_capacity_factor": 1.0, "min_capacity": 4, "use_residual": False,
                "router_aux_loss_coef": 0.01}
# Hub towers MoE-LLaVA names in `mm_image_tower`, with their CLIPVisionConfig / SiglipVisionConfig (the
# vision_config of the tower's own config.json on the Hub), so a checkpoint naming one needs no download.
KNOWN_TOWERS = towers_of("clip_vision_model", "siglip_vision_model")
# multimodal_encoder/builder.py's build_image_tower picks the tower class by the name's prefix: CLIPVisionTower
# for "openai" / "laion", SiglipVisionTower for "google" (LanguageBind towers are refused: not on this list).
TOWER_PREFIXES = {"clip_vision_model": ("openai", "laion"), "siglip_vision_model": ("google",)}
# moezoo's addition to the config.json it writes: the tower's CLIPVisionConfig / SiglipVisionConfig, for towers
# not listed above (MoE-LLaVA's config class keeps unknown fields as attributes and reads none of them).
TOWER_CONFIG_FIELD = "mm_image_tower_config"
# mm_vision_select_feature -> HFVisionEncoder's select_strategy. "patch" drops the first token of the selected
# hidden state ([:, 1:]) for SigLIP too (siglip_encoder.py), which has no CLS: a 384 image gives 728 tokens, not
# 729, as "default" gives them.
SELECT_FEATURES = {"patch": "default", "cls_patch": "full"}
PROJECTOR = "mlp2x_gelu"
_NOISE = ("_name_or_path", "architectures", "transformers_version", "torch_dtype", "dtype", "auto_map")

_MOE_KEY = re.compile(r"^model\.layers\.(\d+)\.mlp\.(deepspeed_moe\.gate\.wg\.weight|"
                      r"deepspeed_moe\.experts\.deepspeed_experts\.(\d+)\.(\w+)\.(weight|bias)|"
                      r"mlp\.(\w+)\.(weight|bias)|coefficient\.(weight|bias))$")
# DeepSpeed expert / residual-MLP module names -> moezoo MLP names (Phi's fc1 / fc2; SwiGLU's are equal).
_FC_NAMES = {"fc1": "up_proj", "fc2": "down_proj"}
_TOWER = "model.image_tower.image_tower."


def refuse(path: Any, field: str, why: str) -> ValueError:
    """The error for a MoE-LLaVA config field moezoo cannot express, naming the file and the field."""
    return ValueError(f"{path}/{CONFIG_FILE}: {field}{'' if why.startswith('=') else ' '}{why}")


def moe_settings(cfg: dict[str, Any], num_layers: int, source: Any = ".") -> dict[str, Any]:
    """The ``"moe"`` dict of a MoE-LLaVA ``config.json``, checked, with defaults and ``num_experts`` per layer.

    Example:
        >>> moe_settings({"moe": {"moe_layers_idx": [0, 2], "num_experts": [4, 4]}}, 4)["num_experts"]
        [4, 4]
        >>> moe_settings({"moe": {"moe_layers_idx": [1, 4], "num_experts": [4, 4]}}, 4, "ckpt")
        Traceback (most recent call last):
        ...
        ValueError: ckpt/config.json: moe.moe_layers_idx=[1, 4] must hold layer indices in [0, num_hidden_layers=4)
    """
    moe = {**MOE_DEFAULTS, **(cfg.get("moe") or {})}
    layers = moe["moe_layers_idx"]
    if not layers:
        raise refuse(source, "moe.moe_layers_idx", f"is {layers!r}; MoE-LLaVA's eval model zips it with "
                     "moe.num_experts, so a released checkpoint lists its MoE layers")
    if any(not isinstance(i, int) or not 0 <= i < num_layers for i in layers) or len(set(layers)) != len(layers):
        raise refuse(source, "moe.moe_layers_idx", f"={layers} must hold layer indices in "
                     f"[0, num_hidden_layers={num_layers})")
    experts = moe.get("num_experts")
    experts = [experts] * len(layers) if isinstance(experts, int) else list(experts or [])
    if len(experts) != len(layers):
        raise refuse(source, "moe.num_experts", f"={moe.get('num_experts')} must give one count per "
                     f"moe.moe_layers_idx entry ({len(layers)})")
    if len(set(experts)) != 1:
        raise refuse(source, "moe.num_experts", f"={experts} differ between layers; moezoo's LLM has one expert "
                     "count for all its MoE layers")
    if moe["top_k_experts"] != 2:
        raise refuse(source, "moe.top_k_experts", f"={moe['top_k_experts']}: moezoo reads DeepSpeed's top-2 gate "
                     "(router 'deepspeed_top2') only")
    if moe.get("noisy_gate_policy") is not None:
        raise refuse(source, "moe.noisy_gate_policy", f"={moe['noisy_gate_policy']!r}: moezoo's deepspeed_top2 "
                     "gate has no noise (MoE-LLaVA passes None)")
    if moe.get("drop_tokens") is False:
        raise refuse(source, "moe.drop_tokens", "=False is not what MoE-LLaVA runs (DeepSpeed's default True)")
    return {**moe, "moe_layers_idx": list(layers), "num_experts": experts}


def text_config(cfg: dict[str, Any]) -> dict[str, Any]:
    """The base LLM's transformers ``config.json`` dict inside a MoE-LLaVA one (its own family's names), with
    transformers' defaults filled in (:func:`moezoo.convert.llava.complete_text_config`)."""
    family = BASES[cfg["model_type"]][0]
    text = {k: v for k, v in cfg.items() if k not in _NOISE and k != "moe" and not k.startswith("mm_")}
    if family == "stablelm":  # StableLMEpochConfig's names and defaults
        text = {**STABLELM_EPOCH, **text}
        for old, (new, default) in STABLELM_RENAMES.items():
            text[new] = text.pop(old, text.get(new, default))
        text.update(qk_layernorm=False, use_parallel_residual=False)  # stablelm_epoch has neither
    return {**complete_text_config({**text, "model_type": family}), "model_type": family}


def builder_family(name: str | None, model_type: str) -> str | None:
    """The tower family MoE-LLaVA's ``builder.py`` builds for the tower ``name`` (by its prefix), where it is not
    ``model_type``; ``None`` when they agree or the name has no known prefix.

    Example:
        >>> builder_family("google/siglip-so400m-patch14-384", "clip_vision_model")
        'siglip_vision_model'
    """
    return next((t for t, prefixes in TOWER_PREFIXES.items() if t != model_type and str(name).startswith(prefixes)),
                None)


def vision_config(cfg: dict[str, Any], source: Any = ".") -> dict[str, Any]:
    """The tower's ``CLIPVisionConfig`` / ``SiglipVisionConfig`` dict, from moezoo's ``mm_image_tower_config`` or
    the named Hub tower.

    Raises:
        ValueError: a tower moezoo does not know and no config for it, a tower that is neither CLIP nor SigLIP,
            or a name that makes MoE-LLaVA build the other family's tower (the file and field named).

    Example:
        >>> vision_config({"mm_image_tower": "google/siglip-so400m-patch14-384"})["model_type"]
        'siglip_vision_model'
        >>> vision_config({"mm_image_tower": "x/vit", "mm_image_tower_config": {"model_type": "vit"}}, "ckpt")
        Traceback (most recent call last):
        ...
        ValueError: ckpt/config.json: mm_image_tower_config has model_type 'vit'; MoE-LLaVA's image towers are \
CLIP (clip_vision_model) or SigLIP (siglip_vision_model)
    """
    name = cfg.get("mm_image_tower") or cfg.get("image_tower")
    if cfg.get(TOWER_CONFIG_FIELD):
        vision, field = dict(cfg[TOWER_CONFIG_FIELD]), TOWER_CONFIG_FIELD
    elif name in KNOWN_TOWERS:
        vision, field = dict(KNOWN_TOWERS[name]), "mm_image_tower"
    else:
        raise refuse(source, "mm_image_tower", f"={name!r} is not a tower moezoo knows ({sorted(KNOWN_TOWERS)}); "
                     f"add its CLIPVisionConfig or SiglipVisionConfig as a dict under {TOWER_CONFIG_FIELD!r}")
    model_type = vision.setdefault("model_type", "clip_vision_model")
    if model_type not in TOWER_PREFIXES:
        raise refuse(source, field, f"has model_type {model_type!r}; MoE-LLaVA's image towers are CLIP "
                     "(clip_vision_model) or SigLIP (siglip_vision_model)")
    other = builder_family(name, model_type)
    if other is not None:
        raise refuse(source, "mm_image_tower", f"={name!r} makes MoE-LLaVA's builder.py build a {other} tower, but "
                     f"{field} has model_type {model_type!r}")
    vision["_name_or_path"] = name or ""  # written back to mm_image_tower on export
    return vision


def multimodal_fields(cfg: dict[str, Any], generation: dict[str, Any] | None = None,
                      source: Any = ".") -> dict[str, Any]:
    """The :class:`~moezoo.models.multimodal.MultimodalConfig` fields of a MoE-LLaVA ``config.json``
    (``image_token_id`` left to the caller, who adds the token to the tokenizer).

    Raises:
        ValueError: a field moezoo cannot express, naming ``config.json`` and the field.
    """
    model_type = cfg.get("model_type")
    if model_type in REFUSED:
        raise refuse(source, "model_type", f"={model_type!r} is refused: {REFUSED[model_type]}")
    if model_type not in BASES:
        raise refuse(source, "model_type", f"={model_type!r} is not a MoE-LLaVA base moezoo reads ({sorted(BASES)})")
    for field, ok, why in (
        ("image_projector_type", cfg.get("image_projector_type", "linear") == PROJECTOR,
         f"must be {PROJECTOR!r} (MoE-LLaVA's released models), the one projector moezoo maps"),
        ("mm_video_tower", not cfg.get("mm_video_tower"), "is set; moezoo reads MoE-LLaVA's image models only"),
        ("mm_use_im_start_end", not cfg.get("mm_use_im_start_end"), "=True is not supported (extra image tokens)"),
        ("mm_use_im_patch_token", not cfg.get("mm_use_im_patch_token"), "=True is not supported"),
        ("mm_vision_select_feature", cfg.get("mm_vision_select_feature", "patch") in SELECT_FEATURES,
         f"must be one of {sorted(SELECT_FEATURES)}"),
        ("image_aspect_ratio", (cfg.get("image_aspect_ratio") or "square") in ASPECT_RATIOS,
         f"must be one of {list(ASPECT_RATIOS)} (MoE-LLaVA's process_images pads or not; no tiling)"),
    ):
        if not ok:
            raise refuse(source, field, f"={cfg.get(field)!r} {why}")
    text = text_config(cfg)
    moe = moe_settings(cfg, text["num_hidden_layers"], source)
    try:
        llm = lm_config_from_hf(text, generation)
    except ValueError as err:
        raise ValueError(f"{source}/{CONFIG_FILE}: the {text['model_type']} base: {err}") from None
    fc = llm.mlp_activation != "swiglu"
    llm = llm.replace(
        lm_head_bias=False,  # MoELLaVA*ForCausalLM: nn.Linear(hidden, vocab, bias=False), Phi's too
        moe=MoEConfig(dim=llm.dim, expert_dim=llm.ffn_dim, num_experts=moe["num_experts"][0], top_k=2,
                      router="deepspeed_top2", capacity_factor=float(moe["capacity_factor"]),
                      eval_capacity_factor=float(moe["eval_capacity_factor"]), min_capacity=int(moe["min_capacity"]),
                      use_residual=bool(moe["use_residual"]), expert_bias=fc, activation=llm.mlp_activation,
                      norm_topk_prob=True, aux_loss_coef=float(moe["router_aux_loss_coef"])),
        moe_layers=moe["moe_layers_idx"])
    vision = {"kind": "hf_vision", "vision_config": vision_config(cfg, source),
              "feature_layer": cfg.get("mm_vision_select_layer", -2),
              "select_strategy": SELECT_FEATURES[cfg.get("mm_vision_select_feature", "patch")],
              "image_aspect_ratio": cfg.get("image_aspect_ratio") or "square"}  # unset: process_images keeps it
    connector = {"kind": "mlp2x_gelu", "bias": True, "activation": "gelu"}  # nn.GELU(): exact GELU
    return {"llm": llm, "vision": vision, "image_connector": connector}


def moe_llava_to_moezoo(state: dict[str, torch.Tensor], llm_config: Any) -> dict[str, torch.Tensor]:
    """A MoE-LLaVA state dict in moezoo's names (keys of no part kept, so the loader names them).

    Example:
        >>> from moezoo.models.lm import LMConfig
        >>> llm = LMConfig(vocab_size=8, dim=4, num_layers=1, num_heads=1, ffn_dim=8)
        >>> sorted(moe_llava_to_moezoo({"model.layers.0.mlp.deepspeed_moe.gate.wg.weight": torch.ones(2, 4),
        ...                             "model.mm_projector.image_spatial_proj.2.bias": torch.ones(4)}, llm))
        ['connectors.image.linear_2.bias', 'llm.layers.0.mlp.router.weight']
    """
    text, moe, out = {}, {}, {}
    experts: dict[int, dict[str, dict[int, torch.Tensor]]] = defaultdict(lambda: defaultdict(dict))
    for key, tensor in state.items():
        if key.startswith(_TOWER):  # transformers 4's CLIPVisionModel names (`vision_model.*`), or 5's
            out["vision.vision_tower." + key[len(_TOWER):].removeprefix("vision_model.")] = tensor
        elif match := re.match(r"^model\.mm_projector\.image_spatial_proj\.([02])\.(weight|bias)$", key):
            out[f"connectors.image.linear_{1 if match[1] == '0' else 2}.{match[2]}"] = tensor
        elif match := _MOE_KEY.match(key):
            layer, rest = int(match[1]), match[2]
            prefix = f"llm.layers.{layer}.mlp"
            if rest.endswith("gate.wg.weight"):
                moe[f"{prefix}.router.weight"] = tensor
            elif match[3] is not None:
                experts[layer][f"{_FC_NAMES.get(match[4], match[4])}.{match[5]}"][int(match[3])] = tensor
            elif match[6] is not None:
                moe[f"{prefix}.residual_mlp.{_FC_NAMES.get(match[6], match[6])}.{match[7]}"] = tensor
            else:
                moe[f"{prefix}.coefficient.{match[8]}"] = tensor
        elif key.startswith(("model.", "lm_head.")):
            text[key] = tensor
        else:
            out[key] = tensor
    out.update({"llm." + k: v for k, v in hf_to_moezoo(text, llm_config).items()})
    out.update(moe)
    for layer, by_name in experts.items():
        out.update(_fuse(layer, by_name, llm_config))
    return out


def _fuse(layer: int, by_name: dict[str, dict[int, torch.Tensor]], llm: Any) -> dict[str, torch.Tensor]:
    """One layer's per-expert DeepSpeed weights as moezoo's stacked ``(E, ...)`` expert tensors."""
    num = llm.moe.num_experts if llm.moe is not None else 0
    prefix = f"llm.layers.{layer}.mlp.experts"
    bad = {name: sorted(by_e) for name, by_e in by_name.items() if sorted(by_e) != list(range(num))}
    if bad or not num:
        raise ValueError(f"the experts of layer {layer} are not numbered 0..{num - 1} (moe.num_experts): {bad}")
    stack = {name: torch.stack([by_e[e] for e in range(num)]) for name, by_e in by_name.items()}
    out = {}
    if "gate_proj.weight" in stack:  # SwiGLU experts: gate rows, then up rows
        out[f"{prefix}.gate_up_proj"] = torch.cat([stack.pop("gate_proj.weight"), stack.pop("up_proj.weight")], 1)
    for name, tensor in stack.items():
        proj, kind = name.rsplit(".", 1)
        out[f"{prefix}.{proj}" + ("_bias" if kind == "bias" else "")] = tensor
    return out


def moezoo_to_moe_llava(state: dict[str, torch.Tensor], llm_config: Any, family: str) -> dict[str, torch.Tensor]:
    """moezoo's multimodal state dict in MoE-LLaVA's names (the inverse of :func:`moe_llava_to_moezoo`)."""
    text, out, stray = {}, {}, []
    fc = llm_config.moe is not None and llm_config.moe.activation != "swiglu"  # Phi's fc1 / fc2 experts
    for key, tensor in state.items():
        if key.startswith("vision.vision_tower."):
            out[_TOWER + "vision_model." + key[len("vision.vision_tower."):]] = tensor
        elif match := re.match(r"^connectors\.image\.linear_([12])\.(weight|bias)$", key):
            out[f"model.mm_projector.image_spatial_proj.{0 if match[1] == '1' else 2}.{match[2]}"] = tensor
        elif match := re.match(r"^llm\.layers\.(\d+)\.mlp\.(router|experts|residual_mlp|coefficient)\.(.+)$", key):
            out.update(_moe_out(int(match[1]), match[2], match[3], tensor, fc))
        elif key.startswith("llm."):
            text[key[len("llm."):]] = tensor
        else:
            stray.append(key)
    if stray:
        raise ValueError(f"MoE-LLaVA has no place for the weights {stray[:10]}")
    out.update(moezoo_to_hf(text, llm_config, family))
    return out


def _moe_out(layer: int, part: str, rest: str, tensor: torch.Tensor, fc: bool) -> dict[str, torch.Tensor]:
    """One moezoo MoE-layer tensor as DeepSpeed's ``MoE`` names it (per expert, as MoE-LLaVA saves it)."""
    base = f"model.layers.{layer}.mlp"
    names = {v: k for k, v in _FC_NAMES.items()} if fc else {}
    if part == "router":
        return {f"{base}.deepspeed_moe.gate.wg.weight": tensor}
    if part == "coefficient":
        return {f"{base}.coefficient.{rest}": tensor}
    if part == "residual_mlp":
        proj, kind = rest.rsplit(".", 1)
        return {f"{base}.mlp.{names.get(proj, proj)}.{kind}": tensor}
    experts = f"{base}.deepspeed_moe.experts.deepspeed_experts"
    if rest == "gate_up_proj":
        out = {}
        for e in range(tensor.shape[0]):
            gate, up = tensor[e].chunk(2, dim=0)
            out[f"{experts}.{e}.gate_proj.weight"], out[f"{experts}.{e}.up_proj.weight"] = gate, up
        return out
    proj, kind = (rest[:-len("_bias")], "bias") if rest.endswith("_bias") else (rest, "weight")
    return {f"{experts}.{e}.{names.get(proj, proj)}.{kind}": tensor[e] for e in range(tensor.shape[0])}



# -- chat templates ---------------------------------------------------------------------------------------------
# moellava/conversation.py: conv_phi (conv_templates "phi" and "qwen") and conv_stablelm ("stablelm") are one
# SeparatorStyle.TWO conversation: `system + sep`, then per message `role + ": " + message + seps[i % 2]`
# (sep " " after USER, sep2 "<|endoftext|>" after ASSISTANT), and a trailing `role + ":"` for the empty
# assistant message a prompt ends with. The image goes first in its turn as "<image>\n" (get_prompt's
# tuple branch, and predict.py's `DEFAULT_IMAGE_TOKEN + '\n' + inp`). A leading system message replaces
# `conv.system`.
SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
          "The assistant gives helpful, detailed, and polite answers to the user's questions.")
CHAT_TEMPLATE = (
    "{%- set system = '" + SYSTEM.replace("'", "\\'") + "' -%}"
    "{%- set turns = messages -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = messages[0]['content'] if messages[0]['content'] is string else "
    "messages[0]['content'] | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- set turns = messages[1:] -%}{%- endif -%}"
    "{{- system + ' ' -}}"
    "{%- for message in turns -%}"
    "{{- ('USER' if message['role'] == 'user' else 'ASSISTANT') + ': ' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}{%- else -%}"
    "{%- for part in message['content'] if part['type'] == 'image' -%}{{- '<image>\\n' -}}{%- endfor -%}"
    "{%- for part in message['content'] if part['type'] == 'text' -%}{{- part['text'] -}}{%- endfor -%}"
    "{%- endif -%}"
    "{{- ' ' if loop.index0 % 2 == 0 else '<|endoftext|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'ASSISTANT:' -}}{%- endif -%}"
)


def chat_template(model_type: str) -> str:
    """The Jinja chat template equivalent to the ``conv_templates`` entry MoE-LLaVA uses for ``model_type``.

    Example:
        >>> from jinja2 import Template
        >>> Template(chat_template("moe_llava_phi")).render(
        ...     messages=[{"role": "user", "content": "<image>\\nHi"}], add_generation_prompt=True)[-31:]
        'ns. USER: <image>\\nHi ASSISTANT:'
    """
    if model_type not in BASES:
        raise ValueError(f"model_type={model_type!r} is not a MoE-LLaVA base ({sorted(BASES)})")
    return CHAT_TEMPLATE
