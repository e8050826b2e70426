"""A sparse mixture of two-layer MLPs *with biases*: the MoE for connectors and vision towers.

The LLM's experts (:class:`~moezoo.moe.MoELayer`) are bias-free SwiGLU FFNs of width
``dim -> dim``. The MLPs that LibMoE and CuMo turn into experts elsewhere are not: a
LLaVA projector (``mlp2x_gelu``) maps ``in_dim -> out_dim`` with biases and exact GELU,
a CLIP tower's MLP uses biases and quick-GELU, SigLIP's the tanh GELU. :class:`MoEMLP`
holds ``E`` such MLPs, routed by any router of :mod:`moezoo.moe` (so LibMoE's router
family, cosine, perturbed cosine, sigmoid, hyper, ..., all work here), top-k and dropless.
:meth:`MoEMLP.from_dense` is sparse upcycling (Komatsuzaki et al. 2022, arXiv 2212.05055;
LibMoE, arXiv 2411.00918; CuMo, arXiv 2405.05949).

These sites see few tokens (a few hundred image tokens), so the dispatch is the plain
one: sort the assignments by expert, run each expert on its slice, ``index_add_`` back.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe.activations import ACTIVATIONS, activation_fn, quick_gelu  # noqa: F401  (re-exported)
from moezoo.moe.config import MoEConfig
from moezoo.moe.dispatch import sort_by_expert
from moezoo.moe.experts import expert_copies
from moezoo.moe.layer import MoEOutput
from moezoo.moe.recording import record_site
from moezoo.moe.routers import create_router, list_routers
from moezoo.moe.routers.base import LIBMOE_CONVENTIONS
from moezoo.utils.checks import check_min, require
from moezoo.utils.config import Config


class Activation(nn.Module):
    """An activation of :data:`ACTIVATIONS` as a parameter-free module (for ``nn.Sequential``-style code)."""

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.fn = activation_fn(name)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return repr(self.name)


@dataclass
class ExpertsConfig(Config):
    """How the routed MLP experts outside the LLM (a connector's, a vision tower's) are set up.

    Args:
        num_experts / top_k: ``E`` experts, ``k`` per token.
        router: a name of :func:`moezoo.moe.list_routers` (LibMoE's: ``softmax``, ``cosine``,
            ``perturbed_cosine``, ``sigmoid``, ``hyper``, ...).
        aux_loss_coef / z_loss_coef: the weights the owning model gives the router losses.
        norm_topk_prob: renormalise the kept weights (the exact upcycled start needs it).
        router_convention / router_dim: as :class:`~moezoo.moe.MoEConfig` (``"libmoe"`` follows
            LibMoE's released routers where they differ from ours, ``"libmoe_v1"`` those of LibMoE v1.x).
        num_shared_experts: always-on MLPs beside the routed ones (LibMoE's ``smoe_share``: one), with
            the experts' widths; see :class:`MoEMLP` for how their output is mixed in.

    Example:
        >>> ExpertsConfig(num_experts=4, top_k=6)
        Traceback (most recent call last):
        ...
        ValueError: ExpertsConfig.top_k=6 must be in [1, num_experts=4]
    """

    num_experts: int = 4
    top_k: int = 2
    router: str = "softmax"
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.0
    norm_topk_prob: bool = True
    router_convention: str = "moezoo"
    router_dim: int | None = None
    num_shared_experts: int = 0

    def __post_init__(self) -> None:
        check_min(self, num_experts=1)
        require(self, "num_shared_experts", self.num_shared_experts >= 0, "must be >= 0")
        require(self, "top_k", 1 <= self.top_k <= self.num_experts, f"must be in [1, num_experts={self.num_experts}]")
        require(self, "router", self.router in list_routers(), f"is unknown; known routers: {list_routers()}")
        for name in ("aux_loss_coef", "z_loss_coef"):
            require(self, name, getattr(self, name) >= 0, "must be >= 0")

    def moe_kwargs(self) -> dict[str, Any]:
        """The :class:`MoEMLP` keyword arguments beyond the widths and the activation."""
        return {"num_experts": self.num_experts, "top_k": self.top_k, "router": self.router,
                "aux_loss_coef": self.aux_loss_coef, "z_loss_coef": self.z_loss_coef,
                "norm_topk_prob": self.norm_topk_prob, "router_convention": self.router_convention,
                "router_dim": self.router_dim, "num_shared_experts": self.num_shared_experts}


class MoEMLP(nn.Module):
    """``E`` two-layer MLPs with biases, ``in_dim -> hidden_dim -> out_dim``, behind a router.

    Each token goes through its ``top_k`` experts (dropless) and their outputs are summed
    with the router's weights: ``y = sum_j w_j * fc2_j(act(fc1_j(x)))``. With
    ``num_shared_experts = n`` an always-on MLP of hidden width ``n * hidden_dim`` (``shared_fc1``,
    ``shared_fc2``) is added, ``y + shared(x)`` (DeepSeek-MoE); with ``router_convention="libmoe"`` the
    two are averaged, ``0.5 * shared(x) + 0.5 * y``, as LibMoE's ``smoe_share`` mixes them
    (``MoEShareLayer.forward`` in ``moe_model/model/moe/shard_smoe.py``).

    **Contract with the owning model.** :meth:`forward` returns a plain tensor, so an
    ``MoEMLP`` can replace the ``nn.Module`` MLP inside a transformers / timm / open_clip
    block. Its routing goes to the forward's :class:`~moezoo.moe.recording.SiteRecorder`, if
    one is open: each call adds a :class:`~moezoo.moe.recording.SiteOutput` (site name, pass,
    call index and the :class:`~moezoo.moe.MoEOutput`: ``hidden_states`` (the output as
    ``(T, out_dim)``, tokens flattened as the routing counts them), ``routing``,
    ``tokens_per_expert``, ``num_dropped``, and ``aux_loss``, ``z_loss``, ``stats`` computed
    lazily when read). The owning model opens the recorder around its forward, returns the
    records with its output and, in training, adds every call's
    ``config.aux_loss_coef * aux_loss + config.z_loss_coef * z_loss`` to the loss. The module
    keeps nothing between calls, so a site that runs twice in a forward (a tower encoding
    images, then video frames) loses neither call; outside a recorder nothing is kept.

    Args:
        in_dim / hidden_dim / out_dim: widths; ``out_dim`` defaults to ``in_dim``.
        num_experts / top_k: ``E`` experts, ``k`` per token.
        activation: a name of :data:`ACTIVATIONS` (``"gelu"``, ``"gelu_tanh"``, ``"quick_gelu"``, ...).
        router: a name of :func:`moezoo.moe.list_routers`.
        **moe_kwargs: further :class:`~moezoo.moe.MoEConfig` fields the router reads
            (``norm_topk_prob``, ``router_dim``, ``aux_loss_coef``, ``z_loss_coef``, ...).
            ``num_shared_experts`` adds always-on MLPs (see above). MH-MoE heads, a residual MLP and
            capacity dropping are not supported here.

    Attributes:
        config: the router's :class:`~moezoo.moe.MoEConfig` (``dim=in_dim``, ``expert_dim=hidden_dim``);
            its loss coefficients are the ones the owning model applies.
        fc1_weight ``(E, hidden, in)``, fc1_bias ``(E, hidden)``, fc2_weight ``(E, out, hidden)``,
        fc2_bias ``(E, out)``: the experts, fused; expert ``e`` is ``nn.Linear``-shaped slices ``[e]``.

    Example:
        >>> moe = MoEMLP(16, 32, 24, num_experts=4, top_k=2, router="cosine")
        >>> moe(torch.randn(2, 5, 16)).shape
        torch.Size([2, 5, 24])
        >>> from moezoo.moe.recording import SiteRecorder
        >>> with SiteRecorder() as recorder:
        ...     _ = moe(torch.randn(10, 16))
        >>> recorder.records[0].output.tokens_per_expert.sum().item()  # 10 tokens x top-2
        20
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None, num_experts: int = 8,
                 top_k: int = 2, activation: str = "gelu", router: str = "softmax", **moe_kwargs: Any):
        super().__init__()
        out_dim = in_dim if out_dim is None else out_dim
        # MoEConfig.activation is the LLM experts' setting; ours is `activation` below.
        self.config = MoEConfig(dim=in_dim, expert_dim=hidden_dim, num_experts=num_experts, top_k=top_k,
                                router=router, activation="gelu", **moe_kwargs)
        c = self.config
        if c.num_heads != 1 or c.use_residual or c.shared_expert_gate:
            raise ValueError(f"MoEMLP supports num_heads=1, use_residual=False and shared_expert_gate=False, got "
                             f"num_heads={c.num_heads}, use_residual={c.use_residual}, "
                             f"shared_expert_gate={c.shared_expert_gate}")
        if c.capacity_factor is not None and router != "expert_choice":
            raise ValueError(f"MoEMLP is dropless: capacity_factor must be None for router={router!r}, "
                             f"got {c.capacity_factor} (only expert_choice reads it, as its capacity)")
        self.in_dim, self.hidden_dim, self.out_dim = in_dim, hidden_dim, out_dim
        self.activation = activation
        self.act = activation_fn(activation)
        self.router = create_router(c)
        self.fc1_weight = nn.Parameter(torch.empty(num_experts, hidden_dim, in_dim))
        self.fc1_bias = nn.Parameter(torch.empty(num_experts, hidden_dim))
        self.fc2_weight = nn.Parameter(torch.empty(num_experts, out_dim, hidden_dim))
        self.fc2_bias = nn.Parameter(torch.empty(num_experts, out_dim))
        # nn.Linear's default init per expert (uniform, bound 1/sqrt(fan_in)), as a fresh projector has.
        for p, fan_in in ((self.fc1_weight, in_dim), (self.fc1_bias, in_dim),
                          (self.fc2_weight, hidden_dim), (self.fc2_bias, hidden_dim)):
            nn.init.uniform_(p, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        if c.num_shared_experts:
            self.shared_fc1 = nn.Linear(in_dim, c.num_shared_experts * hidden_dim)
            self.shared_fc2 = nn.Linear(c.num_shared_experts * hidden_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (..., in_dim)`` -> ``(..., out_dim)``; the routing goes to the open recorder (see the class)."""
        if x.shape[-1] != self.in_dim:
            raise ValueError(f"expected input of shape (..., {self.in_dim}), got {tuple(x.shape)}")
        x_TD = x.reshape(-1, self.in_dim)
        routing = self.router(x_TD)
        d = sort_by_expert(routing, self.config.num_experts)
        ys, start = [], 0
        # One host sync for the slice bounds: cheap at the token counts these sites see.
        for e, n in enumerate(d.counts.tolist()):
            if n:
                h = self.act(F.linear(x_TD[d.token_idx[start:start + n]], self.fc1_weight[e], self.fc1_bias[e]))
                ys.append(F.linear(h, self.fc2_weight[e], self.fc2_bias[e]))
                start += n
        out_TO = x_TD.new_zeros(x_TD.shape[0], self.out_dim, dtype=self.fc2_weight.dtype)
        if ys:
            y_NO = torch.cat(ys)
            out_TO.index_add_(0, d.token_idx, y_NO * d.weight[:, None].to(y_NO.dtype))
        if self.config.num_shared_experts:
            shared_TO = self.shared_fc2(self.act(self.shared_fc1(x_TD)))
            if self.config.router_convention in LIBMOE_CONVENTIONS:
                out_TO = shared_TO * 0.5 + out_TO * 0.5
            else:
                out_TO = out_TO + shared_TO
        out = out_TO.reshape(*x.shape[:-1], self.out_dim)
        # The record keeps the flat (T, out_dim) base, in the routing's token order: not a view, so
        # FSDP2, which hooks every tensor of a unit's output, has no view to warn about.
        record_site(self, MoEOutput(out_TO, routing, d.counts, d.num_dropped))
        return out

    def extra_repr(self) -> str:
        c = self.config
        return (f"in_dim={self.in_dim}, hidden_dim={self.hidden_dim}, out_dim={self.out_dim}, "
                f"num_experts={c.num_experts}, top_k={c.top_k}, activation={self.activation!r}, router={c.router!r}")

    @classmethod
    def from_dense(cls, fc1: nn.Linear, act: str, fc2: nn.Linear, num_experts: int, top_k: int,
                   router: str = "softmax", noise_std: float = 0.0, norm_topk_prob: bool = True, seed: int = 0,
                   **moe_kwargs: Any) -> MoEMLP:
        """Sparse upcycling of the dense MLP ``fc2(act(fc1(x)))``: every expert a copy, a fresh router.

        With identical copies (``noise_std=0``) and weights that sum to one (``norm_topk_prob``
        and ``top_k >= 2``, or a router whose top-1 weight is 1) the output equals the dense MLP's.

        Args:
            fc1 / fc2: the dense MLP's layers (a missing bias counts as zero).
            act: its activation's name (:data:`ACTIVATIONS`; transformers' ``hidden_act`` names work).
            num_experts / top_k / router / norm_topk_prob / **moe_kwargs: as in :class:`MoEMLP`.
            noise_std: each copy gets Gaussian noise of ``noise_std`` times its tensor's standard
                deviation (scale-free, as :func:`moezoo.upcycle`); 0 keeps the copies identical.
            seed: seeds the router initialisation and the noise.

        Example:
            >>> fc1, fc2 = nn.Linear(8, 16), nn.Linear(16, 4)
            >>> moe = MoEMLP.from_dense(fc1, "gelu", fc2, num_experts=4, top_k=2)
            >>> x = torch.randn(3, 8)
            >>> torch.allclose(moe(x), fc2(F.gelu(fc1(x))), atol=1e-6)
            True
        """
        if fc2.in_features != fc1.out_features:
            raise ValueError(f"fc2 must take fc1's {fc1.out_features} features, got in_features={fc2.in_features}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            moe = cls(fc1.in_features, fc1.out_features, fc2.out_features, num_experts, top_k, act, router,
                      norm_topk_prob=norm_topk_prob, **moe_kwargs)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for dense, w, b in ((fc1, moe.fc1_weight, moe.fc1_bias), (fc2, moe.fc2_weight, moe.fc2_bias)):
                w.copy_(expert_copies(dense.weight, num_experts, noise_std, gen))
                b.copy_(expert_copies(dense.bias, num_experts, noise_std, gen) if dense.bias is not None else 0.0)
            if moe.config.num_shared_experts == 1:  # the shared expert is one more copy (LibMoE's upcycling)
                for dense, shared in ((fc1, moe.shared_fc1), (fc2, moe.shared_fc2)):
                    shared.weight.copy_(dense.weight)
                    shared.bias.copy_(dense.bias if dense.bias is not None else 0.0)
            elif moe.config.num_shared_experts:
                raise ValueError("from_dense upcycles into at most one shared expert, got "
                                 f"num_shared_experts={moe.config.num_shared_experts}")
        return moe.to(device=fc1.weight.device, dtype=fc1.weight.dtype)
