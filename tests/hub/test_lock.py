"""Hub entries that follow a branch: the first fetch locks the commit it got, later fetches keep it even when
the branch moves, the lock can be dropped to follow the branch again, and ``moezoo info`` says which is which."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import moezoo
from moezoo.cli import main
from moezoo.hub import SnapshotNotFoundError, fetch_pretrained
from moezoo.hub.lock import lock_path
from moezoo.registry.pretrained import (
    PretrainedCfg,
    PretrainedFile,
    register_pretrained,
    unregister_pretrained,
)

REPO, SUB = "toy-org/Routers", "sft_full/smoe"
OLD, NEW = "a" * 40, "b" * 40


@pytest.fixture
def branch_entry():
    cfg = register_pretrained(PretrainedCfg(
        name="toy_arch.follows_main", source="hf", location=REPO, revision="main", subfolder=SUB,
        files=(PretrainedFile("moezoo_config.json"),), license="apache-2.0", params_total=1, params_active=1))
    yield cfg
    unregister_pretrained(cfg.name)


def _in_subfolder(files: dict[str, bytes]) -> dict[str, bytes]:
    return {f"{SUB}/{rel}": data for rel, data in files.items()}


def _other_weights(tiny_checkpoint) -> dict[str, bytes]:
    from safetensors.torch import save

    from moezoo.models.lm import LMConfig, MoEForCausalLM

    torch.manual_seed(1)
    model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
    weights = save({k: v.contiguous() for k, v in model.state_dict().items()}, metadata={"format": "pt"})
    return {**tiny_checkpoint.files, "model.safetensors": weights}


def test_the_first_fetch_locks_the_commit_and_a_moved_branch_does_not_change_the_weights(
        caches, tiny_checkpoint, make_hub_snapshot, branch_entry):
    make_hub_snapshot(caches.hf, REPO, OLD, _in_subfolder(tiny_checkpoint.files))  # refs/main -> OLD
    with pytest.warns(UserWarning, match=f"this first fetch got {OLD}, now locked"):
        first = moezoo.load(branch_entry.name)
    lock = json.loads(lock_path(branch_entry.name).read_text())
    assert (lock["commit"], lock["repo_id"], lock["branch"], lock["subfolder"]) == (OLD, REPO, "main", SUB)

    make_hub_snapshot(caches.hf, REPO, NEW, _in_subfolder(_other_weights(tiny_checkpoint)))  # main moves on
    assert fetch_pretrained(branch_entry).parent.parent.name == OLD  # .../snapshots/OLD/sft_full/smoe
    again = moezoo.load(branch_entry.name)
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))

    lock_path(branch_entry.name).unlink()  # follow the branch again
    with pytest.warns(UserWarning, match=f"got {NEW}"):
        moved = moezoo.load(branch_entry.name)
    assert json.loads(lock_path(branch_entry.name).read_text())["commit"] == NEW
    assert not torch.equal(moved.state_dict()["lm_head.weight"], first.state_dict()["lm_head.weight"])


def test_a_locked_commit_missing_from_the_cache_is_not_silently_replaced_by_the_branch(
        caches, tiny_checkpoint, make_hub_snapshot, branch_entry):
    make_hub_snapshot(caches.hf, REPO, OLD, _in_subfolder(tiny_checkpoint.files))
    with pytest.warns(UserWarning):
        fetch_pretrained(branch_entry)
    make_hub_snapshot(caches.hf, REPO, NEW, _in_subfolder(tiny_checkpoint.files))
    shutil.rmtree(caches.hf / "models--toy-org--Routers" / "snapshots" / OLD)
    with pytest.raises(SnapshotNotFoundError, match=f"--revision {OLD} --subfolder {SUB}"):
        fetch_pretrained(branch_entry)


def test_a_lock_taken_for_another_repo_is_ignored_and_a_corrupt_one_is_named(
        caches, tiny_checkpoint, make_hub_snapshot, branch_entry):
    make_hub_snapshot(caches.hf, REPO, NEW, _in_subfolder(tiny_checkpoint.files))
    path = lock_path(branch_entry.name)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"repo_id": "someone/else", "branch": "main", "subfolder": SUB, "commit": OLD}))
    with pytest.warns(UserWarning, match=f"got {NEW}"):  # the entry moved to another repo: lock again
        fetch_pretrained(branch_entry)
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"the lock file {path} is unreadable .* delete it"):
        fetch_pretrained(branch_entry)


def test_pinned_entries_take_no_lock(caches, tiny_checkpoint, make_hub_snapshot):
    make_hub_snapshot(caches.hf, "toy-org/Tiny", OLD, tiny_checkpoint.files)
    cfg = PretrainedCfg(name="toy_arch.pinned", source="hf", location="toy-org/Tiny", revision=OLD,
                        files=(PretrainedFile("moezoo_config.json"),))
    fetch_pretrained(cfg)
    assert not lock_path(cfg.name).exists()


def test_info_says_whether_an_entry_is_pinned_or_locked_here(caches, tiny_checkpoint, make_hub_snapshot,
                                                            branch_entry, capsys):
    assert main(["info", branch_entry.name]) == 0
    assert "follows branch 'main'" in capsys.readouterr().out
    make_hub_snapshot(caches.hf, REPO, OLD, _in_subfolder(tiny_checkpoint.files))
    with pytest.warns(UserWarning):
        fetch_pretrained(branch_entry)
    assert main(["info", branch_entry.name]) == 0
    assert f"locked here at {OLD}" in capsys.readouterr().out
    assert main(["info", "olmoe_1b_7b.0924"]) == 0
    assert "pinned commit 6d84c48581ece794365f2b8e9cfb043c68ade9c5" in capsys.readouterr().out
