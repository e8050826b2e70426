"""Cosine routers: ``cosine`` (X-MoE) and ``perturbed_cosine``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe.routers.base import Routing, register_router, token_choice


@register_router("cosine")
class CosineRouter(nn.Module):
    """Cosine routing of X-MoE (Chi et al. 2022, arXiv 2204.09179).

    Tokens are projected to a low dimension ``router_dim``, L2-normalised, and
    compared to L2-normalised expert embeddings; the similarity is divided by a
    learnable temperature. Routing on a small hypersphere avoids the representation
    collapse of a full-width linear gate. LibMoE uses ``router_dim = E // 2`` and
    ``tau = 0.3``, which are our defaults.
    """

    norm_eps: float = 1e-4  # the L2-norm floor; the perturbed variant widens it

    def __init__(self, config):
        super().__init__()
        self.config = config
        rank = config.router_dim or max(config.num_experts // 2, 2)
        self.proj = nn.Parameter(torch.empty(rank, config.head_dim))
        nn.init.normal_(self.proj, std=0.02)
        self.expert_embeddings = nn.Parameter(torch.empty(config.num_experts, rank))
        nn.init.orthogonal_(self.expert_embeddings, gain=0.32)
        # Learned in log space so it stays positive; clamped to keep logits bounded.
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.3)))

    def similarity(self, x_TD: torch.Tensor) -> torch.Tensor:
        z_TR = F.linear(x_TD, self.proj).float()
        z_TR = z_TR / (z_TR.norm(dim=-1, keepdim=True) + self.norm_eps)
        e_ER = self.expert_embeddings.float()
        e_ER = e_ER / (e_ER.norm(dim=-1, keepdim=True) + self.norm_eps)
        return z_TR @ e_ER.t()

    def forward(self, x_TD: torch.Tensor) -> Routing:
        temperature = self.log_temperature.exp().clamp(min=0.01)
        logits_TE = self.similarity(x_TD) / temperature
        probs_TE = logits_TE.softmax(-1)
        return token_choice(logits_TE, probs_TE, probs_TE, self.config)


@register_router("perturbed_cosine")
class PerturbedCosineRouter(CosineRouter):
    """Perturbed cosine routing (Nguyen et al. 2024, arXiv 2405.14131; LibMoE).

    The L2 norms in the denominators are perturbed by a constant ``0.1`` so the
    similarity stays well-conditioned for small vectors, which the paper shows
    improves sample efficiency; in training, Gaussian noise of standard deviation
    ``router_noise_std / num_experts`` is added to the similarity as well.
    """

    norm_eps = 0.1

    def forward(self, x_TD: torch.Tensor) -> Routing:
        sim_TE = self.similarity(x_TD)
        if self.training and self.config.router_noise_std > 0:
            sim_TE = sim_TE + torch.randn_like(sim_TE) * (self.config.router_noise_std / self.config.num_experts)
        logits_TE = sim_TE / self.log_temperature.exp().clamp(min=0.01)
        probs_TE = logits_TE.softmax(-1)
        return token_choice(logits_TE, probs_TE, probs_TE, self.config)
