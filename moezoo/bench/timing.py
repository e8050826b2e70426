"""Timing and memory measurement shared by the benchmarks.

Machines here are shared and noisy, so contenders are timed *interleaved*
(one repeat of each in turn) and summarised by their median.
"""

from __future__ import annotations

import os
import re
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import torch


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def time_interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int = 1,
                     device: str = "cpu", repeats_of: dict[str, int] | None = None) -> dict[str, list[float]]:
    """Seconds per call of each function, timed round-robin (one list per name, in rounds).

    Round ``r`` of every function ran back to back, so :func:`paired_ratio` over
    rounds cancels the slow drifts of a shared machine.

    Args:
        fns: name -> zero-argument callable.
        repeats: timed calls of each function.
        warmup: untimed calls of each function first.
        device: synchronised around each call when it is CUDA.
        repeats_of: per-name override of ``repeats`` (for slow contenders).

    Example:
        >>> t = time_interleaved({"sum": lambda: sum(range(100))}, repeats=3)
        >>> len(t["sum"]), median(t["sum"]) > 0
        (3, True)
    """
    repeats_of = repeats_of or {}
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for r in range(max(repeats, *repeats_of.values(), 0) if repeats_of else repeats):
        for name, fn in fns.items():
            if r >= repeats_of.get(name, repeats):
                continue
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def median(samples: list[float]) -> float:
    return statistics.median(samples)


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of ``numerator[r] / denominator[r]`` (as many rounds as both have).

    Example:
        >>> paired_ratio([2.0, 4.0, 2.2], [1.0, 1.0, 1.0])
        2.2
    """
    rounds = min(len(numerator), len(denominator))
    return statistics.median(n / d for n, d in zip(numerator[:rounds], denominator[:rounds]))


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> int:
    """Peak bytes allocated by ``fn`` above what was live before it.

    On CUDA this is ``max_memory_allocated``; on CPU it replays the allocation
    events that ``torch.profiler`` records (every tensor alloc/free, in order).

    Example:
        >>> peak_memory(lambda: torch.empty(1 << 20, dtype=torch.uint8)) >= 1 << 20
        True
    """
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with _quiet_kineto(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                    key=lambda e: e.start_ns())
    current = peak = 0
    for event in events:
        current += event.nbytes()
        peak = max(peak, current)
    return peak


# Kineto writes trace chatter (and a CUDA probe error on CPU-only machines) straight
# to file descriptor 2; keep everything else that reaches stderr.
_KINETO_NOISE = re.compile(r"^(USDT:|ERROR:.*gpuGetDeviceCount|\[W.*CPUAllocator)")


@contextmanager
def _quiet_kineto() -> Iterator[None]:
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured:
                if not _KINETO_NOISE.match(line):
                    sys.stderr.write(line)


def max_grad_diff(ours: dict[str, torch.Tensor], reference: torch.nn.Module) -> float:
    """The largest difference between gradients ``ours`` (already mapped to ``reference``'s parameter names and
    layouts) and ``reference``'s own; both sides must have trained the same parameters.

    Example:
        >>> ref = torch.nn.Linear(2, 1)
        >>> ref(torch.ones(1, 2)).sum().backward()
        >>> max_grad_diff({"weight": torch.ones(1, 2), "bias": torch.ones(1)}, ref)
        0.0
    """
    theirs = {name: p.grad for name, p in reference.named_parameters() if p.grad is not None}
    if ours.keys() != theirs.keys():
        raise RuntimeError(f"different parameters were trained: {sorted(ours.keys() ^ theirs.keys())[:5]}")
    return max(float((ours[k] - theirs[k]).abs().max()) for k in ours)
