"""Parallelism applied to a built moezoo model, as torchtitan does: expert parallelism
(all-to-all over an ``"ep"`` mesh dimension that borrows the data-parallel ranks),
activation checkpointing, ``torch.compile`` and FSDP2 over ``"dp"``.

The model code stays single-device; :func:`parallelize` is the one entry, and
:func:`negotiate_mesh` decides the mesh a training run applies it over.

Example:
    >>> from moezoo.parallel import check_parallel_sizes
    >>> check_parallel_sizes(world_size=2, dp=2, ep=2)
    2
"""

from moezoo.parallel.expert_parallel import ExpertParallelExperts, all_to_all, apply_expert_parallel
from moezoo.parallel.fsdp import (apply_activation_checkpointing, apply_compile, apply_fsdp, full_state_dict,
                                  is_sharded, parallelize, save_gathered)
from moezoo.parallel.mesh import build_mesh, check_parallel_sizes
from moezoo.parallel.negotiate import negotiate_mesh

__all__ = ["ExpertParallelExperts", "all_to_all", "apply_activation_checkpointing", "apply_compile",
           "apply_expert_parallel", "apply_fsdp", "build_mesh", "check_parallel_sizes", "full_state_dict",
           "is_sharded", "negotiate_mesh", "parallelize", "save_gathered"]
