"""Expert parallelism over 2 gloo processes against the single-process MoE layer and model.

The processes run ``ep_layer_worker.py`` under ``torchrun`` in a subprocess, one thread each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moezoo.moe import MoEConfig, MoELayer
from moezoo.parallel import apply_expert_parallel, check_parallel_sizes

WORKER = Path(__file__).with_name("ep_layer_worker.py")


def torchrun(script: Path, *args: str, nproc: int = 2, timeout: int = 300) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", str(script),
           *args]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def ep_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("ep")
    torchrun(WORKER, str(out))
    return json.loads((out / "ep_layer.json").read_text())


@pytest.mark.multiprocess
@pytest.mark.parametrize("case", ["softmax_capacity", "sigmoid_bias", "cosine_shared_mh", "deepspeed_bias"])
def test_ep_layer_matches_single_process(ep_results, case):
    """Outputs, input gradients, router and expert gradients (and the sigmoid bias) as one process computes them."""
    for rank in ep_results["ranks"]:
        diffs = rank[case]
        assert len([k for k in diffs if k.startswith("grad:experts.")]) == (4 if case == "deepspeed_bias" else 2)
        close = {k: v for k, v in diffs.items() if k not in ("num_dropped_total", "bias_moved")}
        assert max(close.values()) < 1e-6, close
    if case in ("softmax_capacity", "deepspeed_bias"):  # per-rank capacity really dropped assignments, the same ones
        assert all(rank[case]["num_dropped_total"] > 0 for rank in ep_results["ranks"])
    if case == "sigmoid_bias":  # the balancing bias moved, by the global load, identically everywhere
        assert ep_results["ranks"][0][case]["bias_moved"] > 0


@pytest.mark.multiprocess
@pytest.mark.parametrize("ep", [1, 2])
def test_parallelized_model_gradients_match_one_process(ep_results, ep):
    """FSDP2 (ep=1) and EP + FSDP2 (ep=2) with the global loss: every full gradient equals one process's."""
    for rank in ep_results["ranks"]:
        grads = rank[f"model_ep{ep}"]
        assert any("experts" in name for name in grads)
        assert max(grads.values()) < 1e-5, sorted(grads.items(), key=lambda kv: -kv[1])[:3]


@pytest.mark.multiprocess
def test_expert_choice_is_refused_under_ep(ep_results):
    assert "expert_choice" in ep_results["expert_choice_error"]
    assert "whole batch" in ep_results["expert_choice_error"]


def test_expert_choice_is_refused_before_any_process_group():
    layer = MoELayer(MoEConfig(dim=8, expert_dim=8, num_experts=4, router="expert_choice"))
    with pytest.raises(ValueError, match="expert_choice.*whole batch"):
        apply_expert_parallel(layer, mesh=None)


@pytest.mark.parametrize(("world", "dp", "ep", "message"), [
    (2, 2, 3, "must divide data_parallel=2"),
    (4, 2, 1, "must equal the number of processes"),
    (2, 0, 1, "expected data_parallel >= 1"),
])
def test_bad_parallel_sizes_are_named(world, dp, ep, message):
    with pytest.raises(ValueError, match=message):
        check_parallel_sizes(world, dp, ep)


def test_expert_parallel_needs_several_processes():
    from moezoo.parallel import parallelize

    with pytest.raises(ValueError, match="expert_parallel=2 needs several processes"):
        parallelize(torch.nn.Linear(2, 2), ep=2)
