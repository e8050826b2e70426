"""Token dispatch: sort assignments by expert, run the experts, combine.

The experts' forward *and* backward live in one autograd function, so the
``(N, D)`` gathered copy of the tokens is never stored: backward re-gathers it and
recomputes the activation from the saved pre-activation ``h``. That keeps the
memory of a sparse layer at the level of a dense FFN with the same active FLOPs.

The GEMMs run over *segments* of the expert-sorted assignments:

* ``fused`` (CPU default): one segment per expert. Gather, up-projection,
  activation, down-projection and scatter-add of one expert run back to back on a
  cache-sized block, which on CPU beats one big grouped GEMM over ``(N, D)``;
  the experts are shared out over threads (:mod:`moezoo.moe.threads`).
* ``grouped_mm`` (CUDA default): one segment holding all experts, computed with
  ``torch._grouped_mm`` and device-side offsets, so the GEMMs need no host sync.

A decoding step (a handful of assignments, no gradients) takes :func:`direct_ffn`.
Experts with biases (Phi-2's ``fc1`` / ``fc2``) add a per-expert bias after each
projection, in the same pass; their activation may be any of
:data:`moezoo.moe.activations.ACTIVATIONS` (``act`` names it; ``True`` / ``False`` are
the historical spellings of ``"swiglu"`` / ``"gelu"``).
The mask-loop oracle the tests compare against is in :mod:`moezoo.moe.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from moezoo.moe.activations import GELU_APPROXIMATE, activation_fn
from moezoo.moe.routers import Routing, expert_counts
from moezoo.moe.threads import broadcast_rows, gemv_threads, reduce_sum, row_blocks, run_split

# Inference batches with at most this many assignments per expert (on average) take direct_ffn.
DIRECT_MAX_ROWS = 16

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


def act_name(act: bool | str) -> str:
    """The activation name ``act`` stands for: ``True`` is ``"swiglu"``, ``False`` is ``"gelu"``.

    Example:
        >>> act_name(True), act_name(False), act_name("gelu_tanh")
        ('swiglu', 'gelu', 'gelu_tanh')
    """
    if isinstance(act, bool):
        return "swiglu" if act else "gelu"
    if act != "swiglu":
        activation_fn(act)  # unknown names fail here, with the known ones
    return act


def expert_ffn(x_TD: torch.Tensor, dispatch: Dispatch, w_in: torch.Tensor, w_out: torch.Tensor,
               act: bool | str, mode: str = "fused", grad_buffers: GradBuffers | None = None,
               b_in: torch.Tensor | None = None, b_out: torch.Tensor | None = None) -> torch.Tensor:
    """``sum_e weight * down_e(act(in_e(x) + b_in_e)) + weight * b_out_e`` over the dispatched assignments.

    Args:
        x_TD: ``(T, D)`` tokens.
        dispatch: from :func:`sort_by_expert`.
        w_in: ``(E, H, D)``, ``H = 2 * I`` for SwiGLU (gate rows first) or ``I`` otherwise.
        w_out: ``(E, D, I)``.
        act: ``"swiglu"`` or an element-wise activation's name (``True`` / ``False``: SwiGLU / GELU).
        mode: ``"fused"`` or ``"grouped_mm"``.
        grad_buffers: where the weight gradients' memory is recycled from (see :class:`GradBuffers`).
        b_in / b_out: optional biases ``(E, H)`` / ``(E, D)``.

    Returns:
        ``(T, D)``; tokens with no assignment get zeros.
    """
    act = act_name(act)
    segments = plan_segments(dispatch.counts, mode, dispatch.token_idx.numel())
    device = x_TD.device.type
    if torch.is_autocast_enabled(device):  # mixed precision: the function computes in one dtype itself
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):  # the casts below carry the gradients back to fp32
            return _ExpertFFN.apply(x_TD.to(dtype), dispatch.token_idx, dispatch.weight.to(dtype), w_in.to(dtype),
                                    w_out.to(dtype), segments, act, GradBuffers(), _cast(b_in, dtype),
                                    _cast(b_out, dtype))
    return _ExpertFFN.apply(x_TD, dispatch.token_idx, dispatch.weight.to(x_TD.dtype), w_in, w_out, segments, act,
                            grad_buffers or GradBuffers(), b_in, b_out)


def _cast(t: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    return None if t is None else t.to(dtype)


def direct_ffn(x_TD: torch.Tensor, routing: Routing, w_in: torch.Tensor, w_out: torch.Tensor,
               act: bool | str, b_in: torch.Tensor | None = None, b_out: torch.Tensor | None = None) -> torch.Tensor:
    """Inference path for a few assignments per expert (decoding steps, short prompts).

    With few rows per expert, sorting, segment planning and an autograd function
    cost more than the expert GEMMs, which are bound by reading the weights. Here
    each active expert runs directly on its rows, in expert order, as batched GEMMs
    over blocks of its weight rows (:func:`~moezoo.moe.threads.row_blocks`), so that
    all intra-op threads read the weights, and the output stays in that block
    layout until the end. A single token needs no gather or scatter: its combine
    weights scale the down-projection that accumulates in place (``baddbmm_``).
    No gradients. :class:`~moezoo.moe.GroupedExperts` takes this path for inference
    with at most ``DIRECT_MAX_ROWS`` assignments per expert on average (measured on
    2 cores: faster than ``fused`` up to about 32). Biased experts (``b_in (E, H)``,
    ``b_out (E, D)``, Phi's ``fc1`` / ``fc2``) add theirs, the output bias scaled by the
    combine weight like the rest of the expert's output.
    """
    act = act_name(act)
    T, D = x_TD.shape
    hidden = w_in.shape[1]
    w_in, w_out = w_in.contiguous(), w_out.contiguous()
    t = gemv_threads(x_TD, hidden, D)
    out = x_TD.new_zeros(t, T, D // t)  # (t, T, D/t): output columns in t blocks
    experts = routing.expert_idx.tolist()
    def out_bias(expert: int) -> torch.Tensor:  # (t, 1, D/t): the output bias in the output's block layout
        return b_out[expert].view(t, 1, D // t)

    if T == 1:
        x_rows = broadcast_rows(x_TD, t)
        for expert, weight in sorted(zip(experts, routing.weight.tolist())):
            h = torch.bmm(x_rows, row_blocks(w_in, t, expert)).view(1, hidden)
            a = activate(h if b_in is None else h + b_in[expert], act)
            out.baddbmm_(broadcast_rows(a, t), row_blocks(w_out, t, expert), alpha=weight)
            if b_out is not None:
                out.add_(out_bias(expert), alpha=weight)
        return out.view(1, D)
    rows_of: dict[int, list[int]] = {}
    for j, expert in enumerate(experts):
        rows_of.setdefault(expert, []).append(j)
    weight = routing.weight.to(x_TD.dtype)[:, None]
    for expert, js in sorted(rows_of.items()):
        pick = torch.tensor(js, device=x_TD.device)
        tok = routing.token_idx[pick]
        h = torch.bmm(broadcast_rows(x_TD[tok], t), row_blocks(w_in, t, expert))  # (t, rows, H/t)
        h = h.transpose(0, 1).reshape(len(js), hidden)
        a = activate(h if b_in is None else h + b_in[expert], act).mul_(weight[pick])
        y = torch.bmm(broadcast_rows(a, t), row_blocks(w_out, t, expert))  # (t, rows, D/t)
        if b_out is not None:
            y.add_(weight[pick][None] * out_bias(expert))
        out.index_add_(1, tok, y)
    return out.transpose(0, 1).reshape(T, D)


def activate(h: torch.Tensor, act: bool | str) -> torch.Tensor:
    """The experts' activation on pre-activations ``h``: ``silu(gate) * up`` (SwiGLU) or element-wise."""
    act = act_name(act)
    if act == "swiglu":
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return activation_fn(act)(h)


def _act_and_grad(h: torch.Tensor, act: str) -> tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """Recompute the activation from ``h`` and return it with its backward.

    SiLU is evaluated once and shared by both, and the two halves of the SwiGLU
    gradient are written straight into one buffer (no ``cat``). GELU's backward is
    ATen's kernel; any other element-wise activation is differentiated by autograd.
    """
    if act in GELU_APPROXIMATE:
        approximate = GELU_APPROXIMATE[act]
        return (F.gelu(h, approximate=approximate),
                lambda grad_a: torch.ops.aten.gelu_backward(grad_a, h, approximate=approximate))
    if act != "swiglu":
        with torch.enable_grad():
            leaf = h.detach().requires_grad_(True)
            out = activation_fn(act)(leaf)
        # A copy: the caller scales the activation in place, and autograd may have saved `out` (ReLU does).
        return out.detach().clone(), lambda grad_a: torch.autograd.grad(out, leaf, grad_a)[0]
    gate, up = h.chunk(2, dim=-1)
    silu = F.silu(gate)

    def backward(grad_a: torch.Tensor) -> torch.Tensor:
        grad_h = torch.empty_like(h)
        width = gate.shape[-1]
        torch.ops.aten.silu_backward.grad_input(grad_a * up, gate, grad_input=grad_h[:, :width])
        torch.mul(grad_a, silu, out=grad_h[:, width:])
        return grad_h

    return silu * up, backward


def _mm(a: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    """``a @ w`` for one expert (``w`` 2-D), or a grouped GEMM over a segment's experts (3-D)."""
    return torch.mm(a, w) if offsets is None else torch._grouped_mm(a, w, offs=offsets)


def _wgrad(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor | None, out: torch.Tensor | None) -> torch.Tensor:
    """``a[rows_e].T @ b[rows_e]`` for the segment's experts: into ``out`` for one expert,
    as a new ``(E, ...)`` tensor for a grouped segment (zeros for its empty experts)."""
    if offsets is None:
        return torch.mm(a.t(), b, out=out)
    empty = torch.diff(offsets, prepend=offsets.new_zeros(1)) == 0
    # Device-side mask, no host sync; the kernel's output for an empty group is not relied on.
    return torch._grouped_mm(a.t(), b, offs=offsets).masked_fill_(empty[:, None, None], 0)


def _grouped(segments: list[Segment]) -> bool:
    """Whether ``segments`` is one grouped-GEMM segment (it carries offsets) rather than one per expert."""
    return bool(segments) and segments[0][4] is not None


def _per_segment(w: torch.Tensor, segments: list[Segment]) -> list[torch.Tensor]:
    """Each segment's slice of the ``(E, ...)`` tensor ``w``: the expert's matrix for a
    one-expert segment, ``w[lo:hi]`` for a grouped one. Built once per call, so the
    per-expert loops below spend their Python time on GEMMs, not on indexing."""
    if not _grouped(segments):
        experts = w.unbind(0)
        return [experts[lo] for _, _, lo, _, _ in segments]
    return [w[lo:hi] for _, _, lo, hi, _ in segments]


def _bias_rows(b: torch.Tensor | None, segment: Segment, rows: int) -> torch.Tensor | None:
    """The bias of each of a segment's ``rows``: the expert's ``(H,)`` for a one-expert segment
    (it broadcasts), a ``(rows, H)`` gather by each row's expert for a grouped one (no host sync)."""
    if b is None:
        return None
    _, _, lo, hi, offsets = segment
    if offsets is None:
        return b[lo]
    return b[lo:hi].index_select(0, _row_experts(offsets, rows))


def _row_experts(offsets: torch.Tensor, rows: int) -> torch.Tensor:
    """The expert (counted from the segment's first) of each of a grouped segment's rows."""
    return torch.searchsorted(offsets, torch.arange(rows, device=offsets.device, dtype=offsets.dtype), right=True)


def _workers(segments: list[Segment], device: torch.device) -> int:
    """Threads for the per-expert loop: 1 (the caller's thread) off CPU or for one segment."""
    if device.type != "cpu" or len(segments) < 2:
        return 1
    return min(torch.get_num_threads(), len(segments))


def _rows(segments: list[Segment]) -> list[int]:
    return [end - start for start, end, *_ in segments]


class GradBuffers:
    """Recycles the memory of the experts' weight gradients from one step to the next.

    The fused expert weights are large (``E / top_k`` times a FLOP-equal dense FFN),
    and on CPU a fresh buffer that size is mmapped and page-faulted anew on every
    backward, which costs ~10% of a step. Like CUDA's caching allocator, this keeps
    the storage of the last gradient it handed out and reuses it once nothing else
    references it (e.g. after ``zero_grad(set_to_none=True)``); while the gradient is
    alive (accumulation, a hook keeping it) a fresh buffer is used. The cache is not
    copied or pickled with its module.

    Example:
        >>> buffers = GradBuffers()
        >>> first = buffers.empty_like(torch.zeros(4, 3), "w")
        >>> ptr = first.data_ptr(); del first
        >>> buffers.empty_like(torch.zeros(4, 3), "w").data_ptr() == ptr
        True
    """

    def __init__(self) -> None:
        self._storage: dict[str, torch.UntypedStorage] = {}

    def empty_like(self, t: torch.Tensor, key: str) -> torch.Tensor:
        if t.device.type != "cpu":  # the CUDA caching allocator already recycles
            return torch.empty_like(t, memory_format=torch.contiguous_format)
        storage = self._storage.get(key)
        nbytes = t.numel() * t.element_size()
        # Our reference is the only one left: no tensor or view uses this storage any more.
        if storage is not None and storage.nbytes() == nbytes and torch._C._storage_Use_Count(storage._cdata) == 1:
            return t.new_empty(0).set_(storage, 0, t.shape)  # contiguous strides
        out = torch.empty_like(t, memory_format=torch.contiguous_format)
        self._storage[key] = out.untyped_storage()
        return out

    def __deepcopy__(self, memo) -> GradBuffers:
        return GradBuffers()

    def __getstate__(self) -> dict:
        return {"_storage": {}}


class _ExpertFFN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, token_idx, weight, w_in, w_out, segments, act, grad_buffers, b_in, b_out):
        workers = _workers(segments, x.device)
        outs = [x.new_zeros(x.shape) for _ in range(workers)]  # one per worker: no racing index_add_
        # The pre-activations are kept per segment rather than in one (N, H) buffer:
        # blocks this size are recycled by the C allocator, while a fresh buffer of
        # tens of MB is mmapped and page-faulted anew on every step.
        hs: list[torch.Tensor | None] = [None] * len(segments)
        rows = _rows(segments)
        toks, weights = token_idx.split(rows), weight[:, None].split(rows)
        w_ins, w_outs = _per_segment(w_in.transpose(1, 2), segments), _per_segment(w_out.transpose(1, 2), segments)

        def run(mine: Iterable[tuple[int, Segment]], worker: int) -> None:
            for i, segment in mine:
                offsets = segment[4]
                h = _mm(x.index_select(0, toks[i]), w_ins[i], offsets)
                if b_in is not None:
                    h += _bias_rows(b_in, segment, rows[i])
                hs[i] = h
                a = activate(h, act).mul_(weights[i])
                y = _mm(a, w_outs[i], offsets)
                if b_out is not None:
                    y.addcmul_(weights[i], _bias_rows(b_out, segment, rows[i]))
                outs[worker].index_add_(0, toks[i], y)

        run_split(run, list(enumerate(segments)), rows, workers)
        ctx.save_for_backward(x, token_idx, weight, w_in, w_out, b_in, b_out, *hs)
        ctx.segments, ctx.act, ctx.workers, ctx.grad_buffers = segments, act, workers, grad_buffers
        return reduce_sum(outs)

    @staticmethod
    def backward(ctx, grad_out):
        x, token_idx, weight, w_in, w_out, b_in, b_out, *hs = ctx.saved_tensors
        act, segments = ctx.act, ctx.segments
        grad_out = grad_out.contiguous()
        grad_xs = [torch.zeros_like(x) for _ in range(ctx.workers)]
        grad_weight = torch.empty_like(weight)
        rows = _rows(segments)
        toks, weights, grad_weights = token_idx.split(rows), weight[:, None].split(rows), grad_weight.split(rows)
        w_ins, w_outs = _per_segment(w_in, segments), _per_segment(w_out, segments)
        grouped = _grouped(segments)
        if grouped:  # one segment of all experts: its grouped GEMMs produce the whole gradients
            grad_w_ins: list[torch.Tensor | None] = [None]
            grad_w_outs: list[torch.Tensor | None] = [None]
        else:  # one expert per segment, written in place; experts with no tokens are never visited
            grad_w_in = ctx.grad_buffers.empty_like(w_in, "in")
            grad_w_out = ctx.grad_buffers.empty_like(w_out, "out")
            # Integer indices: a boolean mask would make index_put_ scan all E experts' gradients.
            busy = {expert for _, _, expert, _, _ in segments}
            idle = torch.tensor([e for e in range(w_in.shape[0]) if e not in busy], dtype=torch.long,
                                device=w_in.device)
            grad_w_in[idle] = 0
            grad_w_out[idle] = 0
            grad_w_ins, grad_w_outs = _per_segment(grad_w_in, segments), _per_segment(grad_w_out, segments)
        # Bias gradients are small: plain zeros, each expert's row written (or added, when grouped) by its segment.
        grad_b_in = None if b_in is None else torch.zeros_like(b_in)
        grad_b_out = None if b_out is None else torch.zeros_like(b_out)

        def bias_grad(grad_b: torch.Tensor, segment: Segment, g: torch.Tensor) -> None:
            _, _, lo, hi, offsets = segment
            if offsets is None:
                torch.sum(g, 0, out=grad_b[lo])
            else:
                grad_b[lo:hi].index_add_(0, _row_experts(offsets, g.shape[0]), g)

        def run(mine: Iterable[tuple[int, Segment]], worker: int) -> None:
            for i, segment in mine:
                offsets = segment[4]
                tok, w = toks[i], weights[i]
                go = grad_out.index_select(0, tok)
                a, act_backward = _act_and_grad(hs[i], act)
                grad_a = _mm(go, w_outs[i], offsets)  # (n, I)
                torch.linalg.vecdot(grad_a, a, out=grad_weights[i])
                if b_out is not None:  # the combine weight also scales the output bias
                    grad_weights[i].add_(torch.linalg.vecdot(go, _bias_rows(b_out, segment, rows[i])))
                    bias_grad(grad_b_out, segment, go * w)
                grad_w_outs[i] = _wgrad(go, a.mul_(w), offsets, grad_w_outs[i])
                grad_h = act_backward(grad_a.mul_(w))
                if b_in is not None:
                    bias_grad(grad_b_in, segment, grad_h)
                grad_w_ins[i] = _wgrad(grad_h, x.index_select(0, tok), offsets, grad_w_ins[i])
                grad_xs[worker].index_add_(0, tok, _mm(grad_h, w_ins[i], offsets))

        run_split(run, list(enumerate(segments)), rows, ctx.workers)
        if grouped:
            grad_w_in, grad_w_out = grad_w_ins[0], grad_w_outs[0]
        return (reduce_sum(grad_xs), None, grad_weight, grad_w_in, grad_w_out, None, None, None, grad_b_in,
                grad_b_out)
