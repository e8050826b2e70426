"""Typed configuration of one sparse-MoE layer.

Every invariant is checked in ``__post_init__`` so a bad config fails when it is
built, with a message naming the field, not deep inside a forward pass.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from moezoo.moe.activations import ACTIVATIONS as ELEMENTWISE_ACTIVATIONS
from moezoo.utils.checks import require

# "swiglu" is gated (two input projections); every other name is an element-wise activation.
ACTIVATIONS = ("swiglu", *ELEMENTWISE_ACTIVATIONS)
DISPATCHES = ("auto", "fused", "grouped_mm", "loop")
# Whose equations a router follows where implementations disagree (see MoEConfig.router_convention).
ROUTER_CONVENTIONS = ("moezoo", "libmoe", "libmoe_v1")


@dataclass
class MoEConfig:
    """Configuration of a :class:`~moezoo.moe.MoELayer`.

    Args:
        dim: model (token) width.
        expert_dim: hidden width of each routed expert (``d_ff``).
        num_experts: number of routed experts ``E``.
        top_k: experts per token ``k`` (for ``expert_choice``: the average, which sets capacity).
        router: a name from :func:`moezoo.moe.list_routers`.
        num_shared_experts: always-on experts (DeepSeek-MoE / Qwen2-MoE); 0 disables them.
        shared_expert_dim: hidden width of each shared expert; defaults to ``expert_dim``.
        shared_expert_gate: gate the shared experts with ``sigmoid(x @ w)`` (Qwen2-MoE).
        num_heads: MH-MoE heads; ``> 1`` splits each token into ``num_heads`` sub-tokens.
        capacity_factor: ``None`` is dropless; otherwise each expert keeps at most
            ``max(min_capacity, ceil(tokens / num_experts * capacity_factor * top_k))`` assignments
            (:meth:`capacity`), the first ones in the router's priority order. DeepSpeed's
            ``drop_tokens=False`` is ``capacity_factor=None``.
        eval_capacity_factor: the factor in eval mode (DeepSpeed's ``eval_capacity_factor``);
            ``None`` uses ``capacity_factor`` in both modes. Needs ``capacity_factor``.
        min_capacity: the least capacity of an expert, whatever the factor (DeepSpeed's
            ``min_capacity``); the default 1 only keeps a small batch from getting capacity 0.
        aux_loss_coef: weight of the Switch load-balancing loss (applied by the caller).
        z_loss_coef: weight of the router z-loss (applied by the caller).
        activation: the experts' (and shared / residual MLPs') activation: ``"swiglu"`` (default;
            gated SiLU, fused ``gate_up_proj``) or an element-wise one of
            :data:`moezoo.moe.activations.ACTIVATIONS` (``"gelu"``, ``"gelu_tanh"`` for Phi-2's
            ``gelu_new``, ``"quick_gelu"``, ``"silu"``, ``"relu"``, ...; fused ``up_proj``).
        expert_bias: the experts' projections carry biases (``up_proj_bias`` / ``gate_up_proj_bias``
            and ``down_proj_bias``, as transformers' GPT-OSS names them), and so do the shared and
            residual MLPs. MoE-LLaVA-Phi2's experts are Phi's ``fc1`` / ``fc2`` with biases.
        use_residual: Residual-MoE (Rajbhandari et al. 2022, arXiv 2201.05596; DeepSpeed's
            ``MoE(use_residual=True)``): a dense MLP of width ``expert_dim`` runs beside the
            experts, and a learned ``coefficient`` (a biased ``Linear(dim, 2)``, softmaxed per
            token) mixes the two outputs: ``y = moe * c_0 + mlp * c_1``.
        norm_topk_prob: renormalise the top-k weights to sum to one (Mixtral, OLMoE-off).
        router_dim: low-rank routing width for ``cosine``/``perturbed_cosine`` and the
            embedding width of ``hyper``; defaults to ``max(num_experts // 2, 2)`` / 64.
        router_noise_std: noise scale of the noisy routers in training.
        bias_update_rate: aux-loss-free balancing step of the ``sigmoid`` router (0 disables).
        routed_scaling_factor: multiplies the routed weights (DeepSeek-V3).
        dispatch: ``"auto"`` (fused loop on CPU, grouped GEMM on CUDA), ``"fused"``,
            ``"grouped_mm"`` or ``"loop"`` (the mask-loop reference).
        router_convention: ``"moezoo"`` (default) or ``"libmoe"``: follow the released code of LibMoE
            (arXiv 2411.00918, ``moe_model/model/moe/*.py``) where it differs from the papers'
            equations moezoo implements: renormalised top-1, the first choice only in the balance
            loss, X-MoE's fixed temperature 0.3 and expert embeddings of norm 1.5, the softmax over
            the kept top-k probabilities of the cosine routers, a sigmoid router without selection
            bias, a biased ``D -> D/4`` hypernetwork. Each router's docstring lists the points.
            ``"libmoe_v1"``: LibMoE v1.x's routers (commit 766ddae), which differ from v2.0's in
            ``cosine`` / ``perturbed_cosine`` (a cosine of ``x`` and a full-width biased gate, no
            temperature) and ``sigmoid`` (a biased gate, top-k of the softmax of the sigmoid); the
            other routers behave as under ``"libmoe"``.

    Example:
        >>> MoEConfig(dim=64, expert_dim=128, num_experts=8, top_k=2).router
        'softmax'
        >>> MoEConfig(dim=64, expert_dim=128, num_experts=4, top_k=8)
        Traceback (most recent call last):
        ...
        ValueError: MoEConfig.top_k=8 must be in [1, num_experts=4]
    """

    dim: int
    expert_dim: int
    num_experts: int = 8
    top_k: int = 2
    router: str = "softmax"
    num_shared_experts: int = 0
    shared_expert_dim: int | None = None
    shared_expert_gate: bool = False
    num_heads: int = 1
    capacity_factor: float | None = None
    eval_capacity_factor: float | None = None
    min_capacity: int = 1
    aux_loss_coef: float = 0.01
    z_loss_coef: float = 0.0
    activation: str = "swiglu"
    expert_bias: bool = False
    use_residual: bool = False
    norm_topk_prob: bool = True
    router_dim: int | None = None
    router_noise_std: float = 1.0
    bias_update_rate: float = 1e-3
    routed_scaling_factor: float = 1.0
    dispatch: str = "auto"
    router_convention: str = "moezoo"

    def __post_init__(self) -> None:
        from moezoo.moe.routers import list_routers

        for name in ("dim", "expert_dim", "num_experts", "num_heads"):
            require(self, name, getattr(self, name) >= 1, "must be >= 1")
        require(self, "top_k", 1 <= self.top_k <= self.num_experts,
                f"must be in [1, num_experts={self.num_experts}]")
        require(self, "dim", self.dim % self.num_heads == 0,
                f"must be divisible by num_heads={self.num_heads}")
        require(self, "router", self.router in list_routers(),
                f"is unknown; known routers: {', '.join(list_routers())}")
        require(self, "activation", self.activation in ACTIVATIONS, f"must be one of {ACTIVATIONS}")
        require(self, "dispatch", self.dispatch in DISPATCHES, f"must be one of {DISPATCHES}")
        require(self, "router_convention", self.router_convention in ROUTER_CONVENTIONS,
                f"must be one of {ROUTER_CONVENTIONS}")
        require(self, "num_shared_experts", self.num_shared_experts >= 0, "must be >= 0")
        if self.shared_expert_dim is not None:
            require(self, "shared_expert_dim", self.shared_expert_dim >= 1, "must be >= 1")
        if self.capacity_factor is not None:
            require(self, "capacity_factor", self.capacity_factor > 0, "must be > 0 or None (dropless)")
        if self.eval_capacity_factor is not None:
            require(self, "eval_capacity_factor", self.capacity_factor is not None,
                    "needs capacity_factor (None is dropless in training and eval alike)")
            require(self, "eval_capacity_factor", self.eval_capacity_factor > 0, "must be > 0 or None")
        require(self, "min_capacity", self.min_capacity >= 0, "must be >= 0")
        if self.router == "deepspeed_top2":
            require(self, "top_k", self.top_k == 2, "must be 2 for router='deepspeed_top2' (DeepSpeed's top2gating)")
            require(self, "norm_topk_prob", self.norm_topk_prob,
                    "must be True for router='deepspeed_top2' (DeepSpeed always renormalises the kept two)")
        if self.router_dim is not None:
            require(self, "router_dim", self.router_dim >= 1, "must be >= 1")
        for name in ("aux_loss_coef", "z_loss_coef", "router_noise_std", "bias_update_rate"):
            require(self, name, getattr(self, name) >= 0, "must be >= 0")

    def capacity(self, num_tokens: int, training: bool) -> int | None:
        """Assignments each expert may keep out of ``num_tokens`` routed (sub-)tokens; ``None`` if dropless.

        ``max(min_capacity, ceil(num_tokens / num_experts * factor * top_k))`` with ``factor`` the
        ``capacity_factor`` in training and the ``eval_capacity_factor`` (if set) in eval. The product
        is taken in float32, as DeepSpeed's ``_capacity`` takes it (``deepspeed/moe/sharded_moe.py``),
        so that a factor like 1.1 gives the capacity DeepSpeed gives, not one more.

        Example:
            >>> c = MoEConfig(dim=8, expert_dim=8, num_experts=4, top_k=2, capacity_factor=1.0,
            ...               eval_capacity_factor=2.0, min_capacity=4)
            >>> c.capacity(10, training=True), c.capacity(10, training=False), c.capacity(2, training=True)
            (5, 10, 4)
        """
        factor = self.capacity_factor
        if factor is None:
            return None
        if not training and self.eval_capacity_factor is not None:
            factor = self.eval_capacity_factor
        scaled = (num_tokens / self.num_experts) * torch.tensor(factor * self.top_k)  # float32, as DeepSpeed
        return max(self.min_capacity, math.ceil(scaled.item()))

    @property
    def head_dim(self) -> int:
        """Width of the (sub-)tokens the router and experts see: ``dim // num_heads``."""
        return self.dim // self.num_heads

    def replace(self, **changes) -> MoEConfig:
        """A copy with ``changes`` applied (and re-validated)."""
        return dataclasses.replace(self, **changes)
