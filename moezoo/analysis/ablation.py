"""``ablate``: take one expert of one MoE site out of the routing, three ways, and put it back exactly.

Papers that remove an expert do not agree on what removing means, and the three readings give different
numbers, so each is a mode:

- ``"reroute"``: the expert's logit becomes ``-inf`` before the top-k, so the next-best expert enters.
  The weights are then what the router computes without the expert: the softmax over the others,
  ``p'_j = p_j / (1 - p_e)``. **Raw against renormalised weights** decides whether this matters where the
  expert was never chosen: a router that keeps the raw top-k softmax weights (OLMoE, Switch, Qwen2-MoE:
  ``norm_topk_prob=False``) scales every token's weights by ``1 / (1 - p_e)`` through the softmax
  denominator, so its outputs change even when the expert never fires; a router that renormalises the
  top-k (Mixtral, Qwen3-MoE) keeps the ratios, and nothing changes. For the ``sigmoid`` router the
  expert's score becomes 0 and it can no longer be selected, whatever its balancing bias; the other
  scores are independent of it. For expert choice, the expert picks no token, and the other experts
  pick their ``C`` tokens (the same capacity as before) by the probabilities without it.
- ``"drop"``: the expert is removed from each token's chosen experts and the remaining weights are
  renormalised to the total the token's weights had (1 for a renormalising router; the top-k probability
  mass for a raw one). Only the tokens that chose the expert change; a token whose only expert it was
  gets no routed output.
- ``"zero"``: the expert's term is removed and the other weights are kept as they were.

In ``"drop"`` and ``"zero"`` the router's choice stands (the routing still lists the expert, with weight
0, so records keep their ``(T, k)`` shape); in ``"reroute"`` the expert is not chosen at all (a
token-choice routing still has ``k`` experts per token).

**How.** :func:`ablate` puts a forward hook on the site's router that rewrites the :class:`~moezoo.moe.Routing`
it returns; no parameter or buffer is touched, and removing the hook restores the model exactly. It works
for every router of the zoo (``softmax``, ``noisy_topk``, ``cosine``, ``perturbed_cosine``, ``hyper``,
``sigmoid``, ``expert_choice``; ``drop`` and ``zero`` for any router), for the language model's
:class:`~moezoo.moe.MoELayer` sites (MH-MoE sub-tokens are routed like tokens; shared experts are not
routed and stay) and for the :class:`~moezoo.moe.mlp_experts.MoEMLP` sites of connectors and encoders.
Hooks compose: two ablations of one site act one after the other. Ablation is for evaluation: in
training, the sigmoid router's bias update still sees the choice made before the ablation.

Example:
    >>> import moezoo, torch
    >>> model = moezoo.create_model("moe_lm_tiny").eval()
    >>> ids = torch.tensor([[1, 5, 9, 2]])
    >>> before = model(input_ids=ids).logits
    >>> with ablate(model, "llm.0", expert=1, mode="reroute"):
    ...     rerouted = model(input_ids=ids)
    >>> bool((rerouted.routings[0].expert_idx == 1).any())  # expert 1 of layer 0 is never chosen
    False
    >>> torch.equal(model(input_ids=ids).logits, before)  # restored on exit
    True
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from moezoo.analysis.sites import find_site
from moezoo.moe.routers import Routing
from moezoo.moe.routers.base import token_choice
from moezoo.moe.routers.expert_choice import expert_capacity

if TYPE_CHECKING:
    from typing_extensions import Self

ABLATION_MODES = ("reroute", "drop", "zero")
# The routers whose probabilities are the softmax of Routing.logits and whose top-k weights are those
# probabilities (renormalised or not): rerouting recomputes them with one logit at -inf.
SOFTMAX_ROUTERS = ("softmax", "noisy_topk", "cosine", "perturbed_cosine", "hyper")


class Ablation:
    """The handle :func:`ablate` returns: a context manager, and :meth:`remove` to restore by hand.

    Attributes:
        site: the site's short name (``"llm.3"``); expert / mode: what is ablated, and how.
    """

    def __init__(self, handle: Any, site: str, expert: int, mode: str):
        self._handle, self.site, self.expert, self.mode = handle, site, expert, mode

    def remove(self) -> None:
        """Restore the site's routing (idempotent)."""
        self._handle.remove()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return f"Ablation(site={self.site!r}, expert={self.expert}, mode={self.mode!r})"


def ablate(model: nn.Module, site: str, expert: int, mode: str = "drop") -> Ablation:
    """Ablate ``expert`` of the MoE site ``site`` of ``model`` in ``mode`` until the handle is removed.

    Args:
        model: a zoo model (or any module holding :class:`~moezoo.moe.MoELayer` / ``MoEMLP`` sites).
        site: the site's short name (``"llm.3"``, ``"connector"``, ``"vision.5"``) or module path
            (:mod:`moezoo.analysis.sites`).
        expert: the expert id, ``0 .. E-1``.
        mode: ``"reroute"``, ``"drop"`` or ``"zero"`` (the module docstring says what each does).

    Returns:
        An :class:`Ablation`: use it as ``with ablate(...):`` or call ``.remove()``.

    Raises:
        ValueError: an unknown site (the message lists the sites and their experts), expert or mode, or
            ``"reroute"`` on a router that is not one of the zoo's.
    """
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {ABLATION_MODES}")
    name, module = find_site(model, site)
    num_experts = module.config.num_experts
    if isinstance(expert, bool) or not isinstance(expert, int) or not 0 <= expert < num_experts:
        raise ValueError(f"expert={expert!r} is not an expert of site {name!r}: it has experts 0..{num_experts - 1}")
    router = module.router
    if mode == "reroute":
        _check_reroutable(router)
    handle = router.register_forward_hook(lambda mod, args, routing: ablated_routing(mod, routing, expert, mode))
    return Ablation(handle, name, expert, mode)


def ablated_routing(router: nn.Module, routing: Routing, expert: int, mode: str) -> Routing:
    """``routing``, the output of ``router``, with ``expert`` ablated in ``mode`` (what :func:`ablate`'s hook returns).

    Example:
        >>> from moezoo.moe import MoEConfig, create_router
        >>> router = create_router(MoEConfig(dim=4, expert_dim=8, num_experts=3, top_k=2))
        >>> r = Routing(token_idx=torch.tensor([0, 0]), expert_idx=torch.tensor([0, 1]),
        ...             weight=torch.tensor([0.6, 0.4]), logits=torch.zeros(1, 3), probs=torch.full((1, 3), 1 / 3))
        >>> ablated_routing(router, r, 1, "zero").weight.tolist(), ablated_routing(router, r, 1, "drop").weight.tolist()
        ([0.6000000238418579, 0.0], [1.0, 0.0])
    """
    if mode == "reroute":
        return _reroute(router, routing, expert)
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {ABLATION_MODES}")
    hit = routing.expert_idx == expert
    weight = routing.weight.masked_fill(hit, 0.0)
    if mode == "drop":
        T = routing.probs.shape[0]
        total_T = routing.weight.new_zeros(T).index_add(0, routing.token_idx, routing.weight)
        rest_T = weight.new_zeros(T).index_add(0, routing.token_idx, weight)
        # Rescale the rest to the token's total; a token left with nothing (its only expert) keeps zeros.
        scale_T = torch.where(rest_T > 0, total_T / rest_T.where(rest_T > 0, torch.ones_like(rest_T)),
                              torch.ones_like(rest_T))
        weight = weight * scale_T[routing.token_idx]
    return dataclasses.replace(routing, weight=weight)


def _check_reroutable(router: nn.Module) -> None:
    name = getattr(router, "router_name", type(router).__name__)
    convention = getattr(getattr(router, "config", None), "router_convention", "moezoo")
    if convention != "moezoo" and not hasattr(router, "route_logits"):
        raise ValueError(f"cannot reroute around an expert of a {name!r} router with router_convention="
                         f"{convention!r} (an imported checkpoint's own routing rules); 'drop' and 'zero' work with "
                         "any router")
    if name not in (*SOFTMAX_ROUTERS, "sigmoid", "expert_choice") and not hasattr(router, "route_logits"):
        raise ValueError(f"cannot reroute around an expert of a {name!r} router: reroute knows the zoo's routers "
                         f"{(*SOFTMAX_ROUTERS, 'sigmoid', 'expert_choice')}; 'drop' and 'zero' work with any router")


def _reroute(router: nn.Module, routing: Routing, expert: int) -> Routing:
    _check_reroutable(router)
    config = router.config
    logits_TE = routing.logits.clone()
    logits_TE[:, expert] = -math.inf
    if hasattr(router, "route_logits"):  # a router that routes from given logits (deepspeed_top2), capacity included
        return _chosen(routing, router.route_logits(logits_TE))
    if router.router_name == "sigmoid":
        scores_TE = logits_TE.sigmoid()  # the expert's score is 0; the others' do not depend on it
        probs_TE = scores_TE / scores_TE.sum(-1, keepdim=True)
        select_TE = (scores_TE + router.bias).index_fill(1, torch.tensor([expert], device=scores_TE.device),
                                                         -math.inf)
        return _chosen(routing, token_choice(logits_TE, scores_TE, probs_TE, config, select_TE=select_TE))
    probs_TE = logits_TE.softmax(-1)
    if router.router_name != "expert_choice":
        return _chosen(routing, token_choice(logits_TE, probs_TE, probs_TE, config))
    # Expert choice, as ExpertChoiceRouter picks: every expert its top-C tokens, here without the ablated one.
    capacity = expert_capacity(probs_TE.shape[0], config)
    weight_EC, token_EC = torch.topk(probs_TE.t(), capacity, dim=-1)
    expert_EC = torch.arange(config.num_experts, device=probs_TE.device)[:, None].expand_as(token_EC)
    keep = expert_EC != expert
    return dataclasses.replace(routing, token_idx=token_EC[keep], expert_idx=expert_EC[keep], weight=weight_EC[keep],
                               logits=logits_TE, probs=probs_TE)


def _chosen(routing: Routing, new: Routing) -> Routing:
    """``routing`` with the choice of ``new`` (any other field the router set is kept)."""
    return dataclasses.replace(routing, token_idx=new.token_idx, expert_idx=new.expert_idx, weight=new.weight,
                               logits=new.logits, probs=new.probs)
