"""Auxiliary router losses. Both are returned unweighted; the caller applies the
coefficients (``MoEConfig.aux_loss_coef``, ``MoEConfig.z_loss_coef``)."""

from __future__ import annotations

import torch

from moezoo.moe.routers import expert_counts


def load_balancing_loss(probs_TE: torch.Tensor, expert_idx: torch.Tensor, token_idx: torch.Tensor | None = None,
                        token_weight_T: torch.Tensor | None = None) -> torch.Tensor:
    """Switch load-balancing loss ``E * sum_i f_i * P_i`` (Fedus et al. 2021, eq. 4).

    ``f_i`` is the fraction of tokens routed to expert ``i`` (over all ``k`` slots,
    counted before any capacity drop) and ``P_i`` the mean router probability of
    expert ``i``. ``probs_TE`` must already be probabilities: applying a softmax to
    them again (an old transformers bug) flattens ``P`` and weakens the loss.
    At perfect balance it equals ``top_k``, the same convention as transformers'
    ``load_balancing_loss_func``, so coefficients carry over.

    Args:
        probs_TE: ``(T, E)`` router probabilities.
        expert_idx: ``(N,)`` expert of each assignment.
        token_idx: ``(N,)`` token of each assignment; needed with ``token_weight_T``.
        token_weight_T: ``(T,)`` weight of each token in both averages, e.g. 0 for padding.

    Example:
        >>> probs = torch.tensor([[0.75, 0.25], [0.25, 0.75]])
        >>> load_balancing_loss(probs, torch.tensor([0, 1]))
        tensor(1.)
    """
    num_tokens, num_experts = probs_TE.shape
    if token_weight_T is None:
        f_E = expert_counts(expert_idx, num_experts).to(probs_TE.dtype) / num_tokens
        P_E = probs_TE.mean(0)
    else:
        w_T = token_weight_T.to(probs_TE.dtype)
        total = w_T.sum()
        f_E = probs_TE.new_zeros(num_experts).index_add_(0, expert_idx, w_T[token_idx]) / total
        P_E = (probs_TE * w_T[:, None]).sum(0) / total
    return num_experts * (f_E * P_E).sum()


def router_z_loss(logits_TE: torch.Tensor) -> torch.Tensor:
    """Router z-loss ``mean_t logsumexp(logits_t)^2`` (ST-MoE, Zoph et al. 2022).

    Example:
        >>> router_z_loss(torch.zeros(3, 4))  # log(4)^2
        tensor(1.9218)
    """
    return torch.logsumexp(logits_TE.float(), dim=-1).square().mean()
