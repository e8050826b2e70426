"""Which mesh a training run shards over: the run's settings reconciled with the strategy that started it.

A run asks for data and expert parallelism (``data_parallel``, ``expert_parallel``); the
processes come from whoever launched them. Three cases, as torchtitan's ``ParallelDims``
checks its sizes against the world before building anything:

* Lightning's ``ModelParallelStrategy`` hands the module a device mesh before it calls
  ``configure_model``: moezoo shards over its data-parallel dimension (tensor parallelism is
  refused: the model code is single-device), with the experts over ``expert_parallel`` of
  those ranks;
* several processes outside a Trainer (``torchrun`` and a plain loop): the mesh is built over
  them when ``data_parallel`` or ``expert_parallel`` is set;
* a strategy that shards nothing itself (DDP) with those set: refused, naming the strategy
  that would apply them.

Example:
    >>> negotiate_mesh(None, data_parallel=None, expert_parallel=1) is None  # one process
    True
    >>> negotiate_mesh(None, data_parallel=None, expert_parallel=2, strategy="SingleDeviceStrategy")
    Traceback (most recent call last):
    ...
    ValueError: expert_parallel=2 needs several processes under ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)
"""

from __future__ import annotations

from typing import Any

from moezoo.parallel.mesh import build_mesh

MODEL_PARALLEL = "ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)"


def negotiate_mesh(strategy_mesh: Any, data_parallel: int | None, expert_parallel: int = 1,
                   strategy: str | None = None) -> Any:
    """The :func:`~moezoo.parallel.mesh.build_mesh` mesh of this run, or ``None`` for one process.

    Args:
        strategy_mesh: the device mesh a Lightning ``ModelParallelStrategy`` set on the module
            (``LightningModule.device_mesh``), or ``None``.
        data_parallel: the requested data-parallel size (``None``: every process).
        expert_parallel: experts sharded over this many of the data-parallel ranks.
        strategy: the class name of the Trainer's strategy, ``None`` outside a Trainer.

    Raises:
        ValueError: a tensor-parallel strategy mesh; ``data_parallel`` differing from the strategy's;
            ``expert_parallel`` without several processes under a Trainer; or several processes under
            a strategy that shards nothing itself with ``data_parallel`` / ``expert_parallel`` set.
    """
    import torch.distributed as dist

    if strategy_mesh is not None:
        names = strategy_mesh.mesh_dim_names or ()
        if "tensor_parallel" in names and strategy_mesh["tensor_parallel"].size() > 1:
            raise ValueError(f"moezoo shards over data (and expert) parallelism only: use {MODEL_PARALLEL}")
        dp = strategy_mesh["data_parallel"].size() if "data_parallel" in names else strategy_mesh.size()
        if data_parallel is not None and data_parallel != dp:
            raise ValueError(f"data_parallel={data_parallel} but the strategy's mesh has data_parallel_size={dp}")
        return build_mesh(dp, expert_parallel, strategy_mesh.device_type) if dp > 1 else None
    wants = data_parallel is not None or expert_parallel > 1
    if not (wants and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        if expert_parallel > 1 and strategy is not None:  # without a Trainer: wait for the processes
            raise ValueError(f"expert_parallel={expert_parallel} needs several processes under {MODEL_PARALLEL}")
        return None
    if strategy is not None:
        raise ValueError(f"data_parallel / expert_parallel are applied by moezoo in configure_model: run them "
                         f"under {MODEL_PARALLEL}, not {strategy}")
    return build_mesh(data_parallel, expert_parallel)
