"""Linear top-k routers: ``softmax``, ``noisy_topk`` and ``sigmoid``."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe.routers.base import Routing, expert_counts, register_router, token_choice


class LinearGate(nn.Module):
    """A router's linear gate: one ``(E, D)`` weight, float32 logits ``(T, E)``."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.weight = nn.Parameter(torch.empty(config.num_experts, config.head_dim))
        nn.init.normal_(self.weight, std=0.02)

    def gate_logits(self, x_TD: torch.Tensor) -> torch.Tensor:
        return F.linear(x_TD, self.weight).float()


@register_router("softmax")
class SoftmaxRouter(LinearGate):
    """Standard sparse-MoE routing: softmax over a linear gate, keep the top-k.

    Shazeer et al. 2017; Switch (Fedus et al. 2021, arXiv 2101.03961); Mixtral
    (Jiang et al. 2024, arXiv 2401.04088). ``norm_topk_prob`` renormalises the kept
    weights (Mixtral, Qwen3-MoE) or leaves them as probabilities (OLMoE, Switch).

    LibMoE's ``smoe`` (``SMoeLayer.forward`` in ``moe_model/model/moe/smoe.py``: float32 softmax,
    top-k, renormalised) is this router with ``norm_topk_prob=True``; ``router_convention="libmoe"``
    adds its renormalised top-1 and first-choice balance loss (:func:`token_choice`). Its gate runs
    in the input dtype before the float32 softmax, as ours does.
    """

    def scores(self, x_TD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, probs)`` of the linear gate, in float32, each ``(T, E)``."""
        logits_TE = self.gate_logits(x_TD)
        return logits_TE, logits_TE.softmax(-1)

    def forward(self, x_TD: torch.Tensor) -> Routing:
        logits_TE, probs_TE = self.scores(x_TD)
        return token_choice(logits_TE, probs_TE, probs_TE, self.config)


@register_router("noisy_topk")
class NoisyTopKRouter(SoftmaxRouter):
    """Noisy top-k gating (Shazeer et al. 2017, arXiv 1701.06538).

    In training, ``H(x) = x W_g + N(0, 1) * softplus(x W_noise) * router_noise_std``;
    the top-k of ``H`` are kept and softmax-normalised among themselves.
    """

    def __init__(self, config):
        super().__init__(config)
        self.noise_weight = nn.Parameter(torch.zeros(config.num_experts, config.head_dim))

    def forward(self, x_TD: torch.Tensor) -> Routing:
        logits_TE = self.gate_logits(x_TD)
        if self.training and self.config.router_noise_std > 0:
            noise_std_TE = F.softplus(F.linear(x_TD, self.noise_weight).float())
            logits_TE = logits_TE + torch.randn_like(logits_TE) * noise_std_TE * self.config.router_noise_std
        probs_TE = logits_TE.softmax(-1)
        return token_choice(logits_TE, probs_TE, probs_TE, self.config)


@register_router("sigmoid")
class SigmoidRouter(LinearGate):
    """Sigmoid scores with top-k and normalisation (DeepSeek-V3, arXiv 2412.19437).

    Aux-loss-free balancing: a per-expert ``bias`` is added to the scores only to
    *select* experts, never to weight them. In training it is nudged outside the
    gradient after every forward, ``bias += bias_update_rate * sign(mean_load - load)``,
    so overloaded experts become less likely to be picked.

    ``router_convention="libmoe"`` follows LibMoE's ``smoe_sigmoidgating`` (``SMoESigmoidGating.topk_expert``
    and ``forward`` in ``moe_model/model/moe/smoe_sigmoidgating.py``): top-k of ``sigmoid(x W^T)``,
    renormalised (even one kept expert); no selection bias and no bias update; the balance loss's
    ``P`` is ``softmax(x W^T)``, not the normalised sigmoid.

    ``router_convention="libmoe_v1"`` follows LibMoE v1.x's ``smoe_sigmoidgating`` (commit 766ddae,
    ``SMoESigmoidGating.forward`` in ``moe_model/model/moe/moe_sigmoidgating.py`` and ``MoeLayer.topk_expert``
    in ``moe.py``): the gate has a bias (``bias`` is then a trained parameter added to the logits, not a
    selection bias, and is never updated); ``s = sigmoid(x W^T + b)``, ``p = softmax(s)`` in float32, the
    top-k of ``p``, renormalised (even one kept expert), so the weights are the softmax over the kept
    sigmoids; the balance loss reads ``p`` and v1's z-loss the sigmoids ``s`` (v1 calls them its gate logits).
    Where v1's code and ours could disagree: v1 runs its gate and the sigmoid in the input dtype (moezoo:
    float32 logits); no noise or temperature in either.

    ``load_group``: when the router is replicated over several processes (data or expert
    parallelism, set by :mod:`moezoo.parallel`), the loads are summed over this process
    group first, so every replica takes the same step, the one of the global batch.
    """

    load_group: Any = None

    def __init__(self, config):
        super().__init__(config)
        if config.router_convention == "libmoe_v1":  # LibMoE v1.x's gate: nn.Linear(D, E, bias=True)
            self.bias = nn.Parameter(torch.zeros(config.num_experts))
        else:
            self.register_buffer("bias", torch.zeros(config.num_experts))

    def forward(self, x_TD: torch.Tensor) -> Routing:
        if self.config.router_convention == "libmoe_v1":
            scores_TE = F.linear(x_TD, self.weight, self.bias).float().sigmoid()
            probs_TE = scores_TE.softmax(-1)
            return token_choice(scores_TE, probs_TE, probs_TE, self.config)
        logits_TE = self.gate_logits(x_TD)
        scores_TE = logits_TE.sigmoid()
        if self.config.router_convention == "libmoe":
            return token_choice(logits_TE, scores_TE, logits_TE.softmax(-1), self.config)
        probs_TE = scores_TE / scores_TE.sum(-1, keepdim=True)
        routing = token_choice(logits_TE, scores_TE, probs_TE, self.config, select_TE=scores_TE + self.bias)
        if self.training and self.config.bias_update_rate > 0:
            self._update_bias(routing.expert_idx)
        return routing

    @torch.no_grad()
    def _update_bias(self, expert_idx: torch.Tensor) -> None:
        load_E = expert_counts(expert_idx, self.config.num_experts).to(self.bias.dtype)
        if self.load_group is not None:
            import torch.distributed as dist

            dist.all_reduce(load_E, group=self.load_group)
        self.bias.add_(torch.sign(load_E.mean() - load_E), alpha=self.config.bias_update_rate)
