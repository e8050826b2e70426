"""LibMoE's released vision-language checkpoints <-> moezoo's multimodal config and weights, as data.

LibMoE (Nguyen et al. 2024, arXiv 2411.00918; github.com/Fsoft-AIC/LibMoE, ``moe_model/``, v2.0) trains
LLaVA-style models whose MoE sits in the SigLIP tower's MLPs and in the projector, not in the LLM. Its
``config.json`` is a ``Phi3Config`` with ``model_type`` ``llava_phi`` (``LlavaPhiConfig`` in
``moe_model/model/language_model/llava_phi.py``) plus every training argument (``initialize_vision_modules``
in ``llava_arch.py`` copies them all): ``moe_name``, ``num_experts``, ``num_selected``, ``topk_max``,
``topk_min``, ``mlp_smoe``, ``clip_smoe``, ``scales``, ``sparse_upcycling``, ``balance_loss_coef``,
``router_z_loss_coef``, ``router_loss_coef``, ``mm_vision_tower``, ``mm_projector_type``, ``version``, ...

Weight keys (``LlavaPhiForCausalLM``):

==========================  ======================================================================
part                        keys
==========================  ======================================================================
Phi-3 LLM                   ``model.embed_tokens``, ``model.layers.N.*``, ``model.norm``, ``lm_head``
SigLIP tower                ``model.vision_tower.vision_model.embeddings.*``,
                            ``...encoder.layers.N.{self_attn.*, layer_norm1, layer_norm2}``
tower MLP, ``clip_smoe``    ``...encoder.layers.N.moelayer.{gate.weight, experts.K.fc1, experts.K.fc2}``
                            (dense: ``...layers.N.mlp.{fc1, fc2}``)
projector, ``mlp_smoe``     ``model.mm_projector.moelayer.{gate.weight, experts.K.0, experts.K.2}``
                            (dense ``mlp2x_gelu``: ``model.mm_projector.{0, 2}``)
==========================  ======================================================================

Router parameters under ``moelayer``: ``gate.weight`` (``smoe``, ``smoe_sigmoidgating``, ``smoe_share``:
``E - 1`` rows, the last expert ``experts.{E-1}`` being the shared one); ``inp_reduction.weight``
``(E/2, D)`` and ``expert_embeddings`` ``(E, E/2)`` (``xmoe``, ``smoe_cosinegating``, ``smoe_perturbed``,
whose ``gate.weight`` is never read); ``hyper_embedding`` ``(1, D)`` and ``hypernet.{0,2}.{weight,bias}``
(``hyperrouter``, whose ``gate`` is rebuilt from the hypernetwork before the first eval forward).

LibMoE's SigLIP returns the *input* of its last encoder layer (``SiglipSMoEVisionTransformer.forward``:
``encoder_outputs[-1]`` of the states collected before each layer), without the post-norm or head. So
moezoo builds the tower with one layer fewer and takes its last output (``feature_layer=-1``): the same
features. The last layer's weights never touch the output and are not imported; :func:`split_libmoe`
lists every such key. moezoo's names are those of :mod:`moezoo.convert.llava` (``llm.*``,
``vision.vision_tower.*``, ``connectors.image.*``); a MoE MLP is a
:class:`~moezoo.moe.mlp_experts.MoEMLP` (``fc1_weight (E, H, D)``, ..., ``router.*``,
``shared_fc1`` / ``shared_fc2``).

Where LibMoE's code and moezoo's could disagree (the routers' docstrings give each router's details,
under ``router_convention="libmoe"``):

- **Eval forward, float32: none found.** No router of these seven adds noise at eval (v2.0's
  ``smoe_perturbed`` adds none at all; its "perturbation" is the ``theta`` in the norms); the
  temperature is LibMoE's constant 0.3; the cosine routers' weights are a softmax over the kept
  probabilities; ``smoe_share`` averages shared and routed outputs. The tests check each layer to 1e-5.
- **State.** ``smoe_perturbed`` rescales its expert embeddings in place on every forward (not idempotent);
  moezoo gives its first forward after loading.
- **Low precision.** LibMoE casts the cosine routers' probabilities to the input dtype before the top-k and
  multiplies expert outputs by float32 weights; moezoo keeps the probabilities in float32 and casts the
  weights to the expert dtype. In bf16 a near tie can pick another expert.
- **Training only.** HyperRouter's dynamic top-k: k grows from ``topk_min`` to ``topk_max`` during training
  and LibMoE's eval routes with ``num_selected``; moezoo routes (and fine-tunes) with that fixed k, reading a
  schedule that ends at it (``topk_max == num_selected``: LibMoE v1.1's defaults 1 -> 2 with 2 selected) and
  refusing one that ends elsewhere. LibMoE's
  balance loss is per image (mean over the batch of per-image ``E * sum(f * P)``), moezoo's over all
  tokens; LibMoE averages the tower's layer losses (the unused last layer included) and S2 scales, moezoo
  adds the sites' losses with the coefficient divided by their number.
- **Inputs.** ``tokenizer_image_token`` (``image_aspect_ratio="pad"`` is followed): see
  :mod:`moezoo.convert.libmoe_import`.

LibMoE v1.x (commit 766ddae, ``moe_model/model/moe/moe_cosinegating.py``, ``moe_perturbed.py``,
``moe_sigmoidgating.py``; probably the layout of the hub checkpoints uploaded around November 2024, not
checked against them here) routes three ``moe_name`` s by other routers, read under
``router_convention="libmoe_v1"`` (the routers' docstrings give the equations):

- ``smoe_cosinegating``, ``smoe_perturbed``: v1.x ``gate.weight (E, D)`` and ``gate.bias (E,)``; v2.0
  ``inp_reduction.weight`` and ``expert_embeddings`` (and a ``gate.weight`` it never reads, no ``gate.bias``);
- ``smoe_sigmoidgating``: v1.x ``gate.weight`` and ``gate.bias``; v2.0 ``gate.weight`` alone.

**v1 vs v2 is told apart by the weights, not the config**: both write the same ``config.json`` fields
(``moe_name``, ``num_experts``, ... ; there is no version field), and v1 has no ``xmoe`` / ``smoe_share``. A
``moelayer`` of one of those three names is v1's when it has a ``gate.bias`` and (cosine routers) no
``inp_reduction.weight``; every ``moelayer`` of a checkpoint must say the same (:func:`detect_convention`).
``smoe`` and ``hyperrouter`` have the same keys and eval forward in v1 and v2 and are read as v2 (v1's
``HyperRouter`` routes at eval with the ``gate`` it holds, v2's rebuilds it from the hypernetwork: the same
when the stored gate is the generated one; see :class:`~moezoo.moe.routers.hyper.HyperRouter`). Export
writes a ``libmoe_v1`` model back in v1's layout and names. Where v1's code and moezoo's could disagree:

- **Eval forward, float32: none found.** v1 adds no noise (``smoe_perturbed`` neither: its "perturbation"
  is the ``0.1`` added to both norms) and has no temperature; the cosine routers' weights are the softmax
  over the kept ``softmax(cos) + gate.bias`` values, the sigmoid router's the renormalised top-k of
  ``softmax(sigmoid(x W^T + b))``. v1 changes no weight in place. The tests check each layer to 1e-5.
- **Low precision.** v1 casts the cosine routers' probabilities to the input dtype before adding the bias
  and computes its gates in the input dtype; moezoo computes them in float32.
- **Training only.** v1's ``smoe_cosinegating`` stores ``combine_loss``'s ``(aux, balance)`` tuple as its
  auxiliary loss; moezoo's losses are those of the other routers (z-loss on the cosine, or on the sigmoid
  values v1 calls its sigmoid router's gate logits; balance on the first choice).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch

from moezoo.convert.towers import towers_of
from moezoo.models.encoders.hf_vision import ASPECT_RATIOS
from moezoo.moe.routers.hyper import hyper_gate

# LibMoE's `moe_name` -> (moezoo router, shared expert). The v2.0 classes each follows, in moe_model/model/moe/:
# smoe.py SMoeLayer, xmoe.py XMOE, smoe_cosinegating.py MoECosingGating, smoe_sigmoidgating.py
# SMoESigmoidGating, smoe_perturbed.py MoEPerturbedCosingGating, hyperrouter.py HyperRouter,
# shard_smoe.py MoEShareLayer.
MOE_NAMES: dict[str, tuple[str, bool]] = {
    "smoe": ("softmax", False),
    "xmoe": ("cosine", False),
    "smoe_cosinegating": ("cosine", False),
    "smoe_sigmoidgating": ("sigmoid", False),
    "smoe_perturbed": ("perturbed_cosine", False),
    "hyperrouter": ("hyper", False),
    "smoe_share": ("softmax", True),
}
# LibMoE v1.x's routers whose layout differs from v2.0's: moezoo router -> moe_name (commit 766ddae).
V1_NAMES = {"cosine": "smoe_cosinegating", "perturbed_cosine": "smoe_perturbed", "sigmoid": "smoe_sigmoidgating"}
# moezoo router (+ shared) -> the moe_name written on export (xmoe and smoe_cosinegating compute the same).
EXPORT_NAMES = {("softmax", False): "smoe", ("cosine", False): "xmoe", ("sigmoid", False): "smoe_sigmoidgating",
                ("perturbed_cosine", False): "smoe_perturbed", ("hyper", False): "hyperrouter",
                ("softmax", True): "smoe_share"}
MODEL_TYPE = "llava_phi"
ARCHITECTURE = "LlavaPhiForCausalLM"
# Fields LibMoE adds to the Phi-3 config; the rest of config.json is the Phi-3 text config.
LIBMOE_FIELDS = ("moe_name", "num_experts", "num_selected", "topk_max", "topk_min", "mlp_smoe", "clip_smoe", "scales",
                 "sparse_upcycling", "balance_loss_coef", "router_z_loss_coef", "router_loss_coef", "mm_vision_tower",
                 "mm_hidden_size", "mm_projector_type", "mm_vision_select_layer", "mm_vision_select_feature",
                 "mm_patch_merge_type", "image_aspect_ratio", "version", "use_mm_proj", "vision_config")
# The SigLIP towers LibMoE names (SiglipVisionConfig.from_pretrained(mm_vision_tower) reads them from the hub).
KNOWN_TOWERS = towers_of("siglip_vision_model")
TOWER_PREFIX = "model.vision_tower.vision_model."
PROJECTOR_PREFIX = "model.mm_projector."
# LibMoE's Phi-3 conversation templates (moe_model/conversation.py: conv_phi_3_instruct, conv_phi_35_instruct,
# SeparatorStyle.PHI3 / PHI35 in Conversation.get_prompt) as Jinja; see chat_template.
SYSTEMS = {"phi3": None, "phi35": "You are a helpful assistant."}


@dataclass(frozen=True)
class LibMoEFacts:
    """What a LibMoE ``config.json`` says about its MoE, checked (:func:`read_facts`)."""

    moe_name: str
    router: str
    shared: bool
    num_experts: int  # LibMoE's, the shared expert included
    top_k: int  # LibMoE's num_selected, the shared expert included
    clip_smoe: bool
    mlp_smoe: bool
    scales: list[float]
    version: str
    convention: str = "libmoe"  # the routers' MoEConfig.router_convention: "libmoe_v1" for v1.x's layout

    @property
    def routed(self) -> tuple[int, int]:
        """``(num_experts, top_k)`` of the routed experts (``smoe_share`` routes ``E - 1`` experts, ``k - 1``)."""
        return (self.num_experts - 1, self.top_k - 1) if self.shared else (self.num_experts, self.top_k)

    def experts_fields(self, aux_loss_coef: float, z_loss_coef: float) -> dict[str, Any]:
        """The :class:`~moezoo.moe.mlp_experts.ExpertsConfig` fields of one of its MoE sites."""
        num_experts, top_k = self.routed
        return {"num_experts": num_experts, "top_k": top_k, "router": self.router, "norm_topk_prob": True,
                "router_convention": self.convention, "num_shared_experts": int(self.shared),
                "aux_loss_coef": aux_loss_coef, "z_loss_coef": z_loss_coef}


def read_facts(cfg: dict[str, Any], source: Any) -> LibMoEFacts:
    """The checked MoE facts of a LibMoE ``config.json`` (``source`` is the file named in errors).

    Raises:
        ValueError: a value moezoo cannot express, naming the file and the field: an unknown ``moe_name``
            (the known ones listed), a HyperRouter top-k schedule that does not end at ``num_selected``, a projector
            other than ``mlp2x_gelu`` / ``moe``, a patch merge other than ``flat``, or bad expert counts.

    Example:
        >>> read_facts({"moe_name": "smoe_share", "num_experts": 4, "num_selected": 2, "clip_smoe": True,
        ...             "mlp_smoe": True, "mm_projector_type": "moe", "scales": [1, 3]}, "c.json").routed
        (3, 1)
        >>> read_facts({"moe_name": "moe_plus_plus"}, "c.json")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: c.json: moe_name='moe_plus_plus' is not a LibMoE router moezoo reads; it reads ['hyperrouter', ...]
    """
    def bad(field: str, why: str) -> ValueError:
        return ValueError(f"{source}: {field}={cfg.get(field)!r} {why}")

    name = cfg.get("moe_name", "smoe")
    if name not in MOE_NAMES:
        raise bad("moe_name", f"is not a LibMoE router moezoo reads; it reads {sorted(MOE_NAMES)}")
    router, shared = MOE_NAMES[name]
    num_experts, top_k = int(cfg.get("num_experts", 1)), int(cfg.get("num_selected", 1))
    if not 1 <= top_k <= num_experts:
        raise bad("num_selected", f"must be in [1, num_experts={num_experts}]")
    if shared and top_k < 2:
        raise bad("num_selected", "must be >= 2 for smoe_share (the shared expert plus at least one routed)")
    k_max, k_min = cfg.get("topk_max", top_k), cfg.get("topk_min", top_k)
    if name == "hyperrouter" and (k_max != top_k or not 1 <= k_min <= k_max):
        raise ValueError(
            f"{source}: topk_max={k_max!r}, topk_min={k_min!r} with num_selected={top_k}: HyperRouter's dynamic "
            "top-k grows k from topk_min to topk_max during training, and LibMoE evaluates with num_selected. "
            "moezoo routes with a fixed k, so it reads a schedule that ends at the eval k (topk_min <= topk_max == "
            f"num_selected, as LibMoE v1.1's released hyperrouter has: 1, 2, 2), not one that ends elsewhere; set "
            f"topk_max to {top_k} in config.json if num_selected is the k the checkpoint should route with")
    projector = cfg.get("mm_projector_type", "linear")
    mlp_smoe = bool(cfg.get("mlp_smoe", False))
    if projector not in ("moe", "mlp2x_gelu"):
        raise bad("mm_projector_type", "is not one moezoo reads ('moe', 'mlp2x_gelu')")
    if (projector == "moe") != mlp_smoe:
        raise bad("mlp_smoe", f"must be {projector == 'moe'} with mm_projector_type={projector!r} "
                  "(LibMoE calls the projector with the MoE signature exactly when mlp_smoe is set)")
    merge = cfg.get("mm_patch_merge_type", "flat")
    if merge != "flat":
        raise bad("mm_patch_merge_type", "is not 'flat'; moezoo has no LLaVA-NeXT patch merge")
    if cfg.get("mm_vision_select_feature", "patch") not in ("patch", "cls_patch"):
        raise bad("mm_vision_select_feature", "is not 'patch' / 'cls_patch' (LibMoE's SigLIP keeps every token)")
    scales = [float(s) for s in (cfg.get("scales") or [1])]
    if scales[0] != 1 or any(s < 1 or s != int(s) for s in scales):
        raise bad("scales", "must be whole numbers >= 1 starting with 1 (LibMoE's S2 tiling), e.g. [1, 3]")
    if (cfg.get("image_aspect_ratio") or "square") not in ASPECT_RATIOS:
        raise bad("image_aspect_ratio", f"is not one moezoo reads ({list(ASPECT_RATIOS)}; no anyres tiling)")
    version = cfg.get("version") or "phi35"
    if version not in SYSTEMS:
        raise bad("version", f"is not a Phi-3 conversation template moezoo renders ({sorted(SYSTEMS)})")
    return LibMoEFacts(name, router, shared, num_experts, top_k, bool(cfg.get("clip_smoe", False)), mlp_smoe,
                       scales, version)


def tower_config(cfg: dict[str, Any], source: Any) -> dict[str, Any]:
    """The SigLIP ``vision_config`` (with ``model_type``) of a LibMoE config: its ``vision_config`` if it has
    one (moezoo's export writes it), else the known config of ``mm_vision_tower``.

    Raises:
        ValueError: a tower moezoo does not know (the known ones named).
    """
    if isinstance(cfg.get("vision_config"), dict):
        vision = dict(cfg["vision_config"])
        vision.setdefault("model_type", "siglip_vision_model")
    else:
        name = cfg.get("mm_vision_tower")
        if name not in KNOWN_TOWERS:
            raise ValueError(f"{source}: mm_vision_tower={name!r} is not a SigLIP tower moezoo knows "
                             f"({sorted(KNOWN_TOWERS)}); add its SiglipVisionConfig as `vision_config` to config.json")
        vision = dict(KNOWN_TOWERS[name])
    if vision["model_type"] != "siglip_vision_model":
        raise ValueError(f"{source}: the tower is {vision['model_type']!r}; moezoo reads LibMoE's SigLIP towers")
    return vision


# --- weights ------------------------------------------------------------------------------------------------


# The router tensors each moezoo router reads from a v2.0 `moelayer`, and from a v1.x one (its
# `gate = nn.Linear(D, E, bias=True)`).
V1_ROUTER_KEYS = ("gate.weight", "gate.bias")
ROUTER_KEYS = {"softmax": ("gate.weight",), "sigmoid": ("gate.weight",),
               "cosine": ("inp_reduction.weight", "expert_embeddings"),
               "perturbed_cosine": ("inp_reduction.weight", "expert_embeddings"),
               "hyper": ("hyper_embedding", "hypernet.0.weight", "hypernet.0.bias", "hypernet.2.weight",
                         "hypernet.2.bias")}


def is_v1_layout(t: dict[str, torch.Tensor], facts: LibMoEFacts) -> bool:
    """Whether a ``moelayer`` (keys below it) has LibMoE v1.x's router layout for ``facts.moe_name``: a
    ``gate.bias`` for ``smoe_sigmoidgating``, a ``gate.bias`` and no ``inp_reduction.weight`` for
    ``smoe_cosinegating`` / ``smoe_perturbed`` (see the module docstring)."""
    if facts.moe_name not in V1_NAMES.values() or "gate.bias" not in t:
        return False
    return facts.router == "sigmoid" or "inp_reduction.weight" not in t


def detect_convention(state: dict[str, torch.Tensor], facts: LibMoEFacts, source: Any) -> str:
    """``"libmoe_v1"`` when the checkpoint's ``moelayer`` s have LibMoE v1.x's router layout, else ``"libmoe"``.

    Raises:
        ValueError: some ``moelayer`` s in v1's layout and some in v2's (both named).

    Example:
        >>> facts = read_facts({"moe_name": "smoe_sigmoidgating", "num_experts": 2, "mm_projector_type": "moe",
        ...                     "mlp_smoe": True}, "c.json")
        >>> w = torch.zeros(2, 4)
        >>> detect_convention({"a.moelayer.gate.weight": w, "a.moelayer.gate.bias": w[:, 0]}, facts, "m")
        'libmoe_v1'
        >>> detect_convention({"a.moelayer.gate.weight": w}, facts, "m")
        'libmoe'
    """
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        head, sep, rest = key.partition(".moelayer.")
        if sep:
            layers.setdefault(head + ".moelayer", {})[rest] = tensor
    v1 = {where: is_v1_layout(t, facts) for where, t in layers.items()}
    if len(set(v1.values())) > 1:
        first_v1 = next(w for w, is_v1 in v1.items() if is_v1)
        first_v2 = next(w for w, is_v1 in v1.items() if not is_v1)
        raise ValueError(f"{source}: moe_name={facts.moe_name!r}: {first_v1} has LibMoE v1's router layout "
                         f"({list(V1_ROUTER_KEYS)}) but {first_v2} has v2.0's; a checkpoint has one")
    return "libmoe_v1" if any(v1.values()) else "libmoe"


def check_router_layout(t: dict[str, torch.Tensor], facts: LibMoEFacts, where: str, source: Any) -> None:
    """Raise ``ValueError`` when a ``moelayer`` lacks the router tensors of ``moe_name`` in the layout
    of ``facts.convention`` (LibMoE v2.0's, or v1.x's ``gate.weight`` and ``gate.bias``)."""
    found = sorted(k for k in t if not k.startswith("experts."))
    if facts.convention == "libmoe_v1":
        missing = [k for k in V1_ROUTER_KEYS if k not in t]
        if missing:
            raise ValueError(f"{source}: moe_name={facts.moe_name!r} in LibMoE v1's layout but {where} lacks "
                             f"{missing} (it has {found})")
        return
    missing = [k for k in ROUTER_KEYS[facts.router] if k not in t]
    if not missing:
        return
    hint = ""
    if facts.router in ("cosine", "perturbed_cosine") and "gate.bias" in t:
        hint = (f" A gate.bias without inp_reduction is LibMoE v1's cosine layout, which only "
                f"{sorted(V1_NAMES.values())} have (v1 has no {facts.moe_name!r}).")
    raise ValueError(f"{source}: moe_name={facts.moe_name!r} but {where} lacks {missing} (it has {found}).{hint}")


def moelayer_to_moezoo(t: dict[str, torch.Tensor], facts: LibMoEFacts, names: tuple[str, str]
                       ) -> dict[str, torch.Tensor]:
    """One LibMoE ``moelayer`` (keys below it) as a :class:`~moezoo.moe.mlp_experts.MoEMLP` state dict.

    ``names`` are the experts' two linear layers (``("fc1", "fc2")`` in the tower, ``("0", "2")`` in
    the projector). Router tensors LibMoE never reads (the cosine routers' ``gate.weight``, the
    hyperrouter's rebuilt ``gate``) are left out.
    """
    num_routed, _ = facts.routed
    first, second = names
    out = {}
    for moezoo_name, libmoe_name in (("fc1", first), ("fc2", second)):
        for kind in ("weight", "bias"):
            out[f"{moezoo_name}_{kind}"] = torch.stack([t[f"experts.{e}.{libmoe_name}.{kind}"]
                                                       for e in range(num_routed)])
            if facts.shared:
                out[f"shared_{moezoo_name}.{kind}"] = t[f"experts.{num_routed}.{libmoe_name}.{kind}"]
    if facts.convention == "libmoe_v1":  # v1.x: the full-width biased gate, for every router it changes
        out["router.weight"], out["router.bias"] = t["gate.weight"], t["gate.bias"]
    elif facts.router in ("softmax", "sigmoid"):
        out["router.weight"] = t["gate.weight"]
        if facts.router == "sigmoid":
            out["router.bias"] = torch.zeros(num_routed, dtype=t["gate.weight"].dtype)  # unused under libmoe
    elif facts.router in ("cosine", "perturbed_cosine"):
        out["router.proj"] = t["inp_reduction.weight"]
        out["router.expert_embeddings"] = t["expert_embeddings"]
        out["router.log_temperature"] = torch.tensor(math.log(0.3), dtype=t["expert_embeddings"].dtype)
    else:  # hyper
        out["router.hyper_embedding"] = t["hyper_embedding"].reshape(-1)
        out["router.hyper_w1"], out["router.hyper_b1"] = t["hypernet.0.weight"], t["hypernet.0.bias"]
        out["router.hyper_w2"], out["router.hyper_b2"] = t["hypernet.2.weight"], t["hypernet.2.bias"]
    return out


def moelayer_from_moezoo(t: dict[str, torch.Tensor], router: str, names: tuple[str, str],
                         convention: str = "libmoe") -> dict[str, torch.Tensor]:
    """The inverse of :func:`moelayer_to_moezoo`: a ``MoEMLP`` state dict as LibMoE's ``moelayer`` keys.

    The cosine routers get no ``gate.weight`` (LibMoE never reads it); the hyperrouter's ``gate`` is
    written as the hypernetwork generates it, which is what LibMoE's ``recreate_gate`` sets. Under
    ``convention="libmoe_v1"`` the router is written as v1.x's ``gate.weight`` and ``gate.bias``.
    """
    first, second = names
    num_routed = t["fc1_weight"].shape[0]
    out = {}
    for moezoo_name, libmoe_name in (("fc1", first), ("fc2", second)):
        for kind in ("weight", "bias"):
            for e in range(num_routed):
                out[f"experts.{e}.{libmoe_name}.{kind}"] = t[f"{moezoo_name}_{kind}"][e]
            if f"shared_{moezoo_name}.{kind}" in t:
                out[f"experts.{num_routed}.{libmoe_name}.{kind}"] = t[f"shared_{moezoo_name}.{kind}"]
    if convention == "libmoe_v1" and router in V1_NAMES:
        out["gate.weight"], out["gate.bias"] = t["router.weight"], t["router.bias"]
    elif router in ("softmax", "sigmoid"):
        out["gate.weight"] = t["router.weight"]
    elif router in ("cosine", "perturbed_cosine"):
        out["inp_reduction.weight"] = t["router.proj"]
        out["expert_embeddings"] = t["router.expert_embeddings"]
    else:
        emb = t["router.hyper_embedding"]
        out["hyper_embedding"] = emb.reshape(1, -1)
        out["hypernet.0.weight"], out["hypernet.0.bias"] = t["router.hyper_w1"], t["router.hyper_b1"]
        out["hypernet.2.weight"], out["hypernet.2.bias"] = t["router.hyper_w2"], t["router.hyper_b2"]
        weight, bias = hyper_gate(emb, t["router.hyper_w1"], t["router.hyper_b1"], t["router.hyper_w2"],
                                  t["router.hyper_b2"], num_routed)
        out["gate.weight"], out["gate.bias"] = weight.contiguous(), bias.contiguous()
    return out


_LAYER = re.compile(r"encoder\.layers\.(\d+)\.")


def split_libmoe(state: dict[str, torch.Tensor], num_layers: int) -> tuple[dict, dict, dict]:
    """LibMoE's state dict as ``(llm, tower, projector)``: the Phi-3 keys (``model.*``, ``lm_head.*``) and the
    tower's and the projector's keys below their prefixes, without the keys moezoo does not import (the last
    tower layer, which never runs; the unused ``mm_projector.layer_norm`` of a projector trained from scratch)."""
    llm, tower, projector = {}, {}, {}
    for key, tensor in state.items():
        if key.startswith(TOWER_PREFIX):
            inner = key[len(TOWER_PREFIX):]
            match = _LAYER.match(inner)
            if not (match and int(match.group(1)) == num_layers - 1):
                tower[inner] = tensor
        elif key.startswith(PROJECTOR_PREFIX):
            inner = key[len(PROJECTOR_PREFIX):]
            if not inner.startswith("layer_norm."):
                projector[inner] = tensor
        else:
            llm[key] = tensor
    return llm, tower, projector
