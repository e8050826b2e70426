"""``switch_rate``'s three definitions on routes worked out by hand, and its checks."""

from __future__ import annotations

import math

import pytest
import torch

from moezoo.analysis import switch_rate

# Four tokens, top-2, ordered expert ids at checkpoints A and B.
A = torch.tensor([[0, 1],    # t0: the same list
                  [2, 3],    # t1: the same set, the order swapped
                  [0, 1],    # t2: one expert replaced, in the second slot
                  [4, 5]])   # t3: both replaced
B = torch.tensor([[0, 1],
                  [3, 2],
                  [0, 6],
                  [6, 7]])


def test_ordered_counts_a_token_whose_list_differs_anywhere():
    # t1, t2, t3 differ (t1 only in order): 3 of 4 tokens.
    assert switch_rate(A, B, "ordered") == 0.75
    assert switch_rate(A, B) == 0.75   # the default


def test_slot_averages_the_per_slot_differences():
    # Slot 1: t1 (2 vs 3), t3 (4 vs 6) differ: 2/4. Slot 2: t1, t2, t3 differ: 3/4. Mean: (0.5 + 0.75) / 2.
    assert switch_rate(A, B, "slot") == pytest.approx(0.625, abs=1e-15)


def test_set_ignores_the_order():
    # 1 - |A ∩ B| / k per token: t0 1 - 2/2 = 0; t1 0 (same set); t2 1 - 1/2 = 0.5; t3 1 - 0/2 = 1. Mean: 1.5 / 4.
    assert switch_rate(A, B, "set") == pytest.approx(0.375, abs=1e-15)


def test_identical_routes_never_switch_and_disjoint_ones_always_do():
    for how in ("ordered", "slot", "set"):
        assert switch_rate(A, A.clone(), how) == 0.0
        assert switch_rate(A, A + 8, how) == 1.0
    # Top-1 routes (k = 1): all three agree, the share of tokens sent elsewhere.
    a, b = [[0], [1], [2], [3], [0]], [[0], [1], [3], [3], [1]]
    assert {switch_rate(a, b, how) for how in ("ordered", "slot", "set")} == {0.4}
    assert math.isnan(switch_rate(torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 2, dtype=torch.long)))


def test_bad_routes_and_names_say_what_is_expected():
    with pytest.raises(ValueError, match=r"unknown switch rate how='jaccard'; "
                                         r"choose one of \('ordered', 'slot', 'set'\)"):
        switch_rate(A, B, "jaccard")
    with pytest.raises(ValueError, match=r"same \(T, k\) shape \(the same tokens\); got \(4, 2\) and \(3, 2\)"):
        switch_rate(A, B[:3])
    with pytest.raises(ValueError, match=r"routes_a must be \(T, k\) integer expert ids.*routes\[:, None\]"):
        switch_rate(A[:, 0], B[:, 0])
    with pytest.raises(ValueError, match="routes_b must be .* integer expert ids"):
        switch_rate(A, B.float())
