"""``switch_rate``: how often the same tokens go to other experts at two checkpoints.

Three definitions are in use, and they disagree, so each is a ``how``:

- ``"ordered"`` (LibMoE v1, arXiv 2411.00918): a token has switched when its ordered top-k list differs
  anywhere; the rate is the share of such tokens. Swapping the first and second choice counts.
- ``"slot"`` (LibMoE v2): the mean over the ``k`` slots of the share of tokens whose expert in that slot
  differs, i.e. the share of differing (token, slot) pairs.
- ``"set"`` (OLMoE's router saturation, arXiv 2409.02060): the mean over tokens of ``1 - |A ∩ B| / k``;
  the order inside the top-k does not matter.

Example:
    >>> import torch
    >>> a, b = torch.tensor([[0, 1], [2, 3]]), torch.tensor([[1, 0], [2, 0]])
    >>> [switch_rate(a, b, how) for how in ("ordered", "slot", "set")]
    [1.0, 0.75, 0.25]
"""

from __future__ import annotations

import math
from typing import Any

import torch

SWITCH_RATES = ("ordered", "slot", "set")


def switch_rate(routes_a: Any, routes_b: Any, how: str = "ordered") -> float:
    """The share of routing that changed between ``routes_a`` and ``routes_b``, by definition ``how``.

    Args:
        routes_a / routes_b: ``(T, k)`` expert ids, the same ``T`` tokens at two checkpoints, each row in
            rank order (:func:`~moezoo.analysis.chosen_experts` of a token-choice routing).
        how: ``"ordered"``, ``"slot"`` or ``"set"`` (see the module docstring).

    Returns:
        A float in ``[0, 1]``; NaN when there is no token.

    Raises:
        ValueError: an unknown ``how``, or routes that are not two ``(T, k)`` arrays of the same shape.

    Example:
        >>> switch_rate([[0, 1]], [[0, 2]], "set")  # one of the two experts is new: 1 - 1/2
        0.5
        >>> switch_rate([[0, 1]], [[0, 1, 2]])
        Traceback (most recent call last):
        ...
        ValueError: routes_a and routes_b must have the same (T, k) shape (the same tokens); got (1, 2) and (1, 3)
    """
    if how not in SWITCH_RATES:
        raise ValueError(f"unknown switch rate how={how!r}; choose one of {SWITCH_RATES}")
    a, b = torch.as_tensor(routes_a).detach().cpu(), torch.as_tensor(routes_b).detach().cpu()
    for name, r in (("routes_a", a), ("routes_b", b)):
        if r.dim() != 2 or r.is_floating_point() or r.dtype == torch.bool:
            raise ValueError(f"{name} must be (T, k) integer expert ids in rank order; got {r.dtype} of shape "
                             f"{tuple(r.shape)} (a top-1 route of shape (T,) is routes[:, None])")
    if a.shape != b.shape:
        raise ValueError(f"routes_a and routes_b must have the same (T, k) shape (the same tokens); got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    T, k = a.shape
    if T == 0 or k == 0:
        return math.nan
    differ_TK = a != b
    if how == "ordered":
        return float(differ_TK.any(-1).double().mean())
    if how == "slot":
        return float(differ_TK.double().mean(0).mean())
    shared_T = (a[:, :, None] == b[:, None, :]).any(-1).sum(-1)  # |A ∩ B|: a's experts found in b
    return float((1.0 - shared_T.double() / k).mean())
