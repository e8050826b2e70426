"""A few-token inference path for the MoE layers, used while decoding.

A decoding step routes ``batch * top_k`` assignments, mostly one per expert. The
general dispatch (:mod:`moezoo.moe.dispatch`) is built for thousands of tokens:
it sorts, plans segments, may hand expert groups to worker threads, and wraps it
all in an autograd function. For a handful of rows that machinery costs more than
the expert matrix-vector products themselves, which are bound by reading the
expert weights. Here each active expert runs directly on its rows, with no
autograd state and no threads; the result is the same sum, so generation gives the
same ids (checked against :class:`~moezoo.moe.MoELayer` in the tests).

This belongs in :mod:`moezoo.moe` as a dispatch mode; it lives here until it moves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moezoo.moe import MoELayer

# Above this many assignments per expert on average, the general dispatch wins.
MAX_ASSIGNMENTS_PER_EXPERT = 1.0


def supports_fast_decode(layer: MoELayer) -> bool:
    """Whether ``layer``'s config is one the few-token path computes exactly.

    Dropless token-choice routing over whole tokens; MH-MoE sub-tokens, capacity
    limits and expert-choice routing keep the general path.
    """
    c = layer.config
    return c.num_heads == 1 and c.capacity_factor is None and c.router != "expert_choice"


def use_fast_decode(layer: MoELayer, num_tokens: int) -> bool:
    """Take the few-token path for ``num_tokens`` tokens (inference only)."""
    c = layer.config
    return (not torch.is_grad_enabled() and num_tokens * c.top_k <= MAX_ASSIGNMENTS_PER_EXPERT * c.num_experts
            and supports_fast_decode(layer))


def fast_decode(layer: MoELayer, x: torch.Tensor) -> torch.Tensor:
    """``layer(x).hidden_states`` for a few tokens ``x (..., D)``, computed expert by expert.

    Example:
        >>> from moezoo.moe import MoEConfig
        >>> layer = MoELayer(MoEConfig(dim=16, expert_dim=8, num_experts=8, top_k=2, num_shared_experts=1))
        >>> x = torch.randn(3, 16)
        >>> with torch.no_grad():
        ...     torch.allclose(fast_decode(layer, x), layer(x).hidden_states, atol=1e-6)
        True
    """
    x_TD = x.reshape(-1, x.shape[-1])
    routing = layer.router(x_TD)
    experts = layer.experts
    w_in, w_out = experts.in_proj, experts.down_proj  # (E, H, D), (E, D, I)
    weight = routing.weight.to(x.dtype)
    out = torch.zeros_like(x_TD)
    rows_of: dict[int, list[int]] = {}
    for j, e in enumerate(routing.expert_idx.tolist()):
        rows_of.setdefault(e, []).append(j)
    token_idx = routing.token_idx
    for e, js in sorted(rows_of.items()):  # expert order, as the general dispatch sums
        pick = torch.tensor(js, device=x.device) if len(js) > 1 else slice(js[0], js[0] + 1)
        tok = token_idx[pick]
        h = F.linear(x_TD[tok], w_in[e])
        if experts.glu:
            gate, up = h.chunk(2, dim=-1)
            a = F.silu(gate) * up
        else:
            a = F.gelu(h)
        out.index_add_(0, tok, F.linear(a * weight[pick, None], w_out[e]))
    if layer.config.num_shared_experts:
        shared = layer.shared_experts(x_TD)
        if layer.config.shared_expert_gate:
            shared = torch.sigmoid(layer.shared_expert_gate(x_TD)) * shared
        out = out + shared
    return out.reshape(x.shape)
