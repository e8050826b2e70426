"""The sparse-MoE layer: router, grouped experts, shared experts, MH-MoE and Residual-MoE.

Follows the taxonomy of *A Survey on Mixture of Experts* (arXiv 2407.06204):
token-choice or expert-choice routing, optional always-on shared experts
(DeepSeek-MoE, Qwen2-MoE), optional multi-head sub-tokens (MH-MoE, arXiv
2404.15045), dropless by default or capacity-limited (with separate training and
eval factors and a floor, as DeepSpeed's gate has), and optionally a dense MLP
beside the experts mixed in by a learned coefficient (Residual-MoE, arXiv
2201.05596, as DeepSpeed's ``MoE(use_residual=True)`` computes it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import nn

from moezoo.moe.config import MoEConfig
from moezoo.moe.experts import GroupedExperts
from moezoo.moe.losses import load_balancing_loss, router_z_loss
from moezoo.moe.mlp import MLP
from moezoo.moe.routers import Routing, create_router


@dataclass
class RoutingStats:
    """Per-forward routing statistics (detached).

    Attributes:
        tokens_per_expert: ``(E,)`` assignments each expert processed.
        dropped_fraction: ``()`` share of assignments dropped by capacity; for
            expert choice, the share of tokens no expert picked.
        router_entropy: ``()`` mean entropy of the router distribution, divided by
            ``log E`` (1 = uniform, 0 = one-hot).
    """

    tokens_per_expert: torch.Tensor
    dropped_fraction: torch.Tensor
    router_entropy: torch.Tensor


@dataclass
class MoEOutput:
    """What :class:`MoELayer` returns: the output and the routing behind it.

    The unweighted aux losses and the statistics are computed on first access, so
    an inference step that only needs ``hidden_states`` does not pay for them.
    """

    hidden_states: torch.Tensor
    routing: Routing
    tokens_per_expert: torch.Tensor  # (E,) assignments processed, after capacity
    num_dropped: torch.Tensor  # () assignments dropped by capacity

    @cached_property
    def aux_loss(self) -> torch.Tensor:
        """Switch load-balancing loss (0 for expert choice, which is balanced by construction).

        It counts the choices :attr:`Routing.balance_top_k` names: all of them (Switch, transformers:
        ``top_k`` at perfect balance), or only the first (DeepSpeed's top-2 gate: its ``l_aux``, 1).
        """
        if not self.routing.token_choice:
            return self.routing.probs.new_zeros(())
        return load_balancing_loss(self.routing.probs, self.routing.balance_expert_idx)

    @cached_property
    def z_loss(self) -> torch.Tensor:
        return router_z_loss(self.routing.logits)

    @cached_property
    def stats(self) -> RoutingStats:
        with torch.no_grad():
            probs = self.routing.probs
            entropy = -(probs * probs.clamp_min(1e-20).log()).sum(-1).mean() / math.log(probs.shape[-1])
            if self.routing.token_choice:
                dropped_fraction = self.num_dropped.float() / max(self.routing.expert_idx.numel(), 1)
            else:
                picked = torch.zeros(probs.shape[0], dtype=torch.bool, device=probs.device)
                picked[self.routing.token_idx] = True
                dropped_fraction = 1.0 - picked.float().mean()
        return RoutingStats(self.tokens_per_expert, dropped_fraction, entropy)


class MoELayer(nn.Module):
    """A sparse mixture-of-experts FFN.

    Example:
        >>> layer = MoELayer(MoEConfig(dim=32, expert_dim=64, num_experts=4, top_k=2))
        >>> out = layer(torch.randn(2, 5, 32))
        >>> out.hidden_states.shape, out.stats.tokens_per_expert.sum().item()
        (torch.Size([2, 5, 32]), 20)
    """

    def __init__(self, config: MoEConfig):
        super().__init__()
        self.config = config
        self.router = create_router(config)
        self.experts = GroupedExperts(config.num_experts, config.head_dim, config.expert_dim, config.activation,
                                      bias=config.expert_bias)
        if config.num_heads > 1:
            self.head_proj = nn.Linear(config.dim, config.dim, bias=False)
            self.merge_proj = nn.Linear(config.dim, config.dim, bias=False)
        if config.num_shared_experts:
            hidden = config.num_shared_experts * (config.shared_expert_dim or config.expert_dim)
            self.shared_experts = MLP(config.dim, hidden, config.activation, bias=config.expert_bias)
            if config.shared_expert_gate:
                self.shared_expert_gate = nn.Linear(config.dim, 1, bias=False)
        if config.use_residual:  # DeepSpeed's MoE(use_residual=True): its `mlp` and `coefficient`
            self.residual_mlp = MLP(config.dim, config.expert_dim, config.activation, bias=config.expert_bias)
            self.coefficient = nn.Linear(config.dim, 2)

    def capacity(self, num_tokens: int) -> int | None:
        """Assignments each expert may keep for ``num_tokens`` (sub-)tokens in the current
        train / eval mode (:meth:`MoEConfig.capacity`); None if dropless."""
        if self.router.router_name == "expert_choice":
            return None
        return self.config.capacity(num_tokens, self.training)

    def forward(self, x: torch.Tensor, dispatch: str | None = None) -> MoEOutput:
        """Route and run ``x`` of shape ``(..., dim)``.

        Args:
            x: input tokens.
            dispatch: override ``config.dispatch`` for this call (e.g. ``"loop"``).
        """
        c = self.config
        x_TD = x.reshape(-1, c.dim)
        tokens = self.head_proj(x_TD).reshape(-1, c.head_dim) if c.num_heads > 1 else x_TD  # (T*h, D/h)
        routing = self.router(tokens)
        y, counts, dropped = self.experts(tokens, routing, self.capacity(tokens.shape[0]), dispatch or c.dispatch)
        if c.num_heads > 1:
            y = self.merge_proj(y.reshape(-1, c.dim))
        if c.num_shared_experts:
            shared = self.shared_experts(x_TD)
            if c.shared_expert_gate:
                shared = torch.sigmoid(self.shared_expert_gate(x_TD)) * shared
            y = y + shared
        if c.use_residual:
            coef = self.coefficient(x_TD).softmax(-1)  # (T, 2)
            y = y * coef[:, 0:1] + self.residual_mlp(x_TD) * coef[:, 1:]
        return MoEOutput(y.reshape(x.shape), routing, counts, dropped)
