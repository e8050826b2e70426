"""decoding_linear: the weight read on all intra-op threads must still be F.linear."""

import pytest
import torch
import torch.nn.functional as F

import moezoo.moe.threads as threads_module
from moezoo.moe.threads import decoding_linear


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
