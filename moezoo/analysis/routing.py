"""``routing_stats``: every statistic of one MoE site's routing over ``T`` tokens, as DESIGN.md defines them.

The questions come from three papers and one codebase:

- *Evaluating Expert Contributions in a MoE LLM for Quiz-Based Tasks* (OLMoE on MMLU, arXiv 2502.17187):
  the experts that never fire (``never_activated``, ``activation_rate``), how close the gate is to uniform
  (``gate_entropy``, ``topk_entropy``), and each expert's accuracy (``expert_accuracy``);
- LibMoE (arXiv 2411.00918): router entropy, the top-1 margin (``margin``), expert selection per task
  (``expert_frequency``, ``topk_frequency``);
- MH-MoE (arXiv 2404.15045): the share of experts activated, ``activation_rate`` counted as top-k / T;
- MoE-LLaVA (arXiv 2401.15947) and Uni-MoE (arXiv 2405.11273): how each modality's tokens spread over
  the experts (``modality_frequency``).

**Every router of the zoo** is read the same way; a record is ``probs (T, E)`` and the chosen experts,
which :func:`chosen_experts` takes from a :class:`~moezoo.moe.Routing`:

- ``probs`` are the router's probabilities: the softmax of the logits (``softmax``, ``noisy_topk``,
  ``cosine``, ``perturbed_cosine``, ``hyper``, ``expert_choice``), and for the ``sigmoid`` router its
  scores normalised to sum to 1 (``Routing.probs`` already holds exactly these);
- MH-MoE routes ``h`` sub-tokens per token: each sub-token is a token here (``T`` = tokens x ``h``);
  ``correct`` and ``modality`` may be given per token, and each sub-token inherits its token's value;
- shared experts (DeepSeek-MoE, Qwen2-MoE) are not routed and are not counted;
- expert choice has no ``(T, k)`` shape (a token may have 0 to ``E`` experts): its record passes
  ``expert_idx`` as a ``(T, E)`` boolean mask of the (token, expert) pairs chosen. Counts and
  frequencies are then per expert over those pairs; the entropies and the margin are computed over
  ``probs`` (the top-``top_k`` of each token's probabilities, ``top_k`` the configured average).

Example:
    >>> import torch
    >>> probs = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.1, 0.6, 0.2, 0.1]])
    >>> s = routing_stats(probs, top_k=2)
    >>> s["topk_counts"].tolist(), s["top1_counts"].tolist(), s["never_activated"]
    ([1, 2, 1, 0], [1, 1, 0, 0], [3])
    >>> round(s["margin"], 4)  # ((0.5 - 0.3) / 0.8 + (0.6 - 0.2) / 0.8) / 2
    0.375
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from moezoo.analysis.stats import entropy, normalized_load_entropy, topk_experts


def chosen_experts(routing: Any) -> torch.Tensor:
    """The experts a :class:`~moezoo.moe.Routing` chose, in the form :func:`routing_stats` takes as ``expert_idx``.

    Token choice: ``(T, k)`` int64, each token's experts in rank order (a token-choice routing lists its
    ``T*k`` assignments rank-major). Expert choice: ``(T, E)`` bool, ``True`` where the expert picked the
    token. ``T`` is ``routing.probs.shape[0]`` (sub-tokens for MH-MoE). This is the router's choice: with a
    capacity limit the dispatch may drop some of these assignments afterwards (``MoEOutput.tokens_per_expert``
    counts what the experts processed).

    Example:
        >>> from moezoo.moe import Routing
        >>> r = Routing(token_idx=torch.tensor([0, 1, 0, 1]), expert_idx=torch.tensor([2, 0, 1, 3]),
        ...             weight=torch.ones(4), logits=torch.zeros(2, 4), probs=torch.full((2, 4), 0.25))
        >>> chosen_experts(r).tolist()  # ranks: token 0 -> 2 then 1, token 1 -> 0 then 3
        [[2, 1], [0, 3]]
    """
    T, E = routing.probs.shape
    if not routing.token_choice:
        mask = torch.zeros(T, E, dtype=torch.bool, device=routing.expert_idx.device)
        mask[routing.token_idx, routing.expert_idx] = True
        return mask
    if T == 0:
        return routing.expert_idx.new_zeros(0, 0)
    k = routing.expert_idx.numel() // T
    return routing.expert_idx.reshape(k, T).t().long()


def routing_stats(probs: torch.Tensor, top_k: int, renormalize: bool = True, correct: Any = None,
                  modality: Any = None, expert_idx: torch.Tensor | None = None) -> dict[str, Any]:
    """The routing statistics of one MoE site over ``T`` tokens (see the module docstring for the routers).

    Args:
        probs: ``(T, E)`` the router's probabilities over all experts, one row per (sub-)token.
        top_k: ``k``, the experts per token (for expert choice, the configured average).
        renormalize: the margin on the top-k weights renormalised to sum to 1 (True), or on the raw
            probabilities (False: OLMoE and Switch keep the raw softmax weights).
        correct: ``(T,)`` bools, whether the answer the token belongs to is right (per token or per
            sub-token); enables the accuracy keys.
        modality: ``(T,)`` labels (strings or ints, per token or per sub-token); enables ``modality_frequency``.
        expert_idx: the experts chosen: ``(T, k)`` ids in rank order (token choice), or a ``(T, E)`` bool
            mask (expert choice); default: the top-``k`` of ``probs``, ties to the lower index.

    Returns:
        A dict; ``(E,)`` values are tensors (counts int64, the rest float64), scalars are floats:

        - ``topk_counts``, ``top1_counts``: tokens with the expert among their chosen ones / as their
          first choice (the first in rank order; for expert choice, the chosen expert of highest probability);
        - ``expert_frequency`` = top-1 counts / T and ``topk_frequency`` = top-k counts / (k T): shares that
          each sum to 1 (with expert choice, over the pairs chosen and the tokens that got an expert); LibMoE's
          expert selection, OLMoE's activation frequency per expert and layer;
        - ``activation_rate`` = top-k counts / T, MH-MoE's and OLMoE's convention, summing to ``k``;
        - ``never_activated``: the ids of the experts with no top-k count (a list): OLMoE's "over 60% per layer";
        - ``gate_entropy``: the mean over tokens of ``H(p_t) / ln E``: LibMoE's router entropy, normalised
          (1 is a uniform gate);
        - ``topk_entropy``: the mean over tokens of ``H(g_t) / ln k``, ``g`` the top-k weights renormalised:
          OLMoE's top-k gate distribution, near uniform (NaN for ``k = 1``: one weight has no spread);
        - ``load_entropy``: ``H(topk_frequency) / ln E``, DESIGN.md's load evenness (:mod:`moezoo.analysis.stats`);
        - ``margin``: LibMoE's margin, the mean of ``g(1) - g(2)``, the two largest top-k weights, renormalised
          or raw by ``renormalize``. For ``k = 1`` the renormalised weight is always 1 and has no runner-up, so
          the margin is then the chosen expert's probability minus the best other one's, ``p(1) - p(2)``, in
          both settings (NaN for ``E = 1``);
        - ``expert_accuracy`` / ``expert_accuracy_top1``: per expert, the share of its top-k / top-1 tokens
          whose ``correct`` is true; NaN where it has none (only with ``correct``): OLMoE's per-expert
          accuracy (34% to 80% in one layer);
        - ``modality_frequency``: ``{label: (E,)}``, each modality's top-k shares among its own tokens
          (only with ``modality``): MoE-LLaVA's and Uni-MoE's view;
        - ``num_tokens``, ``num_experts``, ``top_k``.

        Entropies are NaN where they are undefined: no token, or ``E = 1`` / ``k = 1``.

    Raises:
        ValueError: shapes that do not fit ``probs``, ``top_k`` out of ``[1, E]``, or expert ids out of range.

    Example:
        >>> s = routing_stats(torch.full((3, 4), 0.25), top_k=2, correct=[True, False, True])
        >>> s["gate_entropy"], s["topk_counts"].tolist(), s["expert_accuracy"].tolist()[:2]  # ties: experts 0, 1
        (1.0, [3, 3, 0, 0], [0.6666666666666666, 0.6666666666666666])
    """
    probs = torch.as_tensor(probs).detach().double().cpu()
    if probs.dim() != 2:
        raise ValueError(f"probs must be (T, E): one row of router probabilities per token; got shape "
                         f"{tuple(probs.shape)}")
    T, E = probs.shape
    if not 1 <= top_k <= E:
        raise ValueError(f"top_k={top_k} must be in [1, E={E}] (E: the experts, probs' last dim)")
    member_TE, top1_T, weights_TK, experts_TK = _choices(probs, top_k, expert_idx)

    topk_counts = member_TE.sum(0)
    top1_counts = torch.bincount(top1_T[top1_T >= 0], minlength=E)
    stats: dict[str, Any] = {
        "num_tokens": T, "num_experts": E, "top_k": top_k,
        "topk_counts": topk_counts, "top1_counts": top1_counts,
        "expert_frequency": _shares(top1_counts), "topk_frequency": _shares(topk_counts),
        "activation_rate": topk_counts.double() / T if T else torch.full((E,), math.nan, dtype=torch.float64),
        "never_activated": [e for e in range(E) if topk_counts[e] == 0],
        "gate_entropy": _mean(entropy(probs) / math.log(E)) if E > 1 else math.nan,
        "load_entropy": normalized_load_entropy(topk_counts),
    }
    g_TK = weights_TK / weights_TK.sum(-1, keepdim=True).clamp_min(1e-300)
    stats["topk_entropy"] = _mean(entropy(g_TK) / math.log(top_k)) if top_k > 1 else math.nan
    if top_k > 1:
        v_TK = torch.sort(g_TK if renormalize else weights_TK, dim=-1, descending=True).values
        stats["margin"] = _mean(v_TK[:, 0] - v_TK[:, 1])
    elif E > 1:  # p(chosen) minus the best other expert's p
        others_T = probs.scatter(1, experts_TK, -math.inf).max(-1).values
        stats["margin"] = _mean(weights_TK[:, 0] - others_T)
    else:
        stats["margin"] = math.nan
    if correct is not None:
        right_T = _per_row(torch.as_tensor(correct).reshape(-1).bool(), T, "correct")
        stats["expert_accuracy"] = _ratio((member_TE & right_T[:, None]).sum(0), topk_counts)
        hits = torch.bincount(top1_T[(top1_T >= 0) & right_T], minlength=E)
        stats["expert_accuracy_top1"] = _ratio(hits, top1_counts)
    if modality is not None:
        labels = _per_row(_labels(modality), T, "modality")
        stats["modality_frequency"] = {
            m: _shares(member_TE[torch.tensor([x == m for x in labels], dtype=torch.bool)].sum(0))
            for m in sorted(set(labels), key=lambda x: (str(type(x)), x))}
    return stats


def _choices(probs: torch.Tensor, top_k: int,
             expert_idx: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(member (T, E) bool, top-1 (T,) with -1 for none, the k weights (T, k) the entropy and margin read,
    their experts (T, k))``."""
    T, E = probs.shape
    if expert_idx is None:
        expert_idx = topk_experts(probs, top_k) if T else torch.zeros(0, top_k, dtype=torch.long)
    expert_idx = torch.as_tensor(expert_idx).detach().cpu()
    if expert_idx.dtype == torch.bool:  # expert choice: the (token, expert) pairs chosen
        if tuple(expert_idx.shape) != (T, E):
            raise ValueError(f"an expert-choice mask must be (T, E) = {(T, E)} like probs; got "
                             f"{tuple(expert_idx.shape)}")
        member_TE = expert_idx
        masked = probs.masked_fill(~member_TE, -math.inf)
        top1_T = torch.argsort(-masked, dim=-1, stable=True)[:, 0] if T else torch.zeros(0, dtype=torch.long)
        top1_T = torch.where(member_TE.any(-1), top1_T, -1)
        weights_TK, idx_TK = torch.sort(probs, dim=-1, descending=True, stable=True)
        return member_TE, top1_T, weights_TK[:, :top_k], idx_TK[:, :top_k]
    if expert_idx.dim() != 2 or tuple(expert_idx.shape) != (T, top_k):
        raise ValueError(f"expert_idx must be (T, k) = {(T, top_k)}: each token's top_k experts in rank order "
                         f"(or a (T, E) bool mask for expert choice); got {tuple(expert_idx.shape)}")
    expert_idx = expert_idx.long()
    if expert_idx.numel() and (int(expert_idx.min()) < 0 or int(expert_idx.max()) >= E):
        raise ValueError(f"expert ids must be in [0, {E}); got {int(expert_idx.min())}..{int(expert_idx.max())}")
    member_TE = torch.zeros(T, E, dtype=torch.bool).scatter_(1, expert_idx, True)
    top1_T = expert_idx[:, 0] if T else expert_idx.new_zeros(0)
    return member_TE, top1_T, probs.gather(1, expert_idx), expert_idx


def _shares(counts: torch.Tensor) -> torch.Tensor:
    total = counts.sum()
    return counts.double() / total if total > 0 else torch.full(counts.shape, math.nan, dtype=torch.float64)


def _ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    return torch.where(den > 0, num.double() / den.clamp_min(1), torch.tensor(math.nan, dtype=torch.float64))


def _mean(values: torch.Tensor) -> float:
    return float(values.mean()) if values.numel() else math.nan


def _labels(modality: Any) -> list:
    if isinstance(modality, torch.Tensor):
        return modality.reshape(-1).tolist()
    return list(modality)


def _per_row(values: Sequence | torch.Tensor, rows: int, what: str) -> Any:
    """``values`` per row of probs: as given for ``rows`` values, each repeated ``h`` times for ``rows / h``
    (MH-MoE: token ``t``'s sub-tokens are rows ``t*h .. t*h + h - 1``)."""
    n = len(values)
    if n == rows:
        return values
    if n and rows % n == 0:
        h = rows // n
        if isinstance(values, torch.Tensor):
            return values.repeat_interleave(h)
        return [v for v in values for _ in range(h)]
    raise ValueError(f"{what} has {n} values; probs has {rows} rows (give one per row, or one per token when "
                     f"each token has the same number of sub-tokens)")
