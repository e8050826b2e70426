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

    ``router_convention="libmoe"`` computes what LibMoE's released ``xmoe`` / ``smoe_cosinegating``
    compute (``XMOE.forward``, ``_cosine`` and ``_keepTopk`` in ``moe_model/model/moe/xmoe.py``; the
    v2.0 ``smoe_cosinegating.py`` has the same forward), where these differ from ours:

    - the token side is ``F.normalize(z, eps=1e-4)``, ``z / max(|z|, 1e-4)``, not ``z / (|z| + 1e-4)``;
    - the expert embeddings are rescaled to norm 1.5, not 1 (LibMoE does it in place before every
      forward, ``e.mul_(1.5 / |e|)``; that is idempotent, so the stateless ``e * 1.5 / |e|`` here
      gives the same numbers);
    - the temperature is the constant 0.3 (``log_temperature`` is then frozen and unused);
    - the combine weights are a softmax over the kept top-k *probabilities*
      (``_keepTopk``: ``softmax(topk(softmax(l / 0.3)))``), not the renormalised probabilities;
    - the z-loss reads the logits before the temperature; the balance loss counts first choices.

    ``router_convention="libmoe_v1"`` is LibMoE v1.x's ``smoe_cosinegating`` (commit 766ddae,
    ``MoECosingGating.forward`` / ``_keepTopk`` in ``moe_model/model/moe/moe_cosinegating.py``), another
    model: no projection, no expert embeddings, no temperature. The router holds a full-width gate
    ``weight (E, D)`` and ``bias (E,)`` (LibMoE's ``gate = nn.Linear(D, E, bias=True)``) and computes

    - ``l = x W^T / (|x| |W_e|)``, the plain cosine (no norm floor: a zero token gives NaN there too);
    - ``p = softmax(l)`` in float32, at temperature 1;
    - the top-k of ``p + b`` (the bias moves the *selection*), and as weights the softmax over the
      kept ``p + b`` values (not the probabilities, not renormalised);
    - the z-loss on ``l``, the balance loss on ``p`` and the first choice.

    Where v1's code and ours could disagree: v1 casts ``p`` to the input dtype before adding the bias
    and runs its matmul and weight softmax in the input dtype (moezoo: float32), so in bf16 a near tie
    can pick another expert; no noise at eval or in training in either; v1's ``forward`` assigns
    ``combine_loss``'s ``(aux, balance)`` tuple to its auxiliary loss (a training-only bug moezoo does
    not copy).
    """

    norm_eps: float = 1e-4  # the L2-norm floor; the perturbed variant widens it
    libmoe_theta: float | None = None  # LibMoE's perturbation of the norms (smoe_perturbed's theta)

    def __init__(self, config):
        super().__init__()
        self.config = config
        if config.router_convention == "libmoe_v1":  # LibMoE v1.x's full-width biased gate
            self.weight = nn.Parameter(torch.empty(config.num_experts, config.head_dim))
            nn.init.normal_(self.weight, std=0.02)
            self.bias = nn.Parameter(torch.zeros(config.num_experts))
            return
        rank = config.router_dim or max(config.num_experts // 2, 2)
        self.proj = nn.Parameter(torch.empty(rank, config.head_dim))
        nn.init.normal_(self.proj, std=0.02)
        self.expert_embeddings = nn.Parameter(torch.empty(config.num_experts, rank))
        nn.init.orthogonal_(self.expert_embeddings, gain=0.32)
        # Learned in log space so it stays positive; clamped to keep logits bounded.
        self.log_temperature = nn.Parameter(torch.tensor(math.log(0.3)))
        if config.router_convention == "libmoe":  # LibMoE's temperature is the constant 0.3
            self.log_temperature.requires_grad_(False)

    def similarity(self, x_TD: torch.Tensor) -> torch.Tensor:
        z_TR = F.linear(x_TD, self.proj).float()
        z_TR = z_TR / (z_TR.norm(dim=-1, keepdim=True) + self.norm_eps)
        e_ER = self.expert_embeddings.float()
        e_ER = e_ER / (e_ER.norm(dim=-1, keepdim=True) + self.norm_eps)
        return z_TR @ e_ER.t()

    def libmoe_similarity(self, x_TD: torch.Tensor) -> torch.Tensor:
        """LibMoE's gate logits ``(T, E)``: the scaled cosine of ``XMOE._cosine`` / ``smoe_perturbed._cosine``."""
        z_TR = F.linear(x_TD, self.proj).float()
        e_ER = self.expert_embeddings.float()
        theta = self.libmoe_theta
        if theta is None:
            z_TR = F.normalize(z_TR, p=2.0, dim=-1, eps=1e-4)
            e_ER = e_ER * (1.5 / e_ER.norm(p=2.0, dim=-1, keepdim=True))
        else:
            z_TR = z_TR / (z_TR.norm(p=2, dim=-1, keepdim=True) + theta)
            e_ER = e_ER * (1.5 / (e_ER.norm(p=2.0, dim=-1, keepdim=True) + theta))
        return z_TR @ e_ER.t()

    def libmoe_forward(self, x_TD: torch.Tensor) -> Routing:
        """LibMoE's routing: softmax at temperature 0.3, top-k, a softmax over the kept probabilities."""
        logits_TE = self.libmoe_similarity(x_TD)
        probs_TE = (logits_TE / 0.3).softmax(-1)
        _, idx_TK = probs_TE.topk(self.config.top_k, dim=-1)
        weight_TK = probs_TE.gather(-1, idx_TK).softmax(-1)
        return Routing.rank_major(idx_TK, weight_TK, logits_TE, probs_TE, balance_top_k=1)

    def libmoe_v1_forward(self, x_TD: torch.Tensor) -> Routing:
        """LibMoE v1.x's routing: softmax of the (perturbed) cosine with the gate, top-k of it plus the bias,
        a softmax over the kept biased values."""
        x_TD, w_ED = x_TD.float(), self.weight.float()
        theta = self.libmoe_theta or 0.0
        norms_TE = (x_TD.norm(dim=-1, keepdim=True) + theta) * (w_ED.norm(dim=1, keepdim=True).t() + theta)
        logits_TE = (x_TD @ w_ED.t()) / norms_TE
        probs_TE = logits_TE.softmax(-1)
        kept_TK, idx_TK = (probs_TE + self.bias.float()).topk(self.config.top_k, dim=-1)
        weight_TK = kept_TK.softmax(-1)
        return Routing.rank_major(idx_TK, weight_TK, logits_TE, probs_TE, balance_top_k=1)

    def forward(self, x_TD: torch.Tensor) -> Routing:
        if self.config.router_convention == "libmoe_v1":
            return self.libmoe_v1_forward(x_TD)
        if self.config.router_convention == "libmoe":
            return self.libmoe_forward(x_TD)
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

    ``router_convention="libmoe"`` follows LibMoE's v2.0 ``smoe_perturbed``
    (``MoEPerturbedCosingGating.forward`` / ``_cosine`` in ``moe_model/model/moe/smoe_perturbed.py``):
    the cosine router's LibMoE path (see :class:`CosineRouter`) with both norms perturbed by
    ``theta = 0.1`` (``z / (|z| + 0.1)``, ``e * 1.5 / (|e| + 0.1)``) and no noise, in training or
    eval. LibMoE rescales its expert embeddings *in place* before every forward, and with
    ``theta > 0`` that is not idempotent: each forward multiplies them by ``1.5 / (|e| + 0.1)``
    (their norm drifts towards 1.4). moezoo is stateless and gives LibMoE's *first* forward
    after loading; LibMoE's later forwards differ from it by that drift.

    ``router_convention="libmoe_v1"`` is LibMoE v1.x's ``smoe_perturbed`` (commit 766ddae,
    ``MoEPerturbedCosingGating.forward`` / ``_keepTopk`` in ``moe_model/model/moe/moe_perturbed.py``): the
    v1 cosine router of :class:`CosineRouter` with both norms of the full-width gate perturbed,
    ``l = x W^T / ((|x| + 0.1) (|W_e| + 0.1))``. v1 changes no weight in place (stateless, so every
    forward is the same) and adds no noise, in training or eval; no temperature.
    """

    norm_eps = 0.1
    libmoe_theta = 0.1

    def forward(self, x_TD: torch.Tensor) -> Routing:
        if self.config.router_convention == "libmoe_v1":
            return self.libmoe_v1_forward(x_TD)
        if self.config.router_convention == "libmoe":
            return self.libmoe_forward(x_TD)
        sim_TE = self.similarity(x_TD)
        if self.training and self.config.router_noise_std > 0:
            sim_TE = sim_TE + torch.randn_like(sim_TE) * (self.config.router_noise_std / self.config.num_experts)
        logits_TE = sim_TE / self.log_temperature.exp().clamp(min=0.01)
        probs_TE = logits_TE.softmax(-1)
        return token_choice(logits_TE, probs_TE, probs_TE, self.config)
