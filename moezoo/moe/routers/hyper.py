"""HyperRouter (Do et al. 2023, arXiv 2312.07035; LibMoE)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe.routers.base import Routing, register_router, token_choice


@register_router("hyper")
class HyperRouter(nn.Module):
    """HyperRouter (Do et al. 2023, arXiv 2312.07035): router weights from a *fixed* hypernetwork.

    Only a small embedding ``hyper_embedding`` is trained; a frozen two-layer
    hypernetwork maps it to the router's ``(E, D)`` weight and ``(E,)`` bias. The
    fixed hypernetwork ties the experts' routing vectors together, which the paper
    shows mitigates representation collapse while keeping the router cheap to train.
    The hypernetwork is stored as buffers, so it travels with the checkpoint.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        dim, n = config.head_dim, config.num_experts
        emb = config.router_dim or 64
        self.hyper_embedding = nn.Parameter(torch.randn(emb))
        # Scaled so that the generated weights have std ~0.02, like a normal router init.
        self.register_buffer("hyper_w1", torch.randn(emb, emb) / math.sqrt(emb))
        self.register_buffer("hyper_w2", torch.randn(n * (dim + 1), emb) * 0.02 * math.sqrt(2.0 / emb))

    def generated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The router weight ``(E, D)`` and bias ``(E,)`` the hypernetwork makes now."""
        hidden = F.relu(F.linear(self.hyper_embedding, self.hyper_w1))
        flat = F.linear(hidden, self.hyper_w2).view(self.config.num_experts, self.config.head_dim + 1)
        return flat[:, :-1], flat[:, -1]

    def forward(self, x_TD: torch.Tensor) -> Routing:
        weight_ED, bias_E = self.generated()
        logits_TE = F.linear(x_TD, weight_ED.to(x_TD.dtype), bias_E.to(x_TD.dtype)).float()
        probs_TE = logits_TE.softmax(-1)
        return token_choice(logits_TE, probs_TE, probs_TE, self.config)
