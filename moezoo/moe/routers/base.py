"""The router machinery: the :class:`Routing` a router returns, the name registry, and
the top-k token choice the token-choice routers share. The routers themselves live in
the sibling modules and register on import of :mod:`moezoo.moe.routers`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

if TYPE_CHECKING:
    from moezoo.moe.config import MoEConfig

_ROUTERS: dict[str, type[nn.Module]] = {}
# The router conventions that follow LibMoE's code (MoEConfig.router_convention): v2.0 and v1.x share its
# top-k, renormalisation and balance loss.
LIBMOE_CONVENTIONS = ("libmoe", "libmoe_v1")


@dataclass
class Routing:
    """What a router decided for ``T`` tokens.

    Attributes:
        token_idx: ``(N,)`` token of each assignment.
        expert_idx: ``(N,)`` expert of each assignment.
        weight: ``(N,)`` combine weight of each assignment (differentiable).
        logits: ``(T, E)`` raw router logits, for the z-loss.
        probs: ``(T, E)`` router probabilities, the ``P`` of the load-balancing loss.
        token_choice: False for expert choice (no balancing loss, no capacity drop).
        balance_top_k: how many of each token's choices the load-balancing loss counts: the
            first ``T * balance_top_k`` assignments (they are rank-major). ``None`` counts all of
            them (Switch, transformers); DeepSpeed's top-2 gate counts only the first choice (GShard).
    """

    token_idx: torch.Tensor
    expert_idx: torch.Tensor
    weight: torch.Tensor
    logits: torch.Tensor
    probs: torch.Tensor
    token_choice: bool = True
    balance_top_k: int | None = None

    @classmethod
    def rank_major(cls, idx_TK: torch.Tensor, weight_TK: torch.Tensor, logits_TE: torch.Tensor,
                   probs_TE: torch.Tensor, balance_top_k: int | None = None) -> Routing:
        """The token-choice routing of each token's ``k`` choices ``idx_TK`` with weights ``weight_TK``, laid out
        rank-major: every token's first choice, then every second choice, ...

        Example:
            >>> r = Routing.rank_major(torch.tensor([[2, 0], [1, 3]]), torch.tensor([[.75, .25], [.5, .5]]),
            ...                        torch.zeros(2, 4), torch.zeros(2, 4))
            >>> r.token_idx.tolist(), r.expert_idx.tolist(), r.weight.tolist()
            ([0, 1, 0, 1], [2, 1, 0, 3], [0.75, 0.5, 0.25, 0.5])
        """
        T, k = idx_TK.shape
        token_idx = torch.arange(T, device=idx_TK.device).repeat(k)
        return cls(token_idx, idx_TK.t().reshape(-1), weight_TK.t().reshape(-1), logits_TE, probs_TE,
                   balance_top_k=balance_top_k)

    @property
    def balance_expert_idx(self) -> torch.Tensor:
        """The experts of the assignments the load-balancing loss counts (see ``balance_top_k``)."""
        if self.balance_top_k is None:
            return self.expert_idx
        return self.expert_idx[: self.probs.shape[0] * self.balance_top_k]


def expert_counts(expert_idx: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Assignments per expert, ``(E,)`` int64, computed on device with no host sync.

    (``torch.bincount`` would need the maximum on the host to size its output.)

    Example:
        >>> expert_counts(torch.tensor([2, 0, 2]), 4)
        tensor([1, 0, 2, 0])
    """
    return torch.zeros(num_experts, dtype=torch.long, device=expert_idx.device).scatter_add_(
        0, expert_idx, torch.ones_like(expert_idx, dtype=torch.long))


def register_router(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a router under ``name``."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        _ROUTERS[name] = cls
        cls.router_name = name
        return cls

    return add


def list_routers() -> list[str]:
    """Names accepted by ``MoEConfig.router``.

    Example:
        >>> "expert_choice" in list_routers()
        True
    """
    return sorted(_ROUTERS)


def create_router(config: MoEConfig) -> nn.Module:
    """Build the router ``config.router`` for ``config``."""
    try:
        cls = _ROUTERS[config.router]
    except KeyError:
        close = difflib.get_close_matches(config.router, _ROUTERS, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown router {config.router!r}; known routers: {list_routers()}.{hint}") from None
    return cls(config)


def token_choice(logits_TE: torch.Tensor, scores_TE: torch.Tensor, probs_TE: torch.Tensor,
                 config: MoEConfig, select_TE: torch.Tensor | None = None) -> Routing:
    """Top-k token choice shared by the token-choice routers.

    ``scores`` give the combine weights, ``select`` (default ``scores``) picks the
    experts; they differ only for the sigmoid router's balancing bias.

    With ``config.router_convention`` ``"libmoe"`` or ``"libmoe_v1"`` a single kept weight is renormalised too (to 1:
    LibMoE's ``weights / weights.sum(-1)`` runs for any ``num_selected``), and the balance loss
    counts only each token's first choice (``MoeLayer.balanceloss`` in LibMoE's ``moe/moe.py`` one-hots
    ``selected_experts[..., 0]``; v1.x's ``moe/moe.py`` at commit 766ddae does the same).
    """
    k = config.top_k
    libmoe = config.router_convention in LIBMOE_CONVENTIONS
    _, idx_TK = torch.topk(scores_TE if select_TE is None else select_TE, k, dim=-1)
    weight_TK = scores_TE.gather(-1, idx_TK)
    if config.norm_topk_prob and (k > 1 or libmoe):
        weight_TK = weight_TK / weight_TK.sum(-1, keepdim=True).clamp_min(1e-20)
    if config.routed_scaling_factor != 1.0:
        weight_TK = weight_TK * config.routed_scaling_factor
    return Routing.rank_major(idx_TK, weight_TK, logits_TE, probs_TE, balance_top_k=1 if libmoe else None)

