"""Routing statistics of one MoE site, computed from its router's output over ``T`` tokens.

The definitions are DESIGN.md's (``routing_stats``, issue J builds the rest around these):

- ``topk_counts`` (E,): how many tokens have each expert among their ``k`` chosen ones, counted from
  ``expert_idx`` (T, k) when it is given (the sigmoid router's balancing bias and capacity drops make
  the chosen experts differ from the top-k of ``probs``), else from the top-k of ``probs`` with ties
  going to the lower expert index;
- ``topk_frequency`` = top-k counts / (k·T): each expert's share of the assignments (sums to 1);
- ``load_entropy`` = H(topk_frequency) / ln E: 1 when every expert gets the same share, 0 when one
  expert gets them all.

Example:
    >>> import torch
    >>> probs = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1]])
    >>> topk_counts(probs, top_k=2).tolist()
    [1, 2, 1, 0]
    >>> round(load_entropy(probs, top_k=2), 4)  # shares 1/4, 1/2, 1/4, 0: H = 1.5 ln 2, over ln 4
    0.75
"""

from __future__ import annotations

import math

import torch


def topk_experts(probs: torch.Tensor, top_k: int) -> torch.Tensor:
    """``(T, k)`` the ``top_k`` experts of each token by ``probs`` (T, E), highest first, ties to the lower index.

    (``torch.topk`` leaves the order of equal values unspecified; a stable sort does not.)

    Example:
        >>> topk_experts(torch.tensor([[0.25, 0.25, 0.25, 0.25], [0.1, 0.4, 0.4, 0.1]]), 2).tolist()
        [[0, 1], [1, 2]]
    """
    _check_probs(probs)
    if not 1 <= top_k <= probs.shape[-1]:
        raise ValueError(f"top_k={top_k} must be in [1, E={probs.shape[-1]}] (E: the experts, probs' last dim)")
    return torch.argsort(-probs.float(), dim=-1, stable=True)[:, :top_k]


def topk_counts(probs: torch.Tensor | None = None, top_k: int | None = None, expert_idx: torch.Tensor | None = None,
                num_experts: int | None = None) -> torch.Tensor:
    """``(E,)`` int64: the tokens that have each expert among their chosen ones.

    Args:
        probs: ``(T, E)`` router probabilities; the top-``top_k`` of each row are counted unless ``expert_idx``
            is given.
        top_k: experts per token (with ``probs``).
        expert_idx: ``(T, k)`` the experts each token was actually sent to (or ``(N,)`` assignments).
        num_experts: ``E`` when only ``expert_idx`` is given (default: ``probs.shape[-1]``).

    Raises:
        ValueError: neither ``probs`` with ``top_k`` nor ``expert_idx`` with a known ``E`` is given, or an
            expert id is out of range.

    Example:
        >>> topk_counts(expert_idx=torch.tensor([[0, 2], [2, 1]]), num_experts=4).tolist()
        [1, 1, 2, 0]
    """
    if num_experts is None and probs is not None:
        _check_probs(probs)
        num_experts = probs.shape[-1]
    if expert_idx is None:
        if probs is None or top_k is None:
            raise ValueError("give probs (T, E) with top_k, or expert_idx (T, k) with num_experts")
        expert_idx = topk_experts(probs, top_k)
    if num_experts is None:
        raise ValueError("expert_idx alone does not say how many experts there are: give num_experts (or probs)")
    flat = expert_idx.reshape(-1).long()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_experts):
        raise ValueError(f"expert ids must be in [0, {num_experts}); got {int(flat.min())}..{int(flat.max())}")
    return torch.bincount(flat.cpu(), minlength=num_experts)


def entropy(p: torch.Tensor) -> torch.Tensor:
    """Shannon entropy in nats over the last dim (``0 · ln 0 = 0``); ``p`` rows should sum to 1.

    Example:
        >>> round(entropy(torch.tensor([0.5, 0.5, 0.0])).item(), 6) == round(math.log(2), 6)
        True
    """
    p = p.double()
    return -torch.where(p > 0, p * p.clamp_min(1e-300).log(), torch.zeros_like(p)).sum(-1)


def normalized_load_entropy(counts: torch.Tensor) -> float:
    """H(counts / counts.sum()) / ln E for per-expert assignment ``counts`` (E,): the load's evenness.

    NaN when nothing was counted or ``E`` < 2 (no evenness to speak of).

    Example:
        >>> normalized_load_entropy(torch.tensor([3, 3, 3, 3])), normalized_load_entropy(torch.tensor([0, 9, 0]))
        (1.0, 0.0)
    """
    counts = torch.as_tensor(counts).reshape(-1)
    total = counts.sum().item()
    if counts.numel() < 2 or total <= 0:
        return math.nan
    value = float(entropy(counts.double() / total) / math.log(counts.numel()))
    return min(1.0, max(0.0, value))  # rounding aside, H lies in [0, ln E] (and never -0.0)


def load_entropy(probs: torch.Tensor | None = None, top_k: int | None = None, expert_idx: torch.Tensor | None = None,
                 num_experts: int | None = None) -> float:
    """``H(topk_frequency) / ln E``, DESIGN.md's load entropy of one site (arguments as :func:`topk_counts`).

    ``topk_frequency`` = top-k counts / (k·T). 1.0: every expert got the same share of the assignments;
    0.0: one expert got them all. NaN with no tokens or a single expert.

    Example:
        >>> load_entropy(expert_idx=torch.tensor([[0, 1], [2, 3]]), num_experts=4)
        1.0
    """
    return normalized_load_entropy(topk_counts(probs, top_k, expert_idx, num_experts))


def _check_probs(probs: torch.Tensor) -> None:
    if probs.dim() != 2:
        raise ValueError(f"probs must be (T, E): one row of router probabilities per token; got shape "
                         f"{tuple(probs.shape)}")
