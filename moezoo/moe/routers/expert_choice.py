"""Expert-choice routing (Zhou et al. 2022, arXiv 2202.09368)."""

from __future__ import annotations

import math

import torch

from moezoo.moe.routers.base import Routing, register_router
from moezoo.moe.routers.topk import SoftmaxRouter


def expert_capacity(num_tokens: int, config) -> int:
    """Tokens each expert takes: ``ceil(capacity_factor * T * top_k / E)``, at most ``T``.

    ``capacity_factor=None`` counts as 1, which matches top-k's average compute.
    """
    factor = config.capacity_factor or 1.0
    return max(1, min(num_tokens, math.ceil(factor * num_tokens * config.top_k / config.num_experts)))


@register_router("expert_choice")
class ExpertChoiceRouter(SoftmaxRouter):
    """Expert choice (Zhou et al. 2022, arXiv 2202.09368): each expert picks its top-``C`` tokens.

    Load is balanced by construction, so no balancing loss is needed (the layer
    reports 0); a token may get zero, one or several experts. The choice looks at
    all tokens of the batch, so it is not causal: use it for encoders, training
    research or prefill, not for token-by-token decoding of a causal LM. The gate is
    :class:`~moezoo.moe.routers.topk.SoftmaxRouter`'s; only the selection differs.
    """

    def forward(self, x_TD: torch.Tensor) -> Routing:
        logits_TE, probs_TE = self.scores(x_TD)  # the softmax gate; experts pick along T instead of E
        capacity = expert_capacity(x_TD.shape[0], self.config)
        weight_EC, token_EC = torch.topk(probs_TE.t(), capacity, dim=-1)
        expert_EC = torch.arange(self.config.num_experts, device=x_TD.device)[:, None].expand_as(token_EC)
        return Routing(token_EC.reshape(-1), expert_EC.reshape(-1), weight_EC.reshape(-1),
                       logits_TE, probs_TE, token_choice=False)
