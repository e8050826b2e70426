"""negotiate_mesh on one process: what a run asks for against the strategy that runs it (the several-process
meshes it builds are exercised by test_fsdp.py's ModelParallelStrategy runs)."""

from __future__ import annotations

import pytest

from moezoo.parallel import negotiate_mesh


class StrategyMesh:
    """Stands in for the ``DeviceMesh`` Lightning's ``ModelParallelStrategy`` hands the module:
    named dimensions of given sizes (no process group needed)."""

    device_type = "cpu"

    def __init__(self, **sizes: int):
        self.sizes = sizes
        self.mesh_dim_names = tuple(sizes)

    def __getitem__(self, name: str) -> StrategyMesh:
        return StrategyMesh(**{name: self.sizes[name]})

    def size(self) -> int:
        total = 1
        for n in self.sizes.values():
            total *= n
        return total


def test_one_process_needs_no_mesh():
    assert negotiate_mesh(None, data_parallel=None, expert_parallel=1) is None
    assert negotiate_mesh(None, data_parallel=None, expert_parallel=1, strategy="SingleDeviceStrategy") is None
    assert negotiate_mesh(None, data_parallel=1, expert_parallel=1, strategy="SingleDeviceStrategy") is None
    one = StrategyMesh(data_parallel=1, tensor_parallel=1)
    assert negotiate_mesh(one, data_parallel=None, expert_parallel=1, strategy="ModelParallelStrategy") is None


@pytest.mark.parametrize("mesh, dp, ep, strategy, says", [
    (StrategyMesh(data_parallel=1, tensor_parallel=2), None, 1, "ModelParallelStrategy",
     "data (and expert) parallelism only"),
    (StrategyMesh(data_parallel=2, tensor_parallel=1), 4, 1, "ModelParallelStrategy",
     "data_parallel=4 but the strategy's mesh has data_parallel_size=2"),
    (None, None, 2, "SingleDeviceStrategy", "expert_parallel=2 needs several processes"),
])
def test_what_cannot_run_is_refused_naming_the_fix(mesh, dp, ep, strategy, says):
    with pytest.raises(ValueError, match=says.replace("(", "\\(").replace(")", "\\)")) as error:
        negotiate_mesh(mesh, data_parallel=dp, expert_parallel=ep, strategy=strategy)
    assert "ModelParallelStrategy" in str(error.value) or "data_parallel_size=2" in str(error.value)
