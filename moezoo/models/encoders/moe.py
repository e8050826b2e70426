"""MoE inside a vision tower: its blocks' MLPs as routed experts.

LibMoE's ``clip_smoe`` / ``siglip_smoe`` (arXiv 2411.00918) and CuMo (arXiv 2405.05949)
sparsify the vision encoder as well as the LLM: each transformer block's MLP becomes a
mixture of copies of itself (:class:`~moezoo.moe.mlp_experts.MoEMLP`), behind a fresh
router. An encoder config with ``moe`` set builds its tower that way: upcycled (every
expert a copy of the pretrained MLP) when it loads pretrained weights, randomly
initialised experts otherwise (a checkpoint then fills them).

The encoders with transformer blocks (``hf_vision``, ``timm`` ViTs, ``open_clip``) say
where their MLPs are (:meth:`Encoder.mlp_sites`); the rest of the work is here, once.

The blocks still get a tensor from their MLP; each MoE block's routing goes to the forward's
recorder (:mod:`moezoo.moe.recording`), and the multimodal model returns it in its output,
one record per pass: a tower that encodes the images and then the video frames of a batch
reports both passes' routings and losses (``site_outputs``, with ``modality`` ``"image"`` and
``"video"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from moezoo.moe.mlp_experts import ACTIVATIONS, ExpertsConfig, MoEMLP
from moezoo.utils.checks import require


@dataclass
class EncoderMoEConfig(ExpertsConfig):
    """Which of a tower's block MLPs become experts, and how they are routed.

    Args:
        num_experts / top_k / router / aux_loss_coef / z_loss_coef / norm_topk_prob: the experts
            and their routing (:class:`~moezoo.moe.mlp_experts.ExpertsConfig`).
        layers: indices of the blocks (among :meth:`Encoder.mlp_sites`) to sparsify; ``None``: all.

    Example:
        >>> EncoderMoEConfig(num_experts=4, top_k=2, layers=[1, 0]).layers
        [0, 1]
        >>> EncoderMoEConfig(num_experts=2, top_k=3)
        Traceback (most recent call last):
        ...
        ValueError: EncoderMoEConfig.top_k=3 must be in [1, num_experts=2]
    """

    layers: list[int] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.layers is not None:
            self.layers = sorted(int(i) for i in self.layers)
            require(self, "layers", all(i >= 0 for i in self.layers), "must be block indices >= 0")


@dataclass
class MLPSite:
    """One block MLP ``fc2(act(fc1(x)))``: held by ``parent`` as attribute ``name``."""

    parent: nn.Module
    name: str
    fc1: nn.Linear
    fc2: nn.Linear
    activation: str  # a name of moezoo.moe.mlp_experts.ACTIVATIONS


def activation_name(act: Any) -> str:
    """The :data:`~moezoo.moe.mlp_experts.ACTIVATIONS` name of a GELU-family module or a transformers name.

    Example:
        >>> activation_name(nn.GELU()), activation_name(nn.GELU(approximate="tanh")), activation_name("quick_gelu")
        ('gelu', 'gelu_tanh', 'quick_gelu')
    """
    if isinstance(act, str):
        name = act
    elif isinstance(act, nn.GELU):
        name = "gelu" if act.approximate == "none" else "gelu_tanh"
    else:
        name = {"QuickGELU": "quick_gelu", "GELUTanh": "gelu_tanh", "GELU": "gelu", "SiLU": "silu",
                "ReLU": "relu"}.get(type(act).__name__, type(act).__name__)
    if name not in ACTIVATIONS:
        raise ValueError(f"cannot turn an MLP with activation {name!r} into experts; supported: {sorted(ACTIVATIONS)}")
    return name


def sparsify_mlps(sites: list[MLPSite], config: EncoderMoEConfig, upcycle: bool, noise_std: float = 0.0,
                  seed: int = 0) -> None:
    """Replace the MLPs of ``sites`` chosen by ``config.layers`` with :class:`MoEMLP` experts, in place.

    Args:
        sites: the tower's block MLPs, in block order.
        config: the experts and router.
        upcycle: copy each dense MLP into its experts (:meth:`MoEMLP.from_dense`: the output is
            unchanged at the start); otherwise initialise the experts randomly.
        noise_std / seed: relative noise on the copies, and the seed of routers and noise.
    """
    chosen = range(len(sites)) if config.layers is None else config.layers
    bad = [i for i in chosen if not 0 <= i < len(sites)]
    if bad:
        raise ValueError(f"EncoderMoEConfig.layers={config.layers} has blocks {bad} outside the tower's "
                         f"{len(sites)} MLP blocks")
    for i in chosen:
        site = sites[i]
        if upcycle:
            moe = MoEMLP.from_dense(site.fc1, site.activation, site.fc2, noise_std=noise_std, seed=seed + i,
                                    **config.moe_kwargs())
        else:
            moe = MoEMLP(site.fc1.in_features, site.fc1.out_features, site.fc2.out_features,
                         activation=site.activation, **config.moe_kwargs())
        setattr(site.parent, site.name, moe)


def find_mlps(root: nn.Module, is_mlp, parts) -> list[MLPSite]:
    """Every submodule of ``root`` for which ``is_mlp(module)``, as sites (``parts(module) -> (fc1, fc2, act)``)."""
    sites = []
    for name, module in root.named_modules():
        if name and is_mlp(module):
            parent_name, _, attr = name.rpartition(".")
            fc1, fc2, act = parts(module)
            sites.append(MLPSite(root.get_submodule(parent_name), attr, fc1, fc2, activation_name(act)))
    return sites
