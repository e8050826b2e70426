"""Runs killed with SIGKILL resume exactly: mid-way between checkpoints, and in the middle of writing one.

Each run is ``python -m moezoo fit -c configs/text_moe_lm.yaml`` in its own process, as a user starts
it; a callback from kill_helpers.py SIGKILLs it. ``--ckpt_path last`` then resumes, and the run must
end with the weights of a run never killed (bitwise: the dispatch is deterministic with
``--trainer.deterministic true``), and the previous checkpoint must survive a kill during a save.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from moezoo.train.checkpoints import load_checkpoint

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6
pytestmark = pytest.mark.multiprocess


def _fit(root: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "moezoo", "fit", "-c", "configs/text_moe_lm.yaml",
            "--trainer.default_root_dir", str(root), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.max_steps", str(STEPS),
            "--data.batch_size", "4", "--data.max_length", "32", "--data.epoch_length", "16",
            "--trainer.limit_val_batches", "0", "--trainer.deterministic", "true",
            "--trainer.callbacks", "lightning.pytorch.callbacks.ModelCheckpoint",
            "--trainer.callbacks.dirpath", str(root / "ckpt"), "--trainer.callbacks.every_n_train_steps", "2",
            "--trainer.callbacks.save_last", "true", "--trainer.callbacks.save_top_k", "-1", *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = load_checkpoint(ckpt)
    assert state["global_step"] == STEPS
    return state["state_dict"]


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> dict[str, torch.Tensor]:
    root = tmp_path_factory.mktemp("straight")
    run = _fit(root)
    assert run.returncode == 0, run.stderr[-3000:]
    return _weights(root / "ckpt" / "last.ckpt")


def _assert_same(resumed: dict[str, torch.Tensor], straight: dict[str, torch.Tensor]) -> None:
    assert resumed.keys() == straight.keys()
    for name, weight in straight.items():
        torch.testing.assert_close(resumed[name], weight, rtol=0, atol=0, msg=name)


def test_sigkill_between_checkpoints_then_resume_last(tmp_path, straight):
    killed = _fit(tmp_path, "--trainer.callbacks+=kill_helpers.KillAt", "--trainer.callbacks.step", "5")
    assert killed.returncode == -signal.SIGKILL
    assert load_checkpoint(tmp_path / "ckpt" / "last.ckpt")["global_step"] == 4  # step 5 was lost with the process
    resumed = _fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(_weights(tmp_path / "ckpt" / "last.ckpt"), straight)


def test_sigkill_during_a_save_keeps_the_previous_checkpoint(tmp_path, straight):
    killed = _fit(tmp_path, "--trainer.callbacks+=kill_helpers.KillDuringSave", "--trainer.callbacks.step", "4")
    assert killed.returncode == -signal.SIGKILL
    ckpt = tmp_path / "ckpt"
    assert load_checkpoint(ckpt / "last.ckpt")["global_step"] == 2  # intact, and still the last good one
    assert not (ckpt / "epoch=0-step=4.ckpt").exists() and not (ckpt / "epoch=1-step=4.ckpt").exists()
    assert [p.name for p in ckpt.glob(".*.tmp")], "the half-written file stays beside it, never in its place"
    resumed = _fit(tmp_path, "--ckpt_path", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    _assert_same(_weights(ckpt / "last.ckpt"), straight)
