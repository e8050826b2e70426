"""The per-forward recorder of MoEMLP calls: every call kept, named and labelled by its pass; nothing kept
outside a recorder or twice under activation checkpointing; it survives torch.compile; the per-site sums
and merged statistics match values computed from the router directly."""

from __future__ import annotations

import contextvars
import math
import threading

import pytest
import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from moezoo.moe import load_balancing_loss, router_z_loss
from moezoo.moe.mlp_experts import MoEMLP
from moezoo.moe.recording import SiteRecorder, current_modality, modality_pass, site_losses, site_stats


class Tower(nn.Module):
    """Two blocks whose MLPs are experts, as a third-party tower calls them: ``x + self.mlp(x)``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(nn.ModuleDict({"mlp": MoEMLP(8, 16, num_experts=4, top_k=2)}) for _ in range(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = x + block["mlp"](x)
        return x


def test_every_call_is_kept_with_its_site_pass_and_index():
    tower = Tower()
    images, frames = torch.randn(3, 8), torch.randn(5, 8)
    with SiteRecorder(tower) as recorder:
        with modality_pass("image"):
            tower(images)
        with modality_pass("video"):
            tower(frames)
    got = [(r.site, r.modality, r.call, r.output.routing.probs.shape[0]) for r in recorder.records]
    assert got == [("blocks.0.mlp", "image", 0, 3), ("blocks.1.mlp", "image", 0, 3),
                   ("blocks.0.mlp", "video", 1, 5), ("blocks.1.mlp", "video", 1, 5)]
    assert current_modality() is None
    tower(images)  # no recorder: nothing is kept anywhere
    assert len(recorder.records) == 4
    for block in tower.blocks:
        assert not any(isinstance(v, torch.Tensor) for v in vars(block["mlp"]).values())


def test_losses_sum_and_statistics_merge_over_the_passes():
    """Against each call's routing recomputed from its input (forward hooks), not from the records."""
    tower = Tower().train()
    inputs: dict[str, list[torch.Tensor]] = {}
    for name, m in tower.named_modules():
        if isinstance(m, MoEMLP):
            m.register_forward_hook(lambda mod, args, out, name=name: inputs.setdefault(name, []).append(args[0]))
    with SiteRecorder(tower) as recorder:
        tower(torch.randn(3, 8))
        tower(torch.randn(5, 8))
    losses, stats = site_losses(recorder.records), site_stats(recorder.records)
    assert set(losses) == set(stats) == {"blocks.0.mlp", "blocks.1.mlp"}
    for name, xs in inputs.items():
        router = tower.get_submodule(name).router
        routings = [router(x) for x in xs]
        aux = sum(load_balancing_loss(r.probs, r.expert_idx) for r in routings)
        z = sum(router_z_loss(r.logits) for r in routings)
        torch.testing.assert_close(losses[name][0], aux)
        torch.testing.assert_close(losses[name][1], z)
        counts = sum(torch.bincount(r.expert_idx, minlength=4) for r in routings)
        assert stats[name].tokens_per_expert.tolist() == counts.tolist() and counts.sum() == (3 + 5) * 2
        probs = torch.cat([r.probs for r in routings])  # one call on all 8 tokens would report this entropy
        entropy = -(probs * probs.log()).sum(-1).mean() / math.log(4)
        torch.testing.assert_close(stats[name].router_entropy, entropy.detach())
        assert stats[name].dropped_fraction == 0
    single = site_stats(recorder.records[:1])["blocks.0.mlp"]
    assert single is recorder.records[0].output.stats


def test_the_innermost_recorder_takes_the_calls_and_others_are_refused():
    tower = Tower()
    x = torch.randn(2, 8)
    with SiteRecorder(tower) as outer:
        tower.blocks[0]["mlp"](x)
        with SiteRecorder(tower.blocks[1]) as inner:
            tower.blocks[1]["mlp"](x)
        tower.blocks[1]["mlp"](x)
    assert [(r.site, r.call) for r in inner.records] == [("mlp", 0)]  # blocks.1's MLP, named under its root
    assert [(r.site, r.call) for r in outer.records] == [("blocks.0.mlp", 0), ("blocks.1.mlp", 0)]
    with pytest.raises(ValueError, match="a MoEMLP that is not a submodule of the recording ModuleDict ran"), \
            SiteRecorder(tower.blocks[1]):
        tower(x)
    with pytest.raises(RuntimeError, match="open already"), outer, outer:
        pass


def test_checkpoint_recompute_is_not_recorded_twice():
    tower = Tower().train()
    x = torch.randn(4, 8, requires_grad=True)
    with SiteRecorder(tower) as recorder:
        y = checkpoint(tower, x, use_reentrant=False)
    (y.sum() + sum(r.weighted_loss for r in recorder.records)).backward()  # recomputes both blocks
    assert [r.site for r in recorder.records] == ["blocks.0.mlp", "blocks.1.mlp"]
    assert tower.blocks[0]["mlp"].router.weight.grad.abs().sum() > 0


def test_a_compiled_tower_records_and_its_losses_train_the_router():
    tower = Tower().train()
    compiled = torch.compile(tower, backend="eager")  # dynamo's graph capture, without a C++ compiler
    x = torch.randn(6, 8)
    with SiteRecorder(tower) as recorder:
        compiled(x)
    assert [r.site for r in recorder.records] == ["blocks.0.mlp", "blocks.1.mlp"]
    routing = tower.blocks[0]["mlp"].router(x)
    eager_aux = load_balancing_loss(routing.probs, routing.expert_idx)
    torch.testing.assert_close(recorder.records[0].output.aux_loss, eager_aux)
    recorder.records[0].output.aux_loss.backward()
    assert tower.blocks[0]["mlp"].router.weight.grad.abs().sum() > 0


def test_another_thread_records_only_in_a_copy_of_the_context():
    tower = Tower()
    x = torch.randn(2, 8)
    with SiteRecorder(tower) as recorder:
        plain = threading.Thread(target=tower, args=(x,))
        plain.start()
        plain.join()
        assert recorder.records == []
        copied = threading.Thread(target=contextvars.copy_context().run, args=(tower, x))
        copied.start()
        copied.join()
    assert [r.site for r in recorder.records] == ["blocks.0.mlp", "blocks.1.mlp"]
