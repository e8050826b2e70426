"""The device mesh of a data- and expert-parallel run.

As torchtitan's ``ParallelDims`` (``dp_shard_in_ep``), the expert-parallel dimension
*borrows* the data-parallel ranks instead of adding ranks of its own: the ``dp`` ranks
are laid out as a ``(dp // ep, ep)`` grid, named ``("dp_mod_ep", "ep")``, whose
flattening is ``"dp"``. With 2 processes, ``dp=2, ep=2`` puts both dimensions on the
same two ranks: each rank sees its own half of the batch (data parallel) and holds half
of every MoE layer's experts (expert parallel).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh


def check_parallel_sizes(world_size: int, dp: int | None, ep: int = 1) -> int:
    """Validate the sizes of a run and return ``dp`` (``None`` means every rank).

    Example:
        >>> check_parallel_sizes(4, None, 2)
        4
        >>> check_parallel_sizes(4, 4, 3)
        Traceback (most recent call last):
        ...
        ValueError: expert_parallel=3 must divide data_parallel=4 (the expert-parallel group borrows the data-parallel ranks)
    """
    dp = world_size if dp is None else dp
    if dp < 1 or ep < 1:
        raise ValueError(f"expected data_parallel >= 1 and expert_parallel >= 1, got {dp} and {ep}")
    if dp != world_size:
        raise ValueError(f"data_parallel={dp} must equal the number of processes ({world_size}): moezoo shards "
                         f"parameters over data parallelism only (no tensor or pipeline parallelism)")
    if dp % ep:
        raise ValueError(f"expert_parallel={ep} must divide data_parallel={dp} (the expert-parallel group borrows "
                         f"the data-parallel ranks)")
    return dp


def build_mesh(dp: int | None = None, ep: int = 1, device_type: str | None = None) -> DeviceMesh:
    """A mesh with a ``"dp"`` dimension and, for ``ep > 1``, an ``"ep"`` one over the same ranks.

    Needs an initialised default process group (``torchrun``, or a Lightning strategy).

    Args:
        dp: data-parallel size; ``None`` is the world size.
        ep: expert-parallel size; must divide ``dp``.
        device_type: ``"cuda"`` or ``"cpu"``; defaults to CUDA when it is available.

    Returns:
        A ``DeviceMesh``: 1-D ``("dp",)`` for ``ep == 1``; otherwise ``("dp_mod_ep", "ep")``
        with ``"dp"`` its flattening (``mesh["dp"]``, ``mesh["ep"]``, ``mesh["dp_mod_ep"]``).

    Example:
        >>> mesh = build_mesh(dp=2, ep=2)  # doctest: +SKIP
        >>> mesh["dp"].size(), mesh["ep"].size()  # doctest: +SKIP
        (2, 2)
    """
    import torch
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    if not dist.is_initialized():
        raise ValueError("build_mesh needs an initialised process group (run under torchrun or a Lightning strategy)")
    dp = check_parallel_sizes(dist.get_world_size(), dp, ep)
    device_type = device_type or ("cuda" if torch.cuda.is_available() else "cpu")
    if ep == 1:
        return init_device_mesh(device_type, (dp,), mesh_dim_names=("dp",))
    mesh = init_device_mesh(device_type, (dp // ep, ep), mesh_dim_names=("dp_mod_ep", "ep"))
    mesh[("dp_mod_ep", "ep")]._flatten("dp")  # torchtitan does the same: "dp" is the whole grid
    return mesh


def mesh_size(mesh: DeviceMesh, name: str) -> int:
    """The size of ``mesh``'s dimension ``name`` (1 if it has none: no expert parallelism, say)."""
    names = mesh.mesh_dim_names or ()
    if name in names:
        return mesh.size(names.index(name))
    if name == "dp" and names == ("dp_mod_ep", "ep"):
        return mesh.size()
    return 1
