"""Auxiliary router losses. Both are returned unweighted; the caller applies the
coefficients (``MoEConfig.aux_loss_coef``, ``MoEConfig.z_loss_coef``).

Given a data-parallel process ``group``, the statistics behind them are summed over the
group's ranks first (Megatron-Core's global load balancing), so that data-parallel ranks
optimise the loss of the global batch rather than the average of per-rank losses; see
:func:`data_parallel_sum`.
"""

from __future__ import annotations

from typing import Any

import torch

from moezoo.moe.routers import expert_counts


def data_parallel_sum(local: torch.Tensor, group: Any) -> torch.Tensor:
    """``local`` summed over the ranks of the process ``group``, differentiable for data parallelism.

    The value is the global sum on every rank. The gradient is ``world_size`` times the
    gradient of the local term: DDP and FSDP *average* the ranks' gradients, so the
    average of these gradients is exactly the gradient of the global sum, and a loss built
    from global sums matches the one-process loss on the whole batch in value and gradient.
    (Megatron-Core sums the gradients instead; averaging is what PyTorch's wrappers do.)

    Args:
        local: this rank's partial sum (any shape).
        group: a ``torch.distributed`` process group (``None`` inside it means the world).
    """
    import torch.distributed as dist

    total = local.detach().clone()
    dist.all_reduce(total, group=group)
    if not local.requires_grad:
        return total
    scaled = local * dist.get_world_size(group)
    return scaled + (total - scaled).detach()


def load_balancing_loss(probs_TE: torch.Tensor, expert_idx: torch.Tensor, token_idx: torch.Tensor | None = None,
                        token_weight_T: torch.Tensor | None = None, group: Any = None) -> torch.Tensor:
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
        group: a data-parallel process group: ``f`` and ``P`` are then averaged over the
            tokens of all its ranks (see :func:`data_parallel_sum`).

    Example:
        >>> probs = torch.tensor([[0.75, 0.25], [0.25, 0.75]])
        >>> load_balancing_loss(probs, torch.tensor([0, 1]))
        tensor(1.)
    """
    num_tokens, num_experts = probs_TE.shape
    if group is not None:
        w_T = probs_TE.new_ones(num_tokens) if token_weight_T is None else token_weight_T.to(probs_TE.dtype)
        w_N = probs_TE.new_ones(expert_idx.numel()) if token_idx is None else w_T[token_idx]
        stats = torch.cat([probs_TE.new_zeros(num_experts).index_add_(0, expert_idx, w_N), w_T.sum()[None]])
        stats = data_parallel_sum(stats, group)  # global (f numerators, token count): no gradient
        P_E = data_parallel_sum((probs_TE * w_T[:, None]).sum(0), group) / stats[-1]
        return num_experts * (stats[:-1] / stats[-1] * P_E).sum()
    if token_weight_T is None:
        f_E = expert_counts(expert_idx, num_experts).to(probs_TE.dtype) / num_tokens
        P_E = probs_TE.mean(0)
    else:
        w_T = token_weight_T.to(probs_TE.dtype)
        total = w_T.sum()
        f_E = probs_TE.new_zeros(num_experts).index_add_(0, expert_idx, w_T[token_idx]) / total
        P_E = (probs_TE * w_T[:, None]).sum(0) / total
    return num_experts * (f_E * P_E).sum()


def router_z_loss(logits_TE: torch.Tensor, group: Any = None) -> torch.Tensor:
    """Router z-loss ``mean_t logsumexp(logits_t)^2`` (ST-MoE, Zoph et al. 2022).

    With a data-parallel ``group`` the mean runs over the tokens of all its ranks.

    Example:
        >>> router_z_loss(torch.zeros(3, 4))  # log(4)^2
        tensor(1.9218)
    """
    z_T = torch.logsumexp(logits_TE.float(), dim=-1).square()
    if group is None:
        return z_T.mean()
    count = data_parallel_sum(z_T.new_tensor(float(z_T.numel())), group)
    return data_parallel_sum(z_T.sum(), group) / count
