"""``model.save_pretrained(dir, format="libmoe")``: a multimodal model as a LibMoE ``llava_phi`` checkpoint.

Writes LibMoE's key layout and ``config.json`` (:mod:`moezoo.convert.libmoe`), safetensors, and the
tokenizer when the model has one. The inverse of :func:`~moezoo.convert.libmoe_import.import_libmoe`: a
LibMoE checkpoint imported and exported again has every tensor LibMoE's forward reads, bit for bit.
Not written back: the last SigLIP layer (LibMoE's features never reach it; its loader initialises it
afresh), the cosine routers' unread ``gate.weight``, and the projector's unused ``layer_norm``. The
config also holds the tower's ``vision_config`` (LibMoE ignores it; moezoo reads it back), and
``moe_name`` is ``xmoe`` for a cosine router (LibMoE's ``smoe_cosinegating`` computes the same). A model
whose routers follow ``router_convention="libmoe_v1"`` is written in LibMoE v1.x's layout (``gate.weight``
and ``gate.bias``) under v1's names ``smoe_cosinegating`` / ``smoe_perturbed`` / ``smoe_sigmoidgating``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moezoo.convert.hf_config import hf_config_from_lm, infer_family
from moezoo.convert.hf_export import dtype_name, write_hf_dir
from moezoo.convert.hf_weights import moezoo_to_hf
from moezoo.convert.libmoe import (
    ARCHITECTURE,
    EXPORT_NAMES,
    KNOWN_TOWERS,
    MODEL_TYPE,
    PROJECTOR_PREFIX,
    TOWER_PREFIX,
    V1_NAMES,
    moelayer_from_moezoo,
)
from moezoo.convert.towers import hub_tower_name
from moezoo.models.spec import register_format

_TOWER = "vision.vision_tower."
_CONNECTOR = "connectors.image."


def export_name(site: Any) -> str:
    """The ``moe_name`` of a MoE site: v1.x's name under ``router_convention="libmoe_v1"``, else v2.0's."""
    if site.router_convention == "libmoe_v1":
        return V1_NAMES[site.router]
    return EXPORT_NAMES[(site.router, bool(site.num_shared_experts))]


def libmoe_problems(config: Any) -> list[str]:
    """Why a multimodal config has no LibMoE form (empty: it has one)."""
    problems = []
    vision, connector = config.vision, config.image_connector
    if vision is None or vision.kind != "hf_vision" or vision.vision_config.get("model_type") != "siglip_vision_model":
        problems.append("LibMoE's tower is a transformers SigLIP ('hf_vision' with a siglip_vision_model)")
    elif vision.feature_layer not in (-1, -2) or vision.select_strategy != "full":
        problems.append("LibMoE takes every token of the input of its tower's last layer (feature_layer=-1 of a tower "
                        "one layer shorter, or -2; select_strategy='full')")
    if connector is None or connector.kind not in ("moe", "mlp2x_gelu") or connector.activation != "gelu":
        problems.append("LibMoE's projector is 'mlp2x_gelu' or 'moe' with exact GELU")
    elif connector.kind == "moe" and connector.hidden_dim not in (None,):
        problems.append("LibMoE's projector experts have the LLM's width as hidden width (hidden_dim=None)")
    if config.audio is not None or config.video is not None:
        problems.append("LibMoE takes images only")
    sites = [getattr(vision, "moe", None), connector if getattr(connector, "kind", "") == "moe" else None]
    sites = [s for s in sites if s is not None]
    keys = {(s.router, bool(s.num_shared_experts), s.num_experts, s.top_k) for s in sites}
    if len(keys) > 1:
        problems.append(f"LibMoE has one moe_name / num_experts / num_selected for the tower and projector, got {keys}")
    if len({s.router_convention for s in sites}) > 1:
        problems.append(f"LibMoE has one router layout for the tower and projector, got "
                        f"{sorted({s.router_convention for s in sites})}")
    for site in sites:
        v1 = site.router_convention == "libmoe_v1" and site.router in V1_NAMES and not site.num_shared_experts
        v2 = site.router_convention == "libmoe" and (site.router, bool(site.num_shared_experts)) in EXPORT_NAMES
        if not (v1 or v2):
            problems.append(f"router {site.router!r} (router_convention={site.router_convention!r}, "
                            f"num_shared_experts={site.num_shared_experts}) is none of LibMoE's")
    try:
        if infer_family(config.llm) != "phi3" or config.llm.moe is not None:
            problems.append("LibMoE's llava_phi LLM is a dense Phi-3")
    except ValueError as err:
        problems.append(f"the LLM: {err}")
    return problems


def export_libmoe(model: Any, path: str | Path, mm_vision_tower: str | None = None, version: str = "phi35",
                  max_shard_size: int | None = None) -> Path:
    """Write ``model`` as a LibMoE ``llava_phi`` checkpoint dir.

    Args:
        model: a :class:`~moezoo.models.multimodal.MultimodalMoEForCausalLM` that :func:`libmoe_problems` accepts.
        path: the output dir (created).
        mm_vision_tower: the hub name LibMoE builds the tower from; default: the known SigLIP whose config
            matches the tower's (``None`` if none does; LibMoE then cannot load it without one).
        version: the conversation template recorded (``"phi3"`` / ``"phi35"``).
        max_shard_size: bytes per safetensors shard; ``None`` writes one file.

    Raises:
        ValueError: the model has no LibMoE form (every reason listed); nothing is written.

    Example:
        >>> import tempfile, moezoo
        >>> from moezoo.convert.libmoe_testing import tiny_libmoe_checkpoint
        >>> source = tempfile.mkdtemp()
        >>> _ = tiny_libmoe_checkpoint(source, "smoe_share")
        >>> out = export_libmoe(moezoo.load(source), tempfile.mkdtemp())  # or save_pretrained(dir, format="libmoe")
        >>> config = moezoo.load(out).config
        >>> config.image_connector.num_experts, config.image_connector.num_shared_experts
        (3, 1)
    """
    config = model.config
    problems = libmoe_problems(config)
    if problems:
        raise ValueError("cannot export as a LibMoE checkpoint: " + "; ".join(problems))
    vision, connector = config.vision, config.image_connector
    site = vision.moe or (connector if connector.kind == "moe" else None)
    # LibMoE's features are the input of its tower's last layer: a tower read at -1 gets one more layer there.
    run = vision.vision_config["num_hidden_layers"] + (1 + vision.feature_layer)  # the layers that run
    tower = dict(vision.vision_config, num_hidden_layers=run + 1)
    tower.pop("vision_use_head", None)
    if mm_vision_tower is None:
        mm_vision_tower = hub_tower_name(tower, KNOWN_TOWERS)
    cfg = hf_config_from_lm(config.llm, "phi3", dtype_name(model.llm.embed_tokens.weight))
    scales = [int(s) for s in (vision.scales or [1])]
    shared = bool(site.num_shared_experts) if site else False
    calls = run * sum(s * s for s in scales) / len(scales)
    coef = (connector.aux_loss_coef, connector.z_loss_coef) if connector.kind == "moe" else \
        ((vision.moe.aux_loss_coef * calls, vision.moe.z_loss_coef * calls) if vision.moe else (0.0, 0.0))
    cfg.update({
        "architectures": [ARCHITECTURE], "model_type": MODEL_TYPE,
        "moe_name": export_name(site) if site else "smoe",
        "num_experts": (site.num_experts + int(shared)) if site else 1,
        "num_selected": (site.top_k + int(shared)) if site else 1,
        "topk_max": (site.top_k + int(shared)) if site else 1, "topk_min": (site.top_k + int(shared)) if site else 1,
        "mlp_smoe": connector.kind == "moe", "clip_smoe": vision.moe is not None, "scales": scales,
        "sparse_upcycling": True, "balance_loss_coef": coef[0], "router_z_loss_coef": coef[1],
        "router_loss_coef": 0.01, "mm_vision_tower": mm_vision_tower, "mm_hidden_size": tower["hidden_size"],
        "mm_projector_type": "moe" if connector.kind == "moe" else "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_patch_merge_type": "flat",
        "image_aspect_ratio": vision.image_aspect_ratio,
        "version": version, "use_mm_proj": True, "vision_config": tower,
    })
    state = moezoo_to_libmoe(model.state_dict(), config)
    return write_hf_dir(path, state, cfg, max_shard_size, files=getattr(model, "tokenizer", None))


def moezoo_to_libmoe(state: dict[str, torch.Tensor], config: Any) -> dict[str, torch.Tensor]:
    """moezoo's multimodal state dict in LibMoE's key layout (see :mod:`moezoo.convert.libmoe`)."""
    llm = {k[len("llm."):]: v for k, v in state.items() if k.startswith("llm.")}
    out = dict(moezoo_to_hf(llm, config.llm, "phi3", "per_expert"))
    router = config.vision.moe.router if config.vision.moe else None
    convention = config.vision.moe.router_convention if config.vision.moe else "libmoe"
    layers: dict[int, dict[str, torch.Tensor]] = {}
    run = config.vision.vision_config["num_hidden_layers"] + (1 + config.vision.feature_layer)
    for key, tensor in state.items():
        if not key.startswith(_TOWER) or key.startswith((_TOWER + "post_layernorm.", _TOWER + "head.",
                                                         f"{_TOWER}encoder.layers.{run}.")):
            continue  # what LibMoE's tower lacks, and a layer after the features (read at -2) that never runs
        inner = key[len(_TOWER):]
        head, sep, rest = inner.partition(".mlp.")
        if sep and config.vision.moe is not None:
            layers.setdefault(int(head.split(".")[2]), {})[rest] = tensor
        else:
            out[TOWER_PREFIX + inner] = tensor
    for i, tensors in layers.items():
        for k, v in moelayer_from_moezoo(tensors, router, ("fc1", "fc2"), convention).items():
            out[f"{TOWER_PREFIX}encoder.layers.{i}.moelayer.{k}"] = v
    connector = {k[len(_CONNECTOR):]: v for k, v in state.items() if k.startswith(_CONNECTOR)}
    if config.image_connector.kind == "moe":
        moe = {k[len("mlp."):]: v for k, v in connector.items()}
        for k, v in moelayer_from_moezoo(moe, config.image_connector.router, ("0", "2"),
                                         config.image_connector.router_convention).items():
            out[f"{PROJECTOR_PREFIX}moelayer.{k}"] = v
    else:
        names = {"linear_1.": "0.", "linear_2.": "2."}
        for k, v in connector.items():
            out[PROJECTOR_PREFIX + names[k[:9]] + k[9:]] = v
    return {k: v.contiguous() for k, v in out.items()}


register_format("libmoe", export_libmoe)
