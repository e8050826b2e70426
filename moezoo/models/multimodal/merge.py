"""Bookkeeping of placeholder tokens: which item (image, clip, video) and which sample each
token belongs to, and routing counts grouped by modality.

A batch holds ``N`` items of a modality, each expanded into ``n`` consecutive placeholder
tokens; items are numbered in row-major order over the batch, the order in which the
processor stacks their inputs and ``masked_scatter`` fills their features.
"""

from __future__ import annotations

import torch

from moezoo.moe.routers import Routing


def item_index(mask_BT: torch.Tensor, n: int) -> torch.Tensor:
    """``(B, T)``: at each placeholder token, the number of its item (0 elsewhere).

    Example:
        >>> item_index(torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]]).bool(), 2)
        tensor([[0, 0, 0, 0],
                [1, 1, 0, 0]])
    """
    flat = mask_BT.reshape(-1)
    order = torch.zeros_like(flat, dtype=torch.long)
    order[flat] = torch.arange(int(flat.sum()), device=flat.device) // n
    return order.view_as(mask_BT)


def item_samples(mask_BT: torch.Tensor, n: int) -> torch.Tensor:
    """``(N,)``: the batch row of each item.

    Example:
        >>> item_samples(torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]]).bool(), 2)
        tensor([0, 1])
    """
    rows = torch.arange(mask_BT.shape[0], device=mask_BT.device)[:, None].expand_as(mask_BT)
    return rows[mask_BT][::n]


def modality_expert_counts(routing: Routing, modality_ids_BT: torch.Tensor, num_modalities: int) -> torch.Tensor:
    """``(num_modalities, E)`` assignments of one MoE layer by the modality of their token.

    ``modality_ids_BT`` holds -1 on padding, which is left out. MH-MoE sub-tokens count
    for their token's modality.

    Example:
        >>> r = Routing(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 1]), torch.ones(3),
        ...             torch.zeros(3, 2), torch.full((3, 2), 0.5))
        >>> modality_expert_counts(r, torch.tensor([[0, 1, -1]]), 2)
        tensor([[0, 1],
                [1, 0]])
    """
    groups = modality_ids_BT.reshape(-1)
    sub_tokens = routing.probs.shape[0] // groups.numel()
    group_N = groups[routing.token_idx // sub_tokens]
    keep = group_N >= 0
    num_experts = routing.probs.shape[-1]
    flat = group_N[keep] * num_experts + routing.expert_idx[keep]
    counts = torch.zeros(num_modalities * num_experts, dtype=torch.long, device=flat.device)
    return counts.scatter_add_(0, flat, torch.ones_like(flat)).view(num_modalities, num_experts)
