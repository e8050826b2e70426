"""Token dispatch: sort assignments by expert, run the experts, combine.

The experts' forward *and* backward live in one autograd function, so the
``(N, D)`` gathered copy of the tokens is never stored: backward re-gathers it and
recomputes the activation from the saved pre-activation ``h``. That keeps the
memory of a sparse layer at the level of a dense FFN with the same active FLOPs.

The GEMMs run over *segments* of the expert-sorted assignments:

* ``fused`` (CPU default): one segment per expert. Gather, up-projection,
  activation, down-projection and scatter-add of one expert run back to back on a
  cache-sized block, which on CPU beats one big grouped GEMM over ``(N, D)``.
* ``grouped_mm`` (CUDA default): one segment holding all experts, computed with
  ``torch._grouped_mm`` and device-side offsets, so the GEMMs need no host sync.

The mask-loop oracle the tests compare against is in :mod:`moezoo.moe.reference`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

from moezoo.moe.routers import Routing, expert_counts

# (row_start, row_end, first_expert, last_expert + 1, grouped-GEMM offsets or None)
Segment = tuple[int, int, int, int, "torch.Tensor | None"]


@dataclass
class Dispatch:
    """Assignments sorted (stably) by expert, with capacity overflow removed."""

    token_idx: torch.Tensor  # (N,)
    weight: torch.Tensor  # (N,)
    counts: torch.Tensor  # (E,) assignments each expert processes
    num_dropped: torch.Tensor  # () assignments dropped by capacity


def sort_by_expert(routing: Routing, num_experts: int, capacity: int | None = None) -> Dispatch:
    """Group ``routing``'s assignments by expert; keep at most ``capacity`` per expert.

    A stable sort keeps the router's priority order inside each expert, so the
    overflow dropped is the lowest-priority assignments (later ranks, later tokens).
    """
    expert_sorted, order = torch.sort(routing.expert_idx, stable=True)
    counts = expert_counts(routing.expert_idx, num_experts)
    num_dropped = counts.new_zeros(())
    if capacity is not None:
        starts = torch.cumsum(counts, 0) - counts
        position = torch.arange(order.numel(), device=order.device) - starts[expert_sorted]
        order = order[position < capacity]
        kept = counts.clamp(max=capacity)
        num_dropped = counts.sum() - kept.sum()
        counts = kept
    return Dispatch(routing.token_idx[order], routing.weight[order], counts, num_dropped)


def grouped_mm_supported(*tensors: torch.Tensor) -> bool:
    """``torch._grouped_mm`` needs every row stride to be a multiple of 16 bytes."""
    return all(t.shape[-1] * t.element_size() % 16 == 0 for t in tensors)


def plan_segments(counts: torch.Tensor, mode: str, rows: int) -> list[Segment]:
    """Segments over ``rows`` sorted assignments: one per expert for ``fused``
    (reads ``counts`` on the host), or one for all experts for ``grouped_mm``
    (device-side offsets, no host sync)."""
    if mode == "grouped_mm":
        offsets = torch.cumsum(counts, 0, dtype=torch.int32)
        return [(0, rows, 0, counts.numel(), offsets)]
    segments, start = [], 0
    for expert, count in enumerate(counts.tolist()):
        if count:
            segments.append((start, start + count, expert, expert + 1, None))
            start += count
    return segments


def expert_ffn(x_TD: torch.Tensor, dispatch: Dispatch, w_in: torch.Tensor, w_out: torch.Tensor,
               glu: bool, mode: str = "fused") -> torch.Tensor:
    """``sum_e weight * down_e(act(in_e(x)))`` over the dispatched assignments.

    Args:
        x_TD: ``(T, D)`` tokens.
        dispatch: from :func:`sort_by_expert`.
        w_in: ``(E, H, D)``, ``H = 2 * I`` for SwiGLU (gate rows first) or ``I`` for GELU.
        w_out: ``(E, D, I)``.
        glu: SwiGLU (True) or GELU (False).
        mode: ``"fused"`` or ``"grouped_mm"``.

    Returns:
        ``(T, D)``; tokens with no assignment get zeros.
    """
    segments = plan_segments(dispatch.counts, mode, dispatch.token_idx.numel())
    return _ExpertFFN.apply(x_TD, dispatch.token_idx, dispatch.weight.to(x_TD.dtype), w_in, w_out, segments, glu)


def direct_ffn(x_TD: torch.Tensor, routing: Routing, w_in: torch.Tensor, w_out: torch.Tensor,
               glu: bool) -> torch.Tensor:
    """Inference path for a handful of assignments (a decoding step).

    With about one assignment per expert, sorting, segment planning, an autograd
    function and worker threads cost more than the expert matrix-vector products,
    which are bound by reading the weights. Here each active expert runs directly on
    its rows, in expert order. No gradients flow through this path.
    """
    rows_of: dict[int, list[int]] = {}
    for j, expert in enumerate(routing.expert_idx.tolist()):
        rows_of.setdefault(expert, []).append(j)
    weight = routing.weight.to(x_TD.dtype)
    experts = sorted(rows_of.items())
    workers = min(_decode_workers, len(experts)) if x_TD.device.type == "cpu" else 1
    outs = [torch.zeros_like(x_TD) for _ in range(workers)]

    def run(group, worker):
        for k, _ in group:
            expert, js = experts[k]
            pick = slice(js[0], js[0] + 1) if len(js) == 1 else torch.tensor(js, device=x_TD.device)
            tok = routing.token_idx[pick]
            a = _act(F.linear(x_TD[tok], w_in[expert]), glu).mul_(weight[pick, None])
            outs[worker].index_add_(0, tok, F.linear(a, w_out[expert]))

    _run_grouped(run, [(k, (0, len(js), e, e + 1, None)) for k, (e, js) in enumerate(experts)], workers)
    return _reduce(outs)


_decode_workers = 1


def decoding_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)``; inside :func:`cpu_decoding`, output rows split across threads.

    For the large matrix-vector products of a decoding step (the LM head) that
    reads the weight at the speed of all threads instead of one.

    Example:
        >>> w, x = torch.randn(64, 8), torch.randn(1, 8)
        >>> with cpu_decoding():
        ...     torch.allclose(decoding_linear(x, w), x @ w.t())
        True
    """
    workers = _decode_workers if x.device.type == "cpu" and weight.shape[0] >= 1024 else 1
    if workers == 1:
        return F.linear(x, weight)
    out = x.new_empty(*x.shape[:-1], weight.shape[0])
    bounds = [weight.shape[0] * i // workers for i in range(workers + 1)]

    def run(group, worker):
        for _, (lo, hi, *_) in group:
            torch.matmul(x, weight[lo:hi].t(), out=out[..., lo:hi])

    _run_grouped(run, [(i, (bounds[i], bounds[i + 1], 0, 0, None)) for i in range(workers)], workers)
    return out


@contextmanager
def cpu_decoding() -> Iterator[None]:
    """Thread policy for a loop of decoding steps on CPU.

    A decoding step is hundreds of tiny ops plus matrix-vector products bound by
    reading weights. An OpenMP team only adds barriers to the tiny ops (and its idle
    threads spin on the cores), while experts read on separate threads fetch weights
    about twice as fast. So inside this context the caller's ops run on one thread
    and the few-token expert path (:func:`direct_ffn`) uses all of them.

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


def _act(h: torch.Tensor, glu: bool) -> torch.Tensor:
    if glu:
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.gelu(h)


def _act_and_grad(h: torch.Tensor, glu: bool) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Recompute the activation from ``h`` and return it with its backward.

    SiLU is evaluated once and shared by both, and the two halves of the SwiGLU
    gradient are written straight into one buffer (no ``cat``).
    """
    if not glu:
        return F.gelu(h), lambda grad_a: torch.ops.aten.gelu_backward(grad_a, h)
    gate, up = h.chunk(2, dim=-1)
    silu = F.silu(gate)

    def backward(grad_a: torch.Tensor) -> torch.Tensor:
        grad_h = torch.empty_like(h)
        width = gate.shape[-1]
        torch.ops.aten.silu_backward.grad_input(grad_a * up, gate, grad_input=grad_h[:, :width])
        torch.mul(grad_a, silu, out=grad_h[:, width:])
        return grad_h

    return silu * up, backward


def _mm(a: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor | None, transpose: bool,
        out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ w[e].T`` (``transpose``) or ``a @ w[e]`` for the segment's experts."""
    if offsets is None:
        return torch.mm(a, w[0].t() if transpose else w[0], out=out)
    return torch._grouped_mm(a, w.transpose(1, 2) if transpose else w, offs=offsets)


def _wgrad(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor | None, out: torch.Tensor) -> None:
    """``out[e] = a[rows_e].T @ b[rows_e]`` for the segment's experts (zeros for empty ones)."""
    if offsets is None:
        torch.mm(a.t(), b, out=out[0])
        return
    empty = torch.diff(offsets, prepend=offsets.new_zeros(1)) == 0
    # Device-side mask, no host sync; the kernel's output for an empty group is not relied on.
    out.copy_(torch._grouped_mm(a.t(), b, offs=offsets).masked_fill_(empty[:, None, None], 0))


# --- CPU expert parallelism -------------------------------------------------------
# Per-expert GEMMs are small, and so are the gathers and scatters around them: an
# OpenMP team of threads scales poorly on them and, on a busy machine, stalls at
# every barrier. Disjoint groups of experts run on separate Python threads instead,
# each with one intra-op thread (torch releases the GIL inside ops).

_pool: ThreadPoolExecutor | None = None
_pool_size = 0


def _forget_pool() -> None:
    """A forked child (e.g. a DataLoader worker) inherits the pool but not its threads."""
    global _pool, _pool_size
    _pool, _pool_size = None, 0


os.register_at_fork(after_in_child=_forget_pool)


def _workers(segments: list[Segment], device: torch.device) -> int:
    """Threads for the per-expert loop: 1 (the caller's thread) off CPU or for one segment."""
    if device.type != "cpu" or len(segments) < 2:
        return 1
    return min(torch.get_num_threads(), len(segments))


def _partition(items: list[tuple[int, Segment]], workers: int) -> list[list[tuple[int, Segment]]]:
    """Split ``(index, segment)`` items into ``workers`` contiguous groups of about equal rows."""
    total = sum(seg[1] - seg[0] for _, seg in items)
    groups: list[list[tuple[int, Segment]]] = [[] for _ in range(workers)]
    done = 0
    for item in items:
        groups[min(workers - 1, done * workers // max(total, 1))].append(item)
        done += item[1][1] - item[1][0]
    return [g for g in groups if g]


def _run_grouped(fn: Callable[[list, int], None], segments: list[tuple[int, Segment]], workers: int) -> None:
    """Call ``fn(group, worker_index)`` for each group, on threads when ``workers > 1``.

    The caller's thread takes group 0 itself (with one intra-op thread, like the
    pool threads), so no core idles while it waits.
    """
    if workers == 1:
        fn(segments, 0)
        return
    global _pool, _pool_size
    if _pool is None or _pool_size < workers - 1:
        _pool_size = workers - 1
        _pool = ThreadPoolExecutor(max_workers=_pool_size, initializer=torch.set_num_threads, initargs=(1,),
                                   thread_name_prefix="moezoo-experts")
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def call(args):
        # Grad / inference mode are thread-local: mirror the caller's.
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            fn(*args)

    groups = _partition(segments, workers)
    futures = [_pool.submit(call, (group, i)) for i, group in enumerate(groups) if i > 0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn(groups[0], 0)
    finally:
        torch.set_num_threads(threads)
    for future in futures:
        future.result()


def _reduce(parts: list[torch.Tensor]) -> torch.Tensor:
    for part in parts[1:]:
        parts[0].add_(part)
    return parts[0]


class _ExpertFFN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, token_idx, weight, w_in, w_out, segments, glu):
        workers = _workers(segments, x.device)
        outs = [x.new_zeros(x.shape) for _ in range(workers)]  # one per worker: no racing index_add_
        # The pre-activations are kept per segment rather than in one (N, H) buffer:
        # blocks this size are recycled by the C allocator, while a fresh buffer of
        # tens of MB is mmapped and page-faulted anew on every step.
        hs: list[torch.Tensor | None] = [None] * len(segments)

        def run(group, worker):
            for i, (start, end, lo, hi, offsets) in group:
                tok = token_idx[start:end]
                h = hs[i] = _mm(x.index_select(0, tok), w_in[lo:hi], offsets, True)
                a = _act(h, glu).mul_(weight[start:end, None])
                outs[worker].index_add_(0, tok, _mm(a, w_out[lo:hi], offsets, True))

        _run_grouped(run, list(enumerate(segments)), workers)
        ctx.save_for_backward(x, token_idx, weight, w_in, w_out)
        ctx.hs, ctx.segments, ctx.glu, ctx.workers = hs, segments, glu, workers
        return _reduce(outs)

    @staticmethod
    def backward(ctx, grad_out):
        x, token_idx, weight, w_in, w_out = ctx.saved_tensors
        glu, hs = ctx.glu, ctx.hs
        grad_out = grad_out.contiguous()
        grad_xs = [torch.zeros_like(x) for _ in range(ctx.workers)]
        grad_weight = torch.empty_like(weight)
        # Experts that got no tokens are never visited below: zero just those.
        grad_w_in, grad_w_out = torch.empty_like(w_in), torch.empty_like(w_out)
        visited = torch.zeros(w_in.shape[0], dtype=torch.bool)
        for _, _, lo, hi, _ in ctx.segments:
            visited[lo:hi] = True
        idle = (~visited).nonzero().squeeze(1).to(w_in.device)
        grad_w_in[idle] = 0
        grad_w_out[idle] = 0

        def run(group, worker):
            for i, (start, end, lo, hi, offsets) in group:
                tok, w, h = token_idx[start:end], weight[start:end, None], hs[i]
                go = grad_out.index_select(0, tok)
                a, act_backward = _act_and_grad(h, glu)
                grad_a = _mm(go, w_out[lo:hi], offsets, False)  # (n, I)
                grad_weight[start:end] = torch.linalg.vecdot(grad_a, a)
                _wgrad(go, a.mul_(w), offsets, grad_w_out[lo:hi])
                grad_h = act_backward(grad_a.mul_(w))
                _wgrad(grad_h, x.index_select(0, tok), offsets, grad_w_in[lo:hi])
                grad_xs[worker].index_add_(0, tok, _mm(grad_h, w_in[lo:hi], offsets, False))

        _run_grouped(run, list(enumerate(ctx.segments)), ctx.workers)
        ctx.hs = None
        return _reduce(grad_xs), None, grad_weight, grad_w_in, grad_w_out, None, None
