"""FSDP2 over the data-parallel dimension, and :func:`parallelize`, which applies everything.

Follows torchtitan's ``parallelize`` functions: parallelism is applied to a *built*
single-device model, in a fixed order: expert parallelism, activation checkpointing,
``torch.compile``, then FSDP (``torch.distributed.fsdp.fully_shard``), each of the model's
``parallel_units()`` first (the LLM's blocks, then a multimodal model's encoders and connectors),
then the root.

Expert weights under expert parallelism (``ep > 1``), as torchtitan's ``dp_shard_in_ep``:

* ``ep == dp`` (2 processes, ``dp=2, ep=2``): the expert-parallel group already uses every
  data-parallel rank, so each expert lives on exactly one rank and FSDP leaves the experts
  alone (``ignored_params``); a gradient hook divides their gradients by ``ep``.
* ``ep < dp``: the experts are also sharded by FSDP over the remaining ``"dp_mod_ep"``
  dimension, with a gradient divide factor of ``dp``.

Why the division: an expert's gradient is the *sum* over the tokens of the ``ep`` ranks
that sent to it, while FSDP *averages* the other gradients over ``dp`` ranks; dividing the
experts' by ``ep`` (FSDP's ``dp // ep`` average then makes ``dp``) gives them the same mean.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from moezoo.parallel.expert_parallel import apply_expert_parallel, expert_parameters
from moezoo.parallel.mesh import build_mesh, mesh_size


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model``'s language model (the protocol's ``language_model.layers``), in order."""
    return list(model.language_model.layers)


def apply_activation_checkpointing(model: nn.Module) -> nn.Module:
    """Recompute each transformer block in backward (``torch.utils.checkpoint``, non-reentrant).

    The block's ``forward`` is wrapped in place, so parameter names (and checkpoints) do not
    change, unlike ``checkpoint_wrapper``.

    Raises:
        ValueError: a ``sigmoid`` router updates its balancing bias in the forward; the
            recomputation would route with the updated bias and silently get other experts.
    """
    from torch.utils.checkpoint import checkpoint

    from moezoo.moe import MoELayer

    for m in model.modules():
        if isinstance(m, MoELayer) and m.config.router == "sigmoid" and m.config.bias_update_rate > 0:
            raise ValueError("activation_checkpointing cannot recompute a 'sigmoid' router with bias_update_rate > 0 "
                             "(the recomputation would route with the updated bias); set bias_update_rate=0 or "
                             "activation_checkpointing=False")
    for block in blocks(model):
        if getattr(block, "_moezoo_checkpointed", False):
            continue
        forward = block.forward
        block.forward = functools.wraps(forward)(
            lambda *args, _f=forward, **kwargs: checkpoint(_f, *args, use_reentrant=False, **kwargs))
        block._moezoo_checkpointed = True
    return model


def apply_compile(model: nn.Module) -> nn.Module:
    """``torch.compile`` each transformer block in place (``nn.Module.compile``: names unchanged).

    Per block rather than the whole model, as torchtitan: the blocks share one compiled
    graph, and the MoE dispatch's data-dependent shapes stay inside small graphs.
    """
    for block in blocks(model):
        block.compile(dynamic=None)
    return model


def apply_fsdp(model: nn.Module, mesh: Any, reshard_after_forward: bool = True,
               mp_policy: Any = None) -> nn.Module:
    """``fully_shard`` each of ``model.parallel_units()``, then the root, over ``mesh["dp"]``.

    Args:
        model: the model, after :func:`~moezoo.parallel.expert_parallel.apply_expert_parallel` if any.
        mesh: from :func:`~moezoo.parallel.mesh.build_mesh`.
        reshard_after_forward: free the gathered parameters after each unit's forward (ZeRO-3).
        mp_policy: a ``torch.distributed.fsdp.MixedPrecisionPolicy`` (e.g. bf16 parameters).

    Example:
        >>> apply_fsdp(model, build_mesh(dp=2))  # doctest: +SKIP
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    dp_mesh = mesh["dp"]
    dp, ep = mesh_size(mesh, "dp"), mesh_size(mesh, "ep")
    kwargs = dict(mesh=dp_mesh, reshard_after_forward=reshard_after_forward,
                  mp_policy=mp_policy or MixedPrecisionPolicy())
    experts = expert_parameters(model)
    ignored: set[nn.Parameter] = set()
    if experts and ep == dp:
        ignored = set(experts)
        for p in experts:
            p.register_hook(lambda grad, _ep=ep: grad / _ep)
    elif experts:
        expert_ids = {id(p) for p in experts}
        for m in model.modules():
            if any(id(p) in expert_ids for p in m.parameters(recurse=False)):
                unit = fully_shard(m, **{**kwargs, "mesh": mesh["dp_mod_ep"]})
                unit.set_gradient_divide_factor(float(dp))
    for _, unit in model.parallel_units():
        if any(True for _ in unit.parameters()):
            fully_shard(unit, ignored_params=ignored or None, **kwargs)
    fully_shard(model, ignored_params=ignored or None, **kwargs)
    return model


def parallelize(model: nn.Module, dp: int | None = None, ep: int = 1, compile: bool = False,
                activation_checkpointing: bool = False, mesh: Any = None, global_loss: bool = True,
                mp_policy: Any = None) -> nn.Module:
    """Apply, in torchtitan's order, expert parallelism, activation checkpointing, compile and FSDP2.

    On one process (no process group, or a world of 1) only ``activation_checkpointing``
    and ``compile`` apply.

    Args:
        model: a built model, the same on every rank.
        dp / ep: data- and expert-parallel sizes (``dp=None``: every rank), for :func:`build_mesh`.
        compile: ``torch.compile`` each block.
        activation_checkpointing: recompute each block in backward.
        mesh: a mesh from :func:`build_mesh` to use instead of building one.
        global_loss: give the LLM the data-parallel group (``loss_group``), so its LM loss is
            normalised by the global number of label tokens and its router losses use
            statistics summed over the ranks: ``dp`` processes then optimise exactly the
            one-process objective on the global batch (Megatron-Core's per-token loss).
        mp_policy: FSDP2's ``MixedPrecisionPolicy``.

    Returns:
        ``model``, parallelised in place.

    Example:
        >>> parallelize(model, dp=2, ep=2)  # doctest: +SKIP
    """
    import torch.distributed as dist

    distributed = mesh is not None or (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1)
    if not distributed and ep > 1:
        raise ValueError(f"expert_parallel={ep} needs several processes; got a single one")
    if distributed and mesh is None:
        mesh = build_mesh(dp, ep)
    if distributed and mesh_size(mesh, "ep") > 1:
        apply_expert_parallel(model, mesh["ep"], load_group=mesh["dp"].get_group())
    if activation_checkpointing:
        apply_activation_checkpointing(model)
    if compile:
        apply_compile(model)
    if distributed:
        if global_loss:
            model.language_model.loss_group = mesh["dp"].get_group()
        apply_fsdp(model, mesh, mp_policy=mp_policy)
    return model


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The full (unsharded) state dict of a parallelised model, on CPU, on rank 0 (empty elsewhere).

    Collective: every rank must call it. FSDP shards and expert-parallel shards are both
    gathered, and the names are the single-device model's.
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def is_sharded(model: nn.Module) -> bool:
    """Whether any parameter of ``model`` is a ``DTensor`` (sharded by FSDP2 or expert parallelism)."""
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def save_gathered(model: nn.Module, path: str | Path, build_plain: Callable[[], nn.Module], **kwargs: Any) -> Path:
    """Save a sharded ``model`` as one single-process model dir: gathered, then written by rank 0.

    Collective: every rank must call it. Rank 0 builds a plain copy with ``build_plain()`` (the
    same architecture, unparallelised), loads the full state dict into it and calls its
    ``save_pretrained(path, **kwargs)``; the others wait for it.
    """
    import torch.distributed as dist

    state = full_state_dict(model)  # collective
    if dist.get_rank() == 0:
        plain = build_plain()
        plain.load_state_dict(state)
        plain.save_pretrained(path, **kwargs)
    dist.barrier()
    return Path(path)
