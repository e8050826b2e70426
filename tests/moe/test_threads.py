"""Thread policy: experts shared out over worker threads, decoding weights read on all threads."""

import threading

import pytest
import torch
import torch.nn.functional as F

import moezoo.moe.threads as threads_module
from moezoo.moe.threads import decoding_linear, partition, run_split


@pytest.mark.parametrize("num_threads", [2, 4])
@pytest.mark.parametrize("shape", [(1, 64), (3, 64), (2, 1, 64)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_split_weight_matches_linear(set_threads, num_threads, shape, with_bias):
    set_threads(num_threads)
    weight = torch.randn(1024, 64)
    bias = torch.randn(1024) if with_bias else None
    x = torch.randn(*shape)
    with torch.no_grad():
        out = decoding_linear(x, weight, bias)
    assert out.shape == (*shape[:-1], 1024)
    torch.testing.assert_close(out, F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)


def test_split_path_is_taken(set_threads, monkeypatch):
    """The batched-GEMM split must actually run for a decoding-sized weight (not only the fallback)."""
    set_threads(2)
    seen = []
    real = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b: seen.append(a.shape[0]) or real(a, b))
    with torch.no_grad():
        decoding_linear(torch.randn(1, 64), torch.randn(1024, 64))
    assert seen == [2]


def test_non_contiguous_input(set_threads):
    set_threads(2)
    weight, x = torch.randn(1024, 64), torch.randn(64, 3).t()  # (3, 64) with strides (1, 3)
    with torch.no_grad():
        torch.testing.assert_close(decoding_linear(x, weight), F.linear(x, weight), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["grad", "many_rows", "small_weight", "indivisible"])
def test_falls_back_to_linear(set_threads, monkeypatch, case):
    set_threads(3 if case == "indivisible" else 2)
    monkeypatch.setattr(torch, "bmm", lambda *a: pytest.fail("took the split path"))
    rows = threads_module._DECODING_ROWS + 1 if case == "many_rows" else 1
    weight = torch.randn(64 if case == "small_weight" else 1024, 64, requires_grad=case == "grad")
    x = torch.randn(rows, 64)
    with torch.set_grad_enabled(case == "grad"):
        out = decoding_linear(x, weight)
    torch.testing.assert_close(out, F.linear(x, weight))
    assert out.requires_grad == (case == "grad")



def _record(workers: int, sizes: list[int], after_item=None) -> dict[int, list[int]]:
    taken: dict[int, list[int]] = {w: [] for w in range(workers)}

    def fn(mine, worker):
        for item in mine:
            taken[worker].append(item)
            if after_item:
                after_item(worker, taken)

    run_split(fn, list(range(len(sizes))), sizes, workers)
    return taken


@pytest.mark.parametrize("workers", [2, 3])
def test_every_item_is_taken_once(workers):
    sizes = torch.randint(1, 50, (40,)).tolist()
    taken = _record(workers, sizes)
    assert sorted(i for items in taken.values() for i in items) == list(range(40))


def test_a_stalled_worker_takes_fewer_items():
    """The caller's thread stalls on its first item until the pool thread has taken all the rest."""
    sizes = [5, 4, 3, 2, 1, 1]
    rest_taken = threading.Event()

    def after_item(worker, taken):
        if worker == 0:
            assert rest_taken.wait(timeout=30)
        elif len(taken[1]) == len(sizes) - 1:
            rest_taken.set()

    taken = _record(2, sizes, after_item)
    assert taken[0] == [0]  # largest first
    assert sorted(taken[1]) == [1, 2, 3, 4, 5]


def test_pool_worker_mirrors_grad_mode():
    """Grad mode is thread-local: the pool thread must run with the caller's."""
    pool_took_one = threading.Event()
    modes = []

    def fn(mine, worker):
        for _ in mine:
            modes.append((worker, torch.is_grad_enabled()))
            if worker == 0:
                assert pool_took_one.wait(timeout=30)
            else:
                pool_took_one.set()

    with torch.no_grad():
        run_split(fn, [0, 1, 2, 3], [1] * 4, 2)
    assert (1, False) in modes and all(not grad for _, grad in modes)


def test_a_failing_worker_stops_the_others():
    """After the caller's worker fails, the rest of the queue is dropped, not run."""
    failed = threading.Event()
    ran = []

    def fn(mine, worker):
        for item in mine:
            if worker == 0:
                failed.set()
                raise RuntimeError("boom")
            assert failed.wait(timeout=30)
            ran.append(item)

    with pytest.raises(RuntimeError, match="boom"):
        run_split(fn, list(range(100)), [1] * 100, 2)
    assert len(ran) < 50


def test_deterministic_mode_uses_the_fixed_split(deterministic):
    sizes = [4, 4, 1, 1, 6]
    expected = {w: group for w, group in enumerate(partition(sizes, 2))}
    for _ in range(3):
        assert _record(2, sizes) == expected


def test_deterministic_mode_reproduces_the_layer_bitwise(deterministic, set_threads):
    from moezoo.moe import MoEConfig, MoELayer

    set_threads(2)
    layer = MoELayer(MoEConfig(dim=32, expert_dim=16, num_experts=8, top_k=2))
    x, grad = torch.randn(512, 32), torch.randn(512, 32)

    def step():
        layer.zero_grad(set_to_none=True)
        inp = x.clone().requires_grad_(True)
        out = layer(inp).hidden_states
        (out * grad).sum().backward()
        return out.detach(), inp.grad, layer.experts.gate_up_proj.grad.clone()

    first = step()
    for _ in range(3):
        assert all(torch.equal(a, b) for a, b in zip(first, step()))
