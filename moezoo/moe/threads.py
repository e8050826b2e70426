"""CPU thread policy: expert loops on Python threads, decoding GEMVs on the OpenMP team.

Per-expert GEMMs are small, and so are the gathers and scatters around them: an
OpenMP team of threads scales poorly on them and, on a busy machine, stalls at
every barrier. The experts therefore run on separate Python threads, each with one
intra-op thread (torch releases the GIL inside ops), the caller's thread among
them. Each thread takes the next expert from a shared queue, largest first, so a
thread that starts late or runs slow (the OpenMP team of the op before still
spinning on its core, a neighbour on a shared machine) simply takes fewer.

Decoding is the other extreme: matrix-vector products bound by reading weights,
which MKL runs on one thread. :func:`decoding_linear` spreads them over the
intra-op (OpenMP) threads instead, whose hand-off is far cheaper than a Python
thread's (a few microseconds against about 70 on these VMs).
"""

from __future__ import annotations

import os
import queue
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

import torch
import torch.nn.functional as F

T = TypeVar("T")

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
# decoding_linear splits weights of at least this many elements, for at most this many rows.
_DECODING_MIN_WEIGHT = 1 << 16
_DECODING_ROWS = 8
_split_records: list[list[int]] = []  # the open record_splits() lists


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


def run_split(fn: Callable[[Iterable[T], int], None], items: Sequence[T], sizes: Sequence[int], workers: int) -> None:
    """Call ``fn(items_of_worker, worker_index)`` on ``workers`` threads that share out ``items``.

    Worker 0 is the caller's thread, the others are pool threads; every thread uses
    one intra-op thread while it works, and grad / inference mode mirror the
    caller's (they are thread-local). By default the workers pull items from one
    queue, largest ``sizes`` first, so the split adapts to how fast each thread
    actually runs; which worker gets which item then varies from call to call. With
    ``torch.use_deterministic_algorithms(True)`` the split is fixed instead:
    contiguous groups of about equal total size (:func:`partition`), so per-worker
    partial sums, and the results, are bitwise reproducible.

    Example:
        >>> seen = []
        >>> run_split(lambda mine, worker: seen.extend(mine), ["a", "b", "c"], [1, 1, 1], 2)
        >>> sorted(seen)
        ['a', 'b', 'c']
    """
    for record in _split_records:
        record.append(workers if workers > 1 and len(items) > 1 else 1)
    if workers <= 1 or len(items) < 2:
        fn(list(items), 0)
        return
    global _pool, _pool_size
    if _pool is None or _pool_size < workers - 1:
        _pool_size = workers - 1
        _pool = ThreadPoolExecutor(max_workers=_pool_size, initializer=torch.set_num_threads, initargs=(1,),
                                   thread_name_prefix="moezoo-experts")
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def call(mine: Iterable[T], worker: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            fn(mine, worker)

    shared: queue.SimpleQueue[T] = queue.SimpleQueue()
    if torch.are_deterministic_algorithms_enabled():
        shares: list[Iterable[T]] = [[items[i] for i in group] for group in partition(sizes, workers)]
    else:
        for i in sorted(range(len(items)), key=lambda i: -sizes[i]):
            shared.put(items[i])
        shares = [_drain(shared) for _ in range(workers)]
    futures = [_pool.submit(call, mine, worker) for worker, mine in enumerate(shares) if worker > 0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn(shares[0], 0)
    except BaseException:
        for _ in _drain(shared):  # the other workers stop after their current item
            pass
        raise
    finally:
        torch.set_num_threads(threads)
        for future in futures:
            future.result()


@contextmanager
def record_splits() -> Iterator[list[int]]:
    """Record how many threads each :func:`run_split` call in this block runs on (a test and profiling hook).

    Yields a list that gets one entry per call, e.g. the expert loops of an MoE layer's forward and
    backward; 1 means the caller's thread alone. Calls from any thread are recorded.

    Example:
        >>> with record_splits() as workers:
        ...     run_split(lambda mine, worker: list(mine), ["a", "b", "c"], [1, 1, 1], 2)
        ...     run_split(lambda mine, worker: list(mine), ["a"], [1], 2)
        >>> workers
        [2, 1]
    """
    record: list[int] = []
    _split_records.append(record)
    try:
        yield record
    finally:
        _split_records.remove(record)


@contextmanager
def decoding_split(min_weight: int) -> Iterator[None]:
    """Inside this block, :func:`decoding_linear` splits weights of at least ``min_weight`` elements.

    By default only weights of 64K elements or more are split: a smaller one is read faster by one
    thread than handed out to several. ``decoding_split(0)`` splits every weight, so that a tiny test
    model takes the path a real model's decoding takes. The setting is process-wide (a tuning and
    test hook, not for use from concurrent threads).

    Example:
        >>> w, x = torch.randn(64, 8), torch.randn(1, 8)
        >>> with decoding_split(0), torch.no_grad():
        ...     torch.allclose(decoding_linear(x, w), x @ w.t(), atol=1e-5)
        True
    """
    global _DECODING_MIN_WEIGHT
    before, _DECODING_MIN_WEIGHT = _DECODING_MIN_WEIGHT, min_weight
    try:
        yield
    finally:
        _DECODING_MIN_WEIGHT = before


def _drain(shared: queue.SimpleQueue) -> Iterator:
    """Items from ``shared`` until it is empty (thread-safe: each item is taken once)."""
    while True:
        try:
            yield shared.get_nowait()
        except queue.Empty:
            return


def reduce_sum(parts: list[torch.Tensor]) -> torch.Tensor:
    """Sum per-worker partial outputs into the first one (in place)."""
    for part in parts[1:]:
        parts[0].add_(part)
    return parts[0]


def gemv_threads(x: torch.Tensor, *row_counts: int) -> int:
    """How many row blocks a few-row GEMM on ``x`` splits its weights into: the intra-op
    threads on CPU without gradients if they divide every ``row_counts``, else 1."""
    t = torch.get_num_threads()
    if t == 1 or x.device.type != "cpu" or torch.is_grad_enabled() or any(n % t for n in row_counts):
        return 1
    return t


def row_blocks(weight: torch.Tensor, blocks: int, index: int = 0) -> torch.Tensor:
    """The ``(O, K)`` matrix ``weight`` (2-D) or ``weight[index]`` (3-D, contiguous) as
    ``(blocks, K, O // blocks)``: its output rows in ``blocks`` transposed blocks, a view.

    Example:
        >>> w = torch.arange(12.0).view(4, 3)
        >>> torch.equal(row_blocks(w, 2)[1], w[2:].t())
        True
    """
    rows, cols = weight.shape[-2:]
    size = rows // blocks
    offset = weight.storage_offset() + index * rows * cols
    return weight.as_strided((blocks, cols, size), (size * cols, 1, cols), offset)


def broadcast_rows(x: torch.Tensor, blocks: int) -> torch.Tensor:
    """``(M, K)`` rows as ``(blocks, M, K)``, the same rows for every block (a view)."""
    return x.as_strided((blocks, *x.shape), (0, *x.stride()))


def decoding_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)``, reading ``weight`` on all intra-op threads when ``x`` has few rows.

    A decoding step multiplies a handful of rows by each weight: a matrix-vector
    product bound by reading the weight, which MKL runs on one thread. Viewing the
    weight's output rows as ``t`` blocks (:func:`row_blocks`) and multiplying them
    in one batched GEMM lets the OpenMP team read the blocks in parallel (about
    1.7x the bandwidth on 2 cores), with no copy of the weight and the threads'
    cheap hand-off. Used without gradients on CPU; anything else is plain ``F.linear``.

    Example:
        >>> w, x = torch.randn(8192, 8), torch.randn(1, 8)  # 64K weights: split when threads > 1
        >>> with torch.no_grad():
        ...     torch.allclose(decoding_linear(x, w), x @ w.t(), atol=1e-5)
        True
    """
    rows = x.numel() // max(x.shape[-1], 1)
    t = gemv_threads(x, weight.shape[0])
    if t == 1 or rows > _DECODING_ROWS or weight.numel() < _DECODING_MIN_WEIGHT or not weight.is_contiguous():
        return F.linear(x, weight, bias)
    out_rows = weight.shape[0]
    out = torch.bmm(broadcast_rows(x.reshape(rows, x.shape[-1]), t), row_blocks(weight, t))  # (t, rows, O/t)
    out = out.view(rows, out_rows) if rows == 1 else out.transpose(0, 1).reshape(rows, out_rows)
    if bias is not None:
        out = out + bias
    return out.view(*x.shape[:-1], out_rows)
