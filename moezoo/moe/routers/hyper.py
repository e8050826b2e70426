"""HyperRouter (Do et al. 2023, arXiv 2312.07035; LibMoE)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe.routers.base import (
    LIBMOE_CONVENTIONS,
    Routing,
    register_router,
    token_choice,
)


def hyper_gate(embedding: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor | None, w2: torch.Tensor,
               b2: torch.Tensor | None, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The gate a hypernetwork ``Linear(w1, b1) -> ReLU -> Linear(w2, b2)`` makes from ``embedding``: its weight
    ``(E, D)`` and bias ``(E,)``, the last of each expert's ``D + 1`` outputs (``w2`` has ``E * (D + 1)`` rows).

    Example:
        >>> weight, bias = hyper_gate(torch.ones(2), torch.eye(2), None, torch.ones(6, 2), None, 2)
        >>> weight.tolist(), bias.tolist()
        ([[2.0, 2.0], [2.0, 2.0]], [2.0, 2.0])
    """
    flat = F.linear(F.relu(F.linear(embedding, w1, b1)), w2, b2).view(num_experts, -1)
    return flat[:, :-1], flat[:, -1]


@register_router("hyper")
class HyperRouter(nn.Module):
    """HyperRouter (Do et al. 2023, arXiv 2312.07035): router weights from a *fixed* hypernetwork.

    Only a small embedding ``hyper_embedding`` is trained; a frozen two-layer
    hypernetwork maps it to the router's ``(E, D)`` weight and ``(E,)`` bias. The
    fixed hypernetwork ties the experts' routing vectors together, which the paper
    shows mitigates representation collapse while keeping the router cheap to train.
    The hypernetwork is stored as buffers, so it travels with the checkpoint.

    ``router_convention="libmoe"`` builds LibMoE's hypernetwork (``HyperRouter`` in
    ``moe_model/model/moe/hyperrouter.py``): the embedding has the token width ``D``, and the
    network is ``Linear(D, H) -> ReLU -> Linear(H, E * (D + 1))`` *with biases*
    (``hyper_b1``, ``hyper_b2``), ``H = router_dim or D // 4``; LibMoE's trainer freezes it too.
    Where the two could disagree:

    - LibMoE's eval forward builds the gate from the hypernetwork once (``recreate_gate``) and takes
      the top-k of the *logits*, softmaxed among themselves; ours takes the top-k of the softmax,
      renormalised. The two are equal up to float rounding (the softmax is monotone).
    - ``"libmoe_v1"`` builds the same hypernetwork. v1.x's ``HyperRouter.forward`` (commit 766ddae) has
      no ``recreate_gate``: at eval it routes with the ``gate.weight`` / ``gate.bias`` it holds, which
      equal the hypernetwork's output only if the checkpoint stored the gate its last training forward
      generated; moezoo always routes with the generated gate. v1's and v2's keys are the same, so
      :mod:`moezoo.convert.libmoe` reads a hyperrouter checkpoint under ``"libmoe"``.
    - In training LibMoE grows ``k`` linearly from ``topk_min`` to ``topk_max`` over the run (its
      dynamic top-k); moezoo routes with a fixed ``top_k`` (LibMoE's eval ``num_selected``).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        dim, n = config.head_dim, config.num_experts
        if config.router_convention in LIBMOE_CONVENTIONS:
            hidden = config.router_dim or max(dim // 4, 1)
            self.hyper_embedding = nn.Parameter(torch.randn(dim))
            # LibMoE's init: N(0, 0.02) weights and zero biases (HyperRouter.init_hypernet_weights).
            self.register_buffer("hyper_w1", torch.randn(hidden, dim) * 0.02)
            self.register_buffer("hyper_b1", torch.zeros(hidden))
            self.register_buffer("hyper_w2", torch.randn(n * (dim + 1), hidden) * 0.02)
            self.register_buffer("hyper_b2", torch.zeros(n * (dim + 1)))
            return
        emb = config.router_dim or 64
        self.hyper_embedding = nn.Parameter(torch.randn(emb))
        # Scaled so that the generated weights have std ~0.02, like a normal router init.
        self.register_buffer("hyper_w1", torch.randn(emb, emb) / math.sqrt(emb))
        self.register_buffer("hyper_w2", torch.randn(n * (dim + 1), emb) * 0.02 * math.sqrt(2.0 / emb))

    def generated(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The router weight ``(E, D)`` and bias ``(E,)`` the hypernetwork makes now."""
        libmoe = self.config.router_convention in LIBMOE_CONVENTIONS
        biases = (self.hyper_b1, self.hyper_b2) if libmoe else (None, None)
        return hyper_gate(self.hyper_embedding, self.hyper_w1, biases[0], self.hyper_w2, biases[1],
                          self.config.num_experts)

    def forward(self, x_TD: torch.Tensor) -> Routing:
        weight_ED, bias_E = self.generated()
        logits_TE = F.linear(x_TD, weight_ED.to(x_TD.dtype), bias_E.to(x_TD.dtype)).float()
        probs_TE = logits_TE.softmax(-1)
        return token_choice(logits_TE, probs_TE, probs_TE, self.config)
