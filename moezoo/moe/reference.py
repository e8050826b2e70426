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
                   glu: bool, capacity: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns ``(out (T, D), assignments processed per expert (E,))``.

    With ``capacity``, each expert keeps its first ``capacity`` assignments in the
    router's priority order.
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
        y = activate(x_TD[tok] @ w_in[expert].t(), glu) @ w_out[expert].t()
        out = out.index_add(0, tok, y * routing.weight[pairs, None].to(y.dtype))
    return out, torch.tensor(counts, device=x_TD.device)
