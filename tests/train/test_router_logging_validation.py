"""ExpertLoadLogger at validation: the switch rate of the same validation tokens between passes (three
definitions) equals ``switch_rate`` of the routes the model returned, the modality shares equal the counts
by modality, the sanity check is left out, and curves / heatmaps reach CSV, PNG and offline W&B runs."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from moezoo.analysis import chosen_experts, switch_rate
from moezoo.train.module import MoEZooModule
from moezoo.train.router_logging import ExpertLoadLogger

pytestmark = pytest.mark.filterwarnings("ignore:.*does not have many workers", "ignore:.*val_check_interval")


def _text_batches(vocab: int, n: int, seed: int, batch: int = 4, length: int = 12) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (batch, length), generator=g)
        mask = torch.ones_like(ids)
        mask[0, :3] = 0  # padding is left out of both statistics
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


class EvalRoutes:
    """Per evaluation forward of ``model``: each LLM layer's (T, k) routes and the tokens' modality ids,
    read from the model's own output (not through the callback's hooks)."""

    def __init__(self, model: torch.nn.Module):
        self.forwards: list[tuple[list[torch.Tensor], torch.Tensor]] = []
        self.masks: list[torch.Tensor] = []
        model.register_forward_pre_hook(self.pre, with_kwargs=True)
        model.register_forward_hook(self)

    def pre(self, module, args, kwargs) -> None:
        if not module.training:
            self.masks.append(kwargs["attention_mask"])

    def __call__(self, module, args, out) -> None:
        if module.training:
            return
        modality = getattr(out, "modality_ids", None)
        if modality is None:
            modality = torch.where(self.masks[-1].bool(), 0, -1)
        self.forwards.append(([chosen_experts(r) for r in out.routings], modality.reshape(-1)))

    def passes(self, per_pass: int) -> list[list[tuple[list[torch.Tensor], torch.Tensor]]]:
        return [self.forwards[i:i + per_pass] for i in range(0, len(self.forwards), per_pass)]


def _fit(module, train, val, root, logger, callbacks, steps, every) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(root), log_every_n_steps=1, logger=logger,
                         callbacks=callbacks, val_check_interval=every, num_sanity_val_steps=2)
    trainer.fit(module, torch.utils.data.DataLoader(train, batch_size=None),
                torch.utils.data.DataLoader(val, batch_size=None))
    return trainer


def test_switch_rates_between_validation_passes(tmp_path):
    module = MoEZooModule(arch="moe_lm_tiny", lr=3e-2)
    module.configure_model()
    vocab = module.model.config.vocab_size
    routes = EvalRoutes(module.model)
    cb = ExpertLoadLogger(every_n_steps=2)
    logger = CSVLogger(str(tmp_path), name="csv")
    _fit(module, _text_batches(vocab, 6, seed=0), _text_batches(vocab, 2, seed=1), tmp_path, logger, [cb],
         steps=6, every=2)

    _sanity, *passes = routes.passes(2)  # the sanity check's 2 batches, then a pass at steps 2, 4 and 6
    assert len(passes) == 3
    def pass_routes(p, layer):  # the pass's tokens in loader order, padding left out
        return torch.cat([layer_routes[layer][modality >= 0] for layer_routes, modality in p])
    for step, (before, now) in zip((4, 6), itertools.pairwise(passes)):
        for layer in (0, 1):
            a, b = pass_routes(before, layer), pass_routes(now, layer)
            assert len(a) == 2 * (4 * 12 - 3)  # 2 batches, 3 padding tokens each
            for how in ("ordered", "slot", "set"):
                expected = switch_rate(a, b, how)
                assert cb.switch_history[how][f"layer{layer}"][step] == pytest.approx(expected, abs=1e-12)
    assert set(cb.switch_history["set"]["layer0"]) == {4, 6}  # no rate for the first pass, none for the sanity one
    assert any(cb.switch_history["ordered"]["layer1"][s] > 0 for s in (4, 6))  # lr 3e-2 moves the routers

    E = module.model.config.moe.num_experts
    for layer in (0, 1):  # the last pass's shares: text only, every chosen expert counted
        counts = torch.bincount(pass_routes(passes[-1], layer).flatten(), minlength=E)
        shares = cb.last_modality_shares[f"layer{layer}"]
        assert list(shares) == ["text"]
        assert torch.allclose(shares["text"], counts.double() / counts.sum())

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("router/switch_slot/layer0")]
    assert [int(r["step"]) for r in rows] == [4, 6]
    assert float(rows[-1]["router/switch_set/layer1"]) == pytest.approx(cb.switch_history["set"]["layer1"][6])
    root = tmp_path / "expert_load"
    for name in ("switch_ordered.png", "switch_slot.png", "switch_set.png", "modality_step2.png",
                 "modality_step6.png"):
        with Image.open(root / name) as im:
            assert im.format == "PNG" and im.size[0] > 50, name
    assert not (root / "modality_step0.png").exists()  # the sanity check is not a pass


def test_modality_shares_of_a_multimodal_model(tmp_path, shapes_dir):
    from moezoo.train.datamodule import ShardDataModule

    module = MoEZooModule(arch="mm_tiny_cnn", overrides={"image_connector": {"kind": "moe", "num_experts": 4}})
    module.configure_model()
    routes = EvalRoutes(module.model)
    dm = ShardDataModule(shapes_dir, processor="mm_tiny_cnn", batch_size=4, resampled=False, shuffle_buffer=0)
    batch = next(iter(dm.val_dataloader()))
    cb = ExpertLoadLogger(every_n_steps=2)
    _fit(module, [batch, batch], [batch], tmp_path, False, [cb], steps=2, every=2)
    (layer_routes, modality), = routes.forwards[-1:]
    E = module.model.config.llm.moe.num_experts
    for layer in (0, 1):
        shares = cb.last_modality_shares[f"layer{layer}"]
        assert set(shares) == {"text", "image"}
        for m, name in ((0, "text"), (1, "image")):
            counts = torch.bincount(layer_routes[layer][modality == m].flatten(), minlength=E)
            assert torch.allclose(shares[name], counts.double() / counts.sum())
    assert list(cb.last_modality_shares["connectors.image.mlp"]) == ["image"]  # media tokens only
    assert (tmp_path / "expert_load" / "modality_step2.png").is_file()


def test_wandb_offline_run_gets_the_modality_heatmap(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    module = MoEZooModule(arch="moe_lm_tiny")
    module.configure_model()
    vocab = module.model.config.vocab_size
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="moezoo-test")
    _fit(module, _text_batches(vocab, 4, seed=0), _text_batches(vocab, 1, seed=1), tmp_path, logger,
         [ExpertLoadLogger(every_n_steps=2)], steps=4, every=2)
    logger.experiment.finish()
    images = list(Path(tmp_path, "wandb").glob("offline-run-*/files/media/images/**/*.png"))
    assert len([i for i in images if "modality" in i.name]) == 2  # validation at steps 2 and 4
    with pytest.raises(ValueError, match="switch_tokens >= 1"):
        ExpertLoadLogger(switch_tokens=0)
