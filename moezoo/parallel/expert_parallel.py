"""Expert parallelism: each rank holds ``E / ep`` experts; tokens travel to them and back.

Follows torchtitan's ``ExpertParallel`` (``torchtitan/distributed/expert_parallel.py``) and
Megatron-Core's all-to-all token dispatcher, applied to a built model as torchtitan does:
the model code (:class:`~moezoo.moe.MoELayer`) stays single-device, and
:func:`apply_expert_parallel` swaps each layer's :class:`~moezoo.moe.GroupedExperts` for an
:class:`ExpertParallelExperts` with the same interface, the same parameter names and the
same (logical) shapes. The single-device experts stay in the codebase as the oracle.

What happens in one MoE layer on rank ``r`` of an expert-parallel group of size ``P``:

1. The router is replicated: every rank routes its own tokens to all ``E`` experts.
2. **Capacity is counted per rank, from its local tokens**: with ``capacity_factor`` set,
   each rank keeps at most ``ceil(capacity_factor * T_local * top_k / E)`` of its own
   assignments per expert (``MoELayer.capacity`` of the local token count), exactly what the
   single-device layer would keep on that rank's tokens alone. No rank waits for the others
   to decide what to drop, and the result does not depend on ``P``.
3. The kept assignments, sorted by expert, are sent to the experts' ranks with
   ``all_to_all_single`` (rank ``r`` holds experts ``[r * E / P, (r + 1) * E / P)``); the
   per-expert counts go first, in an all-to-all of their own, to size the splits.
4. Each rank runs its experts on what it received (the fused / grouped-GEMM dispatch of
   :mod:`moezoo.moe.dispatch`), sends the outputs back with the reverse all-to-all, and
   the source rank applies the combine weights and adds the outputs into its tokens.

Both all-to-alls are autograd functions whose backward is the reverse all-to-all, so the
gradients of the tokens, of the router and of the experts flow as in one process. An
expert's weight gradient is the *sum* over the tokens of every rank that sent to it (see
:mod:`moezoo.parallel.fsdp` for how data parallelism turns it into the average).

``expert_choice`` is refused: each expert picks its top tokens over the whole batch, which
no rank sees. The sigmoid router's balancing bias is updated from loads summed over the
group, so its replicas stay equal. Shared experts and the MH-MoE projections are ordinary
replicated parameters. Only :class:`~moezoo.moe.MoELayer` is parallelised; the small
``MoEMLP`` sites of connectors and encoders stay replicated.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from moezoo.moe.dispatch import Dispatch, expert_ffn, grouped_mm_supported, sort_by_expert
from moezoo.moe.experts import GroupedExperts
from moezoo.moe.layer import MoELayer
from moezoo.moe.routers import Routing
from moezoo.moe.routers.topk import SigmoidRouter


class _AllToAll(torch.autograd.Function):
    """``all_to_all_single`` of the rows of ``x``; its backward is the reverse exchange."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, out_splits: list[int], in_splits: list[int], group: Any) -> torch.Tensor:
        ctx.out_splits, ctx.in_splits, ctx.group = out_splits, in_splits, group
        out = x.new_empty((sum(out_splits), *x.shape[1:]))
        dist.all_to_all_single(out, x.contiguous(), out_splits, in_splits, group=group)
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        grad_in = grad_out.new_empty((sum(ctx.in_splits), *grad_out.shape[1:]))
        dist.all_to_all_single(grad_in, grad_out.contiguous(), ctx.in_splits, ctx.out_splits, group=ctx.group)
        return grad_in, None, None, None


def all_to_all(x: torch.Tensor, out_splits: list[int], in_splits: list[int], group: Any = None) -> torch.Tensor:
    """Send ``x``'s rows ``in_splits[i]`` at a time to rank ``i``; receive ``out_splits[i]`` rows from each.

    Differentiable (plain ``torch.distributed`` calls carry no gradient). Works on gloo,
    which implements ``all_to_all_single`` with uneven splits.
    """
    return _AllToAll.apply(x, out_splits, in_splits, group)


class ExpertParallelExperts(GroupedExperts):
    """:class:`~moezoo.moe.GroupedExperts` sharded over an expert-parallel mesh.

    The weights are ``DTensor`` parameters, ``Shard(0)`` over the experts, so the module's
    state dict keeps the single-device names and full shapes, and a full state dict
    (``torch.distributed.checkpoint.state_dict.get_model_state_dict``) gathers them.
    The ``forward`` has :class:`~moezoo.moe.GroupedExperts`' signature and results
    (counts and drops are those of this rank's own tokens).
    """

    def __init__(self, experts: GroupedExperts, mesh: Any):
        from torch.distributed.tensor import DTensor, Shard

        nn.Module.__init__(self)
        self.glu, self.in_name, self.grad_buffers = experts.glu, experts.in_name, experts.grad_buffers
        self.activation, self.has_bias = experts.activation, experts.has_bias
        self.mesh, self.group = mesh, mesh.get_group()
        self.ep_size, self.ep_rank = mesh.size(), mesh.get_local_rank()
        num = experts.num_experts
        if num % self.ep_size:
            raise ValueError(f"num_experts={num} must be divisible by expert_parallel={self.ep_size}")
        self.num_local = num // self.ep_size
        lo = self.ep_rank * self.num_local
        for name, full in experts.named_parameters():  # the weights and, if any, the biases: all (E, ...)
            # Every rank built the same weights (same seed, as FSDP assumes too): keep our slice, no traffic.
            local = full.detach()[lo:lo + self.num_local].clone()
            shard = DTensor.from_local(local, mesh, [Shard(0)], run_check=False)
            self.register_parameter(name, nn.Parameter(shard, requires_grad=full.requires_grad))

    @property
    def num_experts(self) -> int:
        return self.down_proj.shape[0]  # the logical (global) shape

    def forward(self, x_TD: torch.Tensor, routing: Routing, capacity: int | None = None,
                mode: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if not routing.token_choice:
            raise ValueError(EXPERT_CHOICE_ERROR)
        P, L = self.ep_size, self.num_local
        sent: Dispatch = sort_by_expert(routing, self.num_experts, capacity)  # local tokens, local capacity
        # 1. How many rows each rank sends to each of my experts: (P, L), source rank major.
        recv_counts = torch.empty_like(sent.counts)
        dist.all_to_all_single(recv_counts, sent.counts, group=self.group)
        recv_PL = recv_counts.view(P, L)
        in_splits = sent.counts.view(P, L).sum(1).tolist()
        out_splits = recv_PL.sum(1).tolist()
        # 2. Tokens to their experts' ranks.
        x_recv = all_to_all(x_TD.index_select(0, sent.token_idx), out_splits, in_splits, self.group)  # (M, D)
        # 3. My experts over what arrived: rows come grouped by source, then expert; group them by expert.
        local_expert = torch.repeat_interleave(torch.arange(L, device=x_TD.device).repeat(P), recv_PL.reshape(-1))
        order = torch.sort(local_expert, stable=True).indices
        ones = x_recv.new_ones(order.numel())  # the combine weights are applied at home, below
        local = Dispatch(order, ones, recv_PL.sum(0), recv_counts.new_zeros(()))
        w_in, w_out = self.in_proj.to_local(), self.down_proj.to_local()
        b_in, b_out = (None if b is None else b.to_local() for b in self.biases)
        if mode in ("auto", "loop"):  # no local loop oracle: the single-device layer is the oracle
            mode = "grouped_mm" if x_TD.is_cuda else "fused"
        if mode == "grouped_mm" and not grouped_mm_supported(x_recv, w_in, w_out):
            mode = "fused"
        y_recv = expert_ffn(x_recv, local, w_in, w_out, self.activation, mode, self.grad_buffers, b_in, b_out)  # (M, D)
        # 4. Outputs home, weighted, into their tokens.
        y_sent = all_to_all(y_recv, in_splits, out_splits, self.group)  # (N, D), in `sent`'s order
        y_sent = y_sent * sent.weight.to(y_sent.dtype)[:, None]
        out = x_TD.new_zeros(x_TD.shape).index_add(0, sent.token_idx, y_sent)
        return out, sent.counts, sent.num_dropped


EXPERT_CHOICE_ERROR = ("router 'expert_choice' cannot run under expert parallelism: each expert selects its "
                       "top tokens over the whole batch, which no single rank sees; use a token-choice router "
                       "(softmax, sigmoid, cosine, ...) or expert_parallel=1")


def apply_expert_parallel(model: nn.Module, mesh: Any, load_group: Any = None) -> nn.Module:
    """Shard the experts of every :class:`~moezoo.moe.MoELayer` of ``model`` over ``mesh``, in place.

    Args:
        model: a built model (any module holding ``MoELayer`` s); the same weights on every rank.
        mesh: the expert-parallel ``DeviceMesh``: 1-D, or one with an ``"ep"`` dimension
            (:func:`~moezoo.parallel.mesh.build_mesh`); a process group is taken as a 1-D mesh.
        load_group: the process group over which the router is replicated, whose loads the
            sigmoid router's bias follows; defaults to the expert-parallel group.

    Returns:
        ``model``.

    Raises:
        ValueError: an ``expert_choice`` router, or ``num_experts`` not divisible by the group size.

    Example:
        >>> apply_expert_parallel(model, build_mesh(dp=2, ep=2))  # doctest: +SKIP
    """
    from torch.distributed.device_mesh import DeviceMesh

    layers = [m for m in model.modules() if isinstance(m, MoELayer)]
    if any(layer.router.router_name == "expert_choice" for layer in layers):
        raise ValueError(EXPERT_CHOICE_ERROR)
    if not isinstance(mesh, DeviceMesh):
        mesh = DeviceMesh.from_group(mesh, "cuda" if torch.cuda.is_available() else "cpu")
    elif mesh.mesh_dim_names and "ep" in mesh.mesh_dim_names and mesh.ndim > 1:
        mesh = mesh["ep"]
    for layer in layers:  # check all before changing any
        if layer.config.num_experts % mesh.size():
            raise ValueError(f"num_experts={layer.config.num_experts} must be divisible by "
                             f"expert_parallel={mesh.size()}")
    for layer in layers:
        if not isinstance(layer.experts, ExpertParallelExperts):
            layer.experts = ExpertParallelExperts(layer.experts, mesh)
        if isinstance(layer.router, SigmoidRouter):
            layer.router.load_group = load_group if load_group is not None else mesh.get_group()
    return model


def expert_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``model``'s expert-parallel experts."""
    return [p for m in model.modules() if isinstance(m, ExpertParallelExperts) for p in m.parameters()]
