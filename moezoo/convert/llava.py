"""transformers LLaVA checkpoints <-> moezoo's multimodal config and weights, as data.

Follows transformers 5's ``LlavaForConditionalGeneration`` (``models/llava/configuration_llava.py``,
``modeling_llava.py``; LLaVA-1.5, Liu et al. 2023, arXiv 2310.03744): a CLIP / SigLIP
``vision_tower``, a two-layer ``multi_modal_projector`` (moezoo's ``mlp2x_gelu``) and any
text model as ``language_model``. The text part is converted by
:mod:`moezoo.convert.hf_config` / :mod:`moezoo.convert.hf_weights`; this module only adds
LLaVA's prefixes and top-level fields. It imports no model class, so the exporter can use it.

Weight-key layouts (checked against transformers 5.24):

=============================  ====================================  ================================
part                           ``save_pretrained`` / llava-hf files  transformers 5 in memory
=============================  ====================================  ================================
text decoder                   ``language_model.model.*``            ``model.language_model.*``
LM head                        ``language_model.lm_head.weight``     ``lm_head.weight``
vision tower                   ``vision_tower.*`` (transformers 4:   ``model.vision_tower.*``
                               ``vision_tower.vision_model.*``)
projector                      ``multi_modal_projector.*``           ``model.multi_modal_projector.*``
MoE experts                    per expert (``experts.{e}.*``)        fused (``experts.gate_up_proj``)
=============================  ====================================  ================================

A tied LM head is not stored by ``save_pretrained``. moezoo's names are ``llm.*`` (the
text model, as :mod:`~moezoo.convert.hf_weights` names it), ``vision.vision_tower.*``
and ``connectors.image.*``.
"""

from __future__ import annotations

from typing import Any

import torch

from moezoo.convert.hf_config import hf_config_from_lm, infer_family, lm_config_from_hf
from moezoo.convert.hf_weights import hf_to_moezoo, moezoo_to_hf

ARCHITECTURE = "LlavaForConditionalGeneration"
# LlavaConfig's defaults, for config.json files that omit a field (transformers writes diffs).
LLAVA_DEFAULTS = {"image_token_index": 32000, "projector_hidden_act": "gelu", "vision_feature_layer": -2,
                  "vision_feature_select_strategy": "default", "multimodal_projector_bias": True,
                  "tie_word_embeddings": False}
# LlavaConfig's default towers when config.json names no model_type.
DEFAULT_TYPES = {"vision_config": "clip_vision_model", "text_config": "llama"}
# Bookkeeping keys of a sub-config that say nothing about the architecture.
_NOISE = ("_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype")
# Checkpoint prefix -> (moezoo part, the prefix the part's own converter expects). Nested prefixes first.
_PREFIXES = (
    ("language_model.model.", "llm", "model."),
    ("language_model.lm_head.", "llm", "lm_head."),
    ("model.language_model.", "llm", "model."),
    ("lm_head.", "llm", "lm_head."),
    ("vision_tower.vision_model.", "vision", ""),
    ("vision_tower.", "vision", ""),
    ("model.vision_tower.vision_model.", "vision", ""),
    ("model.vision_tower.", "vision", ""),
    ("multi_modal_projector.", "projector", ""),
    ("model.multi_modal_projector.", "projector", ""),
)
# moezoo part -> its prefix in moezoo's state dict.
MOEZOO_PREFIXES = {"llm": "llm.", "vision": "vision.vision_tower.", "projector": "connectors.image."}
# expert_layout -> the checkpoint prefix of each part when writing (see the table above).
LAYOUT_PREFIXES = {
    "per_expert": {"model.": "language_model.model.", "lm_head.": "language_model.lm_head.",
                   "vision": "vision_tower.", "projector": "multi_modal_projector."},
    "fused": {"model.": "model.language_model.", "lm_head.": "lm_head.",
              "vision": "model.vision_tower.", "projector": "model.multi_modal_projector."},
}


def llava_field(cfg: dict[str, Any], name: str) -> Any:
    """A top-level LLaVA field of ``config.json`` (``image_token_id`` is an alias of ``image_token_index``).

    Example:
        >>> llava_field({"image_token_id": 7}, "image_token_index"), llava_field({}, "vision_feature_layer")
        (7, -2)
    """
    if name == "image_token_index" and "image_token_index" not in cfg and "image_token_id" in cfg:
        return cfg["image_token_id"]
    return cfg.get(name, LLAVA_DEFAULTS[name])


def sub_config(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """``vision_config`` / ``text_config`` of a LLaVA ``config.json``, with its ``model_type``, minus bookkeeping."""
    sub = {k: v for k, v in (cfg.get(name) or {}).items() if k not in _NOISE}
    sub.setdefault("model_type", DEFAULT_TYPES[name])
    return sub


def complete_text_config(text: dict[str, Any]) -> dict[str, Any]:
    """``text`` with transformers' defaults filled in, as ``LlavaConfig`` builds it.

    LLaVA files hold only the fields that differ from the text family's defaults (llava-hf's
    Vicuna ``text_config`` has no ``hidden_size``), so the family's transformers config class
    completes them; a ``model_type`` transformers does not know is returned as is (the
    caller's family check names what moezoo reads).
    """
    import transformers

    settings = {k: v for k, v in text.items() if k != "model_type"}
    try:
        full = transformers.AutoConfig.for_model(text["model_type"], **settings).to_dict()
    except (KeyError, ValueError):
        return dict(text)
    return {k: v for k, v in full.items() if k not in _NOISE}


def multimodal_fields(cfg: dict[str, Any], generation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The :class:`~moezoo.models.multimodal.MultimodalConfig` fields of a LLaVA ``config.json``.

    ``vision`` and ``image_connector`` are kinded dicts (``hf_vision``, ``mlp2x_gelu``); ``llm``
    is an :class:`~moezoo.models.lm.LMConfig` (``ValueError`` naming the text families moezoo
    reads when ``text_config`` is none of them). The vision tower's family is checked by
    ``HFVisionEncoderConfig``.

    Example:
        >>> cfg = {"model_type": "llava", "image_token_index": 9, "vision_feature_layer": [-3, -1],
        ...        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 16},
        ...        "text_config": {"model_type": "llama", "vocab_size": 16, "hidden_size": 8,
        ...                        "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2}}
        >>> fields = multimodal_fields(cfg)
        >>> fields["vision"]["feature_layer"], fields["image_connector"], fields["llm"].dim
        ([-3, -1], {'kind': 'mlp2x_gelu', 'bias': True, 'activation': 'gelu'}, 8)
    """
    text = complete_text_config(sub_config(cfg, "text_config"))
    # LlavaConfig ties the LM head when either level says so (its __post_init__ lifts the text one).
    text["tie_word_embeddings"] = bool(llava_field(cfg, "tie_word_embeddings") or text.get("tie_word_embeddings"))
    try:
        llm = lm_config_from_hf(text, generation)
    except ValueError as err:
        raise ValueError(f"LLaVA text_config: {err}") from None
    vision = {"kind": "hf_vision", "vision_config": sub_config(cfg, "vision_config"),
              "feature_layer": llava_field(cfg, "vision_feature_layer"),
              "select_strategy": llava_field(cfg, "vision_feature_select_strategy")}
    connector = {"kind": "mlp2x_gelu", "bias": bool(llava_field(cfg, "multimodal_projector_bias")),
                 "activation": llava_field(cfg, "projector_hidden_act")}
    return {"llm": llm, "vision": vision, "image_connector": connector,
            "image_token_id": int(llava_field(cfg, "image_token_index"))}


def llava_to_moezoo(state: dict[str, torch.Tensor], llm_config: Any) -> dict[str, torch.Tensor]:
    """A LLaVA state dict, in either key layout, in moezoo's names.

    Keys of no LLaVA part are kept as they are, so the loader reports them as unexpected.

    Example:
        >>> from moezoo.models.lm import LMConfig
        >>> llm = LMConfig(vocab_size=8, dim=4, num_layers=1, num_heads=1, ffn_dim=8)
        >>> sorted(llava_to_moezoo({"language_model.model.norm.weight": torch.ones(4),
        ...                         "model.vision_tower.vision_model.post_layernorm.bias": torch.ones(4),
        ...                         "multi_modal_projector.linear_1.bias": torch.ones(4), "extra": torch.ones(1)}, llm))
        ['connectors.image.linear_1.bias', 'extra', 'llm.norm.weight', 'vision.vision_tower.post_layernorm.bias']
    """
    parts: dict[str, dict[str, torch.Tensor]] = {"llm": {}, "vision": {}, "projector": {}}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        for prefix, part, inner in _PREFIXES:
            if key.startswith(prefix):
                parts[part][inner + key[len(prefix):]] = tensor
                break
        else:
            out[key] = tensor
    parts["llm"] = hf_to_moezoo(parts["llm"], llm_config)
    for part, tensors in parts.items():
        out.update({MOEZOO_PREFIXES[part] + k: v for k, v in tensors.items()})
    return out


def llava_problems(config: Any) -> list[str]:
    """Why a multimodal config cannot be written as a transformers LLaVA checkpoint (empty: it can).

    Reads the config's fields only (no model class), so any
    :class:`~moezoo.models.multimodal.MultimodalConfig` can be checked before a file is written.

    Example:
        >>> from moezoo.models.lm import LMConfig
        >>> from moezoo.models.multimodal import MultimodalConfig
        >>> cfg = MultimodalConfig(llm=LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, ffn_dim=64),
        ...                        vision={"kind": "cnn", "channels": [8, 8, 16, 16], "film": False},
        ...                        modality_attention="bidirectional")
        >>> [problem.split(";")[0] for problem in llava_problems(cfg)]
        ["the image encoder is 'cnn'", "modality_attention='bidirectional'"]
    """
    problems = []
    if config.vision is None:
        problems.append("LLaVA needs an image encoder and the model has none (vision=None)")
    elif config.vision.kind != "hf_vision":
        problems.append(f"the image encoder is {config.vision.kind!r}; LLaVA's vision tower is a transformers CLIP / "
                        "SigLIP model (encoder kind 'hf_vision')")
    elif config.vision.moe is not None:
        problems.append("the vision tower's MLPs are experts (vision.moe is set); LLaVA's tower is a dense CLIP / "
                        "SigLIP model")
    if config.audio is not None:
        problems.append(f"LLaVA has no audio encoder (audio={config.audio.kind!r})")
    if config.video is not None:
        problems.append("LLaVA takes no video (video is set)")
    connector = config.image_connector
    if connector is not None and connector.kind != "mlp2x_gelu":
        problems.append(f"the image connector is {connector.kind!r}; LLaVA's projector is 'mlp2x_gelu' "
                        "(Linear -> activation -> Linear)")
    elif connector is not None and not _transformers_activation(connector.activation):
        problems.append(f"the connector's activation {connector.activation!r} is not one of transformers' ACT2FN")
    if config.modality_attention != "causal":
        problems.append(f"modality_attention={config.modality_attention!r}; LLaVA attends causally over images")
    if config.llm.lm_head_bias:
        problems.append("transformers' LLaVA LM head has no bias (llm.lm_head_bias=True)")
    try:
        infer_family(config.llm)
    except ValueError as err:  # it names each family's reasons (a router other than softmax top-k, ...)
        problems.append(f"the LLM: {err}")
    return problems


def _transformers_activation(name: str) -> bool:
    from transformers.activations import ACT2CLS

    return name in ACT2CLS


def llava_config(config: Any, vision_config: dict[str, Any], dtype: str = "float32") -> dict[str, Any]:
    """The LLaVA ``config.json`` of a multimodal config that :func:`llava_problems` accepts.

    Args:
        config: a :class:`~moezoo.models.multimodal.MultimodalConfig`.
        vision_config: the tower's transformers config as a dict (with ``model_type``).
        dtype: the weights' dtype name.
    """
    problems = llava_problems(config)
    if problems:
        raise ValueError("cannot export as a transformers LLaVA checkpoint: " + "; ".join(problems))
    llm, vision, connector = config.llm, config.vision, config.image_connector
    text = hf_config_from_lm(llm, infer_family(llm), dtype)
    text = {k: v for k, v in text.items() if k not in ("architectures", "dtype")}  # LLaVA's text_config has neither
    return {
        "architectures": [ARCHITECTURE], "model_type": "llava", "text_config": text, "vision_config": vision_config,
        "image_token_index": config.image_token_id, "projector_hidden_act": connector.activation,
        "multimodal_projector_bias": connector.bias, "vision_feature_layer": vision.feature_layer,
        "vision_feature_select_strategy": vision.select_strategy, "tie_word_embeddings": llm.tie_embeddings,
        "dtype": dtype,
    }


def moezoo_to_llava(state: dict[str, torch.Tensor], llm_config: Any, expert_layout: str = "per_expert"
                    ) -> dict[str, torch.Tensor]:
    """moezoo's multimodal state dict in LLaVA's names.

    Args:
        expert_layout: ``"per_expert"``: the layout transformers' ``save_pretrained`` writes (and
            llava-hf publishes); ``"fused"``: transformers 5's in-memory names and 3-D experts.

    Raises:
        ValueError: a weight that LLaVA has no place for (named).
    """
    if expert_layout not in LAYOUT_PREFIXES:
        raise ValueError(f"expert_layout={expert_layout!r}; use one of {sorted(LAYOUT_PREFIXES)}")
    prefixes = LAYOUT_PREFIXES[expert_layout]
    llm, out, stray = {}, {}, []
    for key, tensor in state.items():
        part = next((p for p, prefix in MOEZOO_PREFIXES.items() if key.startswith(prefix)), None)
        if part == "llm":
            llm[key[len(MOEZOO_PREFIXES[part]):]] = tensor
        elif part is not None:
            out[prefixes[part] + key[len(MOEZOO_PREFIXES[part]):]] = tensor
        else:
            stray.append(key)
    if stray:
        raise ValueError(f"transformers' LLaVA has no place for the weights {stray[:10]}")
    for key, tensor in moezoo_to_hf(llm, llm_config, infer_family(llm_config), expert_layout).items():
        prefix = "lm_head." if key.startswith("lm_head.") else "model."
        out[prefixes[prefix] + key[len(prefix):]] = tensor
    return out


IMAGE_TOKEN = "<image>"  # LLaVA's DEFAULT_IMAGE_TOKEN (llava/constants.py), and its forks' (moellava, moe_model)


def add_image_token(tokenizer: Any, vocab_size: int, source: Any) -> int:
    """Give ``tokenizer`` an ``<image>`` special token (if it has none) and return its id, a free embedding row.

    The original LLaVA code and its forks (MoE-LLaVA, LibMoE) have no image token in their tokenizers:
    ``tokenizer_image_token`` splits the prompt at ``<image>`` and splices the id -200 in. An added special
    token splits the text at the same place, and the id is a row of the embedding the checkpoint has spare.

    Raises:
        ValueError: no embedding row is left for it (``source`` names the checkpoint).
    """
    if IMAGE_TOKEN not in tokenizer.get_vocab():  # a tokenizer may encode it as one id, its unknown token's
        tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    ids = tokenizer.encode(IMAGE_TOKEN, add_special_tokens=False)
    if ids != [tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)] or not 0 <= ids[0] < vocab_size:
        raise ValueError(f"{source}: the tokenizer ({len(tokenizer)} tokens) leaves no embedding row for "
                         f"{IMAGE_TOKEN} (vocab_size={vocab_size}); it encodes it as {ids}")
    return ids[0]
