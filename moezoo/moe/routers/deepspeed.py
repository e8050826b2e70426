"""DeepSpeed's top-2 gate with capacity (``deepspeed_top2``): the router of MoE-LLaVA's checkpoints."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from moezoo.moe.routers.base import Routing, register_router
from moezoo.moe.routers.topk import LinearGate


@register_router("deepspeed_top2")
class DeepSpeedTop2Router(LinearGate):
    """GShard's top-2 gate (Lepikhin et al. 2020, arXiv 2006.16668) as DeepSpeed computes it.

    It follows ``TopKGate.forward`` and ``top2gating`` of ``deepspeed/moe/sharded_moe.py``
    (DeepSpeed 0.9.5, which MoE-LLaVA pins, and later releases with
    ``top2_2nd_expert_sampling=False``):

    1. the logits ``x @ wg.T`` in float32, input and weight both upcast, whatever the model dtype;
    2. ``probs = softmax(logits)``; the first expert is ``argmax(probs)``, the second the
       ``argmax`` of the logits with the first masked out;
    3. the capacity :meth:`~moezoo.moe.MoEConfig.capacity`: ``capacity_factor`` in training,
       ``eval_capacity_factor`` in eval, times 2, floored at ``min_capacity``;
    4. positions in each expert's buffer by a cumulative sum over the tokens, every first choice
       before every second choice; an assignment at a position ``>= capacity`` is dropped;
    5. the two weights are the kept choices' probabilities divided by their sum, *after* the
       drop (a token whose second choice was dropped gives its first weight 1), the sum clamped
       at float32's eps; a dropped choice has weight 0;
    6. the balancing loss ``l_aux = mean(me * ce) * E * E``, ``me`` the mean probabilities and
       ``ce`` the share of tokens whose *first* choice each expert is, before any drop
       (:attr:`~moezoo.moe.Routing.balance_top_k` ``= 1``; :attr:`MoEOutput.aux_loss
       <moezoo.moe.MoEOutput.aux_loss>` then equals DeepSpeed's ``l_aux``).

    The dispatch (:func:`~moezoo.moe.sort_by_expert`) then drops exactly the assignments this
    router gave weight 0, since it counts positions in the same order with the same capacity.

    **Where moezoo and DeepSpeed 0.9.5 differ.** DeepSpeed 0.9.5 picks the second expert from
    the logits plus Gumbel noise (``gumbel_rsample``), in training *and* at eval, so its outputs
    are random; DeepSpeed 0.14 added ``top2_2nd_expert_sampling`` (default True) to turn that off.
    moezoo always takes the deterministic second choice, DeepSpeed's
    ``top2_2nd_expert_sampling=False``. DeepSpeed's ``noisy_gate_policy`` (``"Jitter"`` /
    ``"RSample"``, off in MoE-LLaVA) has no counterpart here, and DeepSpeed 0.9.5 ignores
    ``drop_tokens`` for top-2 (it always drops); later releases' ``drop_tokens=False`` is
    ``capacity_factor=None`` here. DeepSpeed keeps ``wg`` itself in float32; a moezoo model
    cast to bfloat16 keeps the gate weight in bfloat16 and upcasts it for the product.
    """

    def forward(self, x_TD: torch.Tensor) -> Routing:
        return self.route_logits(F.linear(x_TD.float(), self.weight.float()))

    def route_logits(self, logits_TE: torch.Tensor) -> Routing:
        """Steps 2-5 on given float32 logits (``T, E``); :func:`moezoo.analysis.ablate` reroutes through it."""
        c = self.config
        T, E = logits_TE.shape
        probs_TE = logits_TE.softmax(-1)
        first_T = probs_TE.argmax(-1)
        mask1_TE = F.one_hot(first_T, E)
        second_T = logits_TE.masked_fill(mask1_TE.bool(), float("-inf")).argmax(-1)
        idx_TK = torch.stack([first_T, second_T], dim=1)
        gate_TK = probs_TE.gather(1, idx_TK)
        capacity = c.capacity(T, self.training)
        if capacity is not None:
            mask2_TE = F.one_hot(second_T, E)
            pos1_T = (mask1_TE.cumsum(0) - 1).gather(1, first_T[:, None])[:, 0]
            pos2_T = (mask2_TE.cumsum(0) - 1 + mask1_TE.sum(0)).gather(1, second_T[:, None])[:, 0]
            kept_TK = torch.stack([pos1_T, pos2_T], dim=1) < capacity
            gate_TK = gate_TK * kept_TK
        denom_T = gate_TK.sum(-1, keepdim=True).clamp_min(torch.finfo(gate_TK.dtype).eps)
        weight_TK = gate_TK / denom_T
        if c.routed_scaling_factor != 1.0:
            weight_TK = weight_TK * c.routed_scaling_factor
        return Routing.rank_major(idx_TK, weight_TK, logits_TE, probs_TE, balance_top_k=1)
