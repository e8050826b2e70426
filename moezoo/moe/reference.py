"""The mask-loop reference: one masked gather and two matmuls per expert.

Plain autograd, no sorting, no custom backward. It is slow and obviously correct,
which makes it the oracle the fast dispatch is tested against (outputs and all
gradients), not a path to train with.
"""

from __future__ import annotations

import torch

from moezoo.moe.dispatch import activate
from moezoo.moe.routers import Routing


def loop_reference(x_TD: torch.Tensor, routing: Routing, w_in: torch.Tensor, w_out: torch.Tensor,
                   act: bool | str, capacity: int | None = None, b_in: torch.Tensor | None = None,
                   b_out: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(out (T, D), assignments processed per expert (E,))``.

    With ``capacity``, each expert keeps its first ``capacity`` assignments in the
    router's priority order. ``act`` and the optional biases are as in :func:`~moezoo.moe.expert_ffn`.
    """
    out = torch.zeros_like(x_TD)
    counts = []
    for expert in range(w_in.shape[0]):
        pairs = (routing.expert_idx == expert).nonzero().squeeze(1)
        if capacity is not None:
            pairs = pairs[:capacity]
        counts.append(pairs.numel())
        if pairs.numel() == 0:
            continue
        tok = routing.token_idx[pairs]
        h = x_TD[tok] @ w_in[expert].t()
        if b_in is not None:
            h = h + b_in[expert]
        y = activate(h, act) @ w_out[expert].t()
        if b_out is not None:
            y = y + b_out[expert]
        out = out.index_add(0, tok, y * routing.weight[pairs, None].to(y.dtype))
    return out, torch.tensor(counts, device=x_TD.device)
