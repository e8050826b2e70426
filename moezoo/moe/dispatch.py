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

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from moezoo.moe.routers import Routing

# (row_start, row_end, first_expert, last_expert + 1, offsets or None)
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
    counts = torch.bincount(routing.expert_idx, minlength=num_experts)
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


def plan_segments(counts: torch.Tensor, mode: str) -> list[Segment]:
    """Segments for ``mode``: per expert for ``fused``, one grouped segment otherwise."""
    if mode == "grouped_mm":
        offsets = torch.cumsum(counts, 0, dtype=torch.int32)
        return [(0, -1, 0, counts.numel(), offsets)]
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
    segments = plan_segments(dispatch.counts, mode)
    return _ExpertFFN.apply(x_TD, dispatch.token_idx, dispatch.weight.to(x_TD.dtype), w_in, w_out, segments, glu)


def _act(h: torch.Tensor, glu: bool) -> torch.Tensor:
    if glu:
        gate, up = h.chunk(2, dim=-1)
        return F.silu(gate) * up
    return F.gelu(h)


def _act_backward(grad_a: torch.Tensor, h: torch.Tensor, glu: bool) -> torch.Tensor:
    if glu:
        gate, up = h.chunk(2, dim=-1)
        return torch.cat([torch.ops.aten.silu_backward(grad_a * up, gate), grad_a * F.silu(gate)], dim=-1)
    return torch.ops.aten.gelu_backward(grad_a, h)


def _mm(a: torch.Tensor, w: torch.Tensor, offsets: torch.Tensor | None, transpose: bool,
        out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ w[e].T`` (``transpose``) or ``a @ w[e]`` for the segment's experts."""
    if offsets is None:
        return torch.mm(a, w[0].t() if transpose else w[0], out=out)
    return torch._grouped_mm(a, w.transpose(1, 2) if transpose else w, offs=offsets)


def _wgrad(a: torch.Tensor, b: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    """Per-expert ``a[rows_e].T @ b[rows_e]``, shaped ``(experts, A, B)``."""
    if offsets is None:
        return (a.t() @ b)[None]
    return torch._grouped_mm(a.t(), b, offs=offsets)


class _ExpertFFN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, token_idx, weight, w_in, w_out, segments, glu):
        out = x.new_zeros(x.shape)
        h_all = x.new_empty(token_idx.numel(), w_in.shape[1])
        for start, end, lo, hi, offsets in segments:
            end = token_idx.numel() if end < 0 else end
            tok = token_idx[start:end]
            h = _mm(x.index_select(0, tok), w_in[lo:hi], offsets, True, out=h_all[start:end] if offsets is None else None)
            if offsets is not None:
                h_all[start:end] = h
            a = _act(h, glu).mul_(weight[start:end, None])
            out.index_add_(0, tok, _mm(a, w_out[lo:hi], offsets, True))
        ctx.save_for_backward(x, token_idx, weight, w_in, w_out, h_all)
        ctx.segments, ctx.glu = segments, glu
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, token_idx, weight, w_in, w_out, h_all = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        grad_x, grad_weight = torch.zeros_like(x), torch.zeros_like(weight)
        grad_w_in, grad_w_out = torch.zeros_like(w_in), torch.zeros_like(w_out)
        for start, end, lo, hi, offsets in ctx.segments:
            end = token_idx.numel() if end < 0 else end
            tok, w = token_idx[start:end], weight[start:end, None]
            h = h_all[start:end]
            go = grad_out.index_select(0, tok)
            a = _act(h, ctx.glu)
            grad_a = _mm(go, w_out[lo:hi], offsets, False)  # (n, I)
            grad_weight[start:end] = (grad_a * a).sum(-1)
            grad_w_out[lo:hi] = _wgrad(go, a.mul_(w), offsets)
            grad_h = _act_backward(grad_a.mul_(w), h, ctx.glu)
            grad_w_in[lo:hi] = _wgrad(grad_h, x.index_select(0, tok), offsets)
            grad_x.index_add_(0, tok, _mm(grad_h, w_in[lo:hi], offsets, False))
        return grad_x, None, grad_weight, grad_w_in, grad_w_out, None, None
