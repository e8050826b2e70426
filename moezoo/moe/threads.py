"""CPU thread policy for the expert loops.

Per-expert GEMMs are small, and so are the gathers and scatters around them: an
OpenMP team of threads scales poorly on them and, on a busy machine, stalls at
every barrier. Disjoint groups of experts therefore run on separate Python
threads, each with one intra-op thread (torch releases the GIL inside ops), and the
caller's thread takes the first group itself.

Decoding is the extreme case: hundreds of tiny ops and matrix-vector products
bound by reading weights. :func:`cpu_decoding` runs the caller's ops on one thread
and lets the few-token expert path and :func:`decoding_linear` read weights on all
of them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import torch
import torch.nn.functional as F

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_decode_workers = 1


def _forget_pool() -> None:
    """A forked child (e.g. a DataLoader worker) inherits the pool but not its threads."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def partition(sizes: Sequence[int], workers: int) -> list[list[int]]:
    """Split item indices into at most ``workers`` contiguous groups of about equal total size.

    Example:
        >>> partition([4, 4, 1, 1, 6], 2)
        [[0, 1], [2, 3, 4]]
    """
    total = max(sum(sizes), 1)
    groups: list[list[int]] = [[] for _ in range(workers)]
    done = 0
    for i, size in enumerate(sizes):
        groups[min(workers - 1, done * workers // total)].append(i)
        done += size
    return [g for g in groups if g]


def run_split(fn: Callable[[list[T], int], None], items: Sequence[T], sizes: Sequence[int], workers: int) -> None:
    """Call ``fn(group, worker_index)`` over ``items`` split into ``workers`` balanced groups.

    Group 0 runs on the caller's thread, the others on pool threads; every thread
    uses one intra-op thread while it works, and grad / inference mode mirror the
    caller's (they are thread-local).

    Example:
        >>> seen = []
        >>> run_split(lambda group, worker: seen.extend(group), ["a", "b", "c"], [1, 1, 1], 2)
        >>> sorted(seen)
        ['a', 'b', 'c']
    """
    if workers <= 1 or len(items) < 2:
        fn(list(items), 0)
        return
    global _pool, _pool_size
    if _pool is None or _pool_size < workers - 1:
        _pool_size = workers - 1
        _pool = ThreadPoolExecutor(max_workers=_pool_size, initializer=torch.set_num_threads, initargs=(1,),
                                   thread_name_prefix="moezoo-experts")
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def call(group: list[T], worker: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            fn(group, worker)

    groups = [[items[i] for i in g] for g in partition(sizes, workers)]
    futures = [_pool.submit(call, group, worker) for worker, group in enumerate(groups) if worker > 0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn(groups[0], 0)
    finally:
        torch.set_num_threads(threads)
        for future in futures:
            future.result()


def reduce_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """Sum per-worker partial outputs into the first one (in place)."""
    for part in parts[1:]:
        parts[0].add_(part)
    return parts[0]


def decode_workers() -> int:
    """Threads the few-token paths may use: more than 1 only inside :func:`cpu_decoding`."""
    return _decode_workers


@contextmanager
def cpu_decoding() -> Iterator[None]:
    """Thread policy for a loop of decoding steps on CPU (see the module docstring).

    Example:
        >>> with cpu_decoding():
        ...     torch.get_num_threads()
        1
    """
    global _decode_workers
    threads, previous = torch.get_num_threads(), _decode_workers
    torch.set_num_threads(1)
    _decode_workers = threads
    try:
        yield
    finally:
        _decode_workers = previous
        torch.set_num_threads(threads)


def decoding_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)``; inside :func:`cpu_decoding`, output rows split across threads.

    For the large matrix-vector products of a decoding step (the LM head) that
    reads the weight at the speed of all threads instead of one.

    Example:
        >>> w, x = torch.randn(2048, 8), torch.randn(1, 8)
        >>> with cpu_decoding():
        ...     torch.allclose(decoding_linear(x, w), x @ w.t())
        True
    """
    workers = _decode_workers if x.device.type == "cpu" and weight.shape[0] >= 1024 else 1
    if workers == 1:
        return F.linear(x, weight)
    out = x.new_empty(*x.shape[:-1], weight.shape[0])
    bounds = [weight.shape[0] * i // workers for i in range(workers + 1)]

    def run(group: list[tuple[int, int]], worker: int) -> None:
        for lo, hi in group:
            torch.matmul(x, weight[lo:hi].t(), out=out[..., lo:hi])

    run_split(run, list(zip(bounds[:-1], bounds[1:])), [1] * workers, workers)
    return out
