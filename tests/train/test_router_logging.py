"""ExpertLoadLogger: the heatmap's counts equal the routings the model returned, each row sums to 1,
the entropy curves are the window's mean router entropy, and the image reaches CSV runs (a PNG under
default_root_dir) and offline W&B runs (files/media/images)."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from moezoo.train.module import MoEZooModule
from moezoo.train.router_logging import ExpertLoadLogger, load_fractions, site_label

pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`",
                                        "ignore:.*does not have many workers")


def _text_batches(vocab: int, n: int, batch: int = 4, length: int = 16) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for _ in range(n):
        ids = torch.randint(3, vocab, (batch, length), generator=g)
        out.append({"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()})
    return out


class RoutingRecorder:
    """Per training forward of ``model``, each MoE site's assignment counts and entropy, read from the
    model's own output (``routings`` / ``router_stats`` of the LLM, ``site_outputs`` of the other sites,
    every pass of a site together) and recomputed from the routings: not from the per-layer hooks and
    ``tokens_per_expert`` the callback uses."""

    def __init__(self, model: torch.nn.Module):
        self.model, self.steps = model, []
        model.register_forward_hook(self)

    def __call__(self, module, args, out) -> None:
        if not module.training:
            return
        llm = getattr(module, "llm", module)
        E = llm.config.moe.num_experts if llm.config.moe is not None else 0
        step = {f"layer{i}": (torch.bincount(r.expert_idx.flatten(), minlength=E), s.router_entropy.item())
                for i, r, s in zip(llm.config.sparse_layers(), out.routings, out.router_stats)}
        routings = {}
        for record in getattr(out, "site_outputs", []):
            routings.setdefault(record.site, []).append(record.output.routing)
        for site, rs in routings.items():
            probs = torch.cat([r.probs for r in rs]).float()
            ent = (-(probs * probs.clamp_min(1e-20).log()).sum(-1).mean() / torch.log(torch.tensor(probs.shape[-1])))
            counts = torch.bincount(torch.cat([r.expert_idx.flatten() for r in rs]), minlength=probs.shape[-1])
            step[site] = (counts, ent.item())
        self.steps.append(step)


def _fit(module: MoEZooModule, batches: list, callbacks: list, root: Path, logger, **kw) -> pl.Trainer:
    trainer = pl.Trainer(max_steps=len(batches), accelerator="cpu", enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, default_root_dir=str(root),
                         log_every_n_steps=1, logger=logger, callbacks=callbacks, **kw)
    trainer.fit(module, torch.utils.data.DataLoader(batches, batch_size=None))
    return trainer


def test_site_labels_and_fractions():
    assert [site_label(n) for n in ("layers.1.mlp", "llm.layers.12.mlp", "llm.layers.0._orig_mod.mlp",
                                    "connectors.image.mlp")] == ["layer1", "layer12", "layer0",
                                                                 "connectors.image.mlp"]
    f = load_fractions({"a": torch.tensor([1, 3, 0])})["a"]
    assert torch.allclose(f, torch.tensor([0.25, 0.75, 0.0]))
    with pytest.raises(ValueError, match="every_n_steps >= 1"):
        ExpertLoadLogger(every_n_steps=0)


def test_csv_run_gets_pngs_and_entropy_curves(tmp_path):
    module = MoEZooModule(arch="moe_lm_tiny", lr=1e-2)
    module.configure_model()
    recorder = RoutingRecorder(module.model)
    cb = ExpertLoadLogger(every_n_steps=2)
    logger = CSVLogger(str(tmp_path), name="csv")
    _fit(module, _text_batches(module.model.config.vocab_size, 4), [cb], tmp_path, logger)

    for step in (2, 4):  # a PNG per window
        with Image.open(tmp_path / "expert_load" / f"step{step}.png") as im:
            assert im.format == "PNG" and im.size[0] > 50
    assert not (tmp_path / "expert_load" / "step3.png").exists()
    assert len(recorder.steps) == 4 and set(cb.last_load) == {"layer0", "layer1"}
    E = module.model.config.moe.num_experts
    for site, load in cb.last_load.items():  # the last window is steps 3-4
        expected = recorder.steps[2][site][0] + recorder.steps[3][site][0]
        assert torch.equal(cb.last_counts[site], expected)
        assert expected.sum() == 2 * 4 * 16 * module.model.config.moe.top_k
        assert load.shape == (E,) and load.sum().item() == pytest.approx(1.0, abs=1e-6)
        assert torch.allclose(load, expected.double().div(expected.sum()).float())
        # Equal token counts per step: the window's mean is the mean of the two steps' entropies.
        mean = (recorder.steps[2][site][1] + recorder.steps[3][site][1]) / 2
        assert cb.last_entropy[site] == pytest.approx(mean, rel=1e-5)

    with open(Path(logger.log_dir) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("router/entropy/layer0")]
    assert [int(r["step"]) for r in rows] == [2, 4]
    for r in rows:
        values = [float(r[f"router/entropy/layer{i}"]) for i in (0, 1)]
        assert all(0.0 < v <= 1.0 for v in values)
    assert float(rows[-1]["router/entropy/layer1"]) == pytest.approx(cb.last_entropy["layer1"], rel=1e-6)


def test_moe_connector_site_is_counted(tmp_path, shapes_dir):
    from moezoo.train.datamodule import ShardDataModule

    module = MoEZooModule(arch="mm_tiny_cnn", overrides={"image_connector": {"kind": "moe", "num_experts": 4}})
    module.configure_model()
    recorder = RoutingRecorder(module.model)
    dm = ShardDataModule(shapes_dir, processor="mm_tiny_cnn", batch_size=4, resampled=False, shuffle_buffer=0)
    batch = next(iter(dm.val_dataloader()))
    cb = ExpertLoadLogger(every_n_steps=2)
    _fit(module, [batch, batch], [cb], tmp_path, logger=False)
    assert set(cb.last_counts) == {"layer0", "layer1", "connectors.image.mlp"}
    for site, counts in cb.last_counts.items():
        assert torch.equal(counts, recorder.steps[0][site][0] + recorder.steps[1][site][0])
        assert 0.0 < cb.last_entropy[site] <= 1.0
    assert cb.last_counts["connectors.image.mlp"].numel() == 4
    assert (tmp_path / "expert_load" / "step2.png").is_file()  # no logger: the PNG still lands


def test_a_tower_running_for_images_and_video_frames_is_counted_for_both(tmp_path):
    """The MoE tower encodes the image, then the video's frames: the heatmap row holds both passes."""
    from PIL import Image

    module = MoEZooModule(arch="mm_tiny_clip", overrides={"video": {"num_frames": 2, "mode": "pool"}}, stage="moe",
                          upcycle={"num_experts": 4, "top_k": 2, "targets": ["vision"]})
    module.configure_model()
    recorder = RoutingRecorder(module.model)
    p = module.model.processor
    texts = [p.apply_chat_template([{"role": "user", "content": f"{p.placeholders[m]}\nWhat?"},
                                    {"role": "assistant", "content": "ok"}]) for m in ("image", "video")]
    batch = dict(p(text=texts, images=[Image.new("RGB", (40, 30), "orange")],
                   videos=[[Image.new("RGB", (40, 30), c) for c in ("red", "navy")]]))
    batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    cb = ExpertLoadLogger(every_n_steps=2)
    _fit(module, [batch, batch], [cb], tmp_path, logger=False)
    site = "vision.vision_tower.encoder.layers.0.mlp"
    assert set(cb.last_counts) == {"layer0", "layer1", site}
    expected = recorder.steps[0][site][0] + recorder.steps[1][site][0]
    assert torch.equal(cb.last_counts[site], expected)
    assert expected.sum() == 2 * (1 + 2) * 17 * 2  # 2 steps x (1 image + 2 frames) x (16 patches + CLS) x top-2
    assert cb.last_entropy[site] == pytest.approx((recorder.steps[0][site][1] + recorder.steps[1][site][1]) / 2,
                                                  rel=1e-5)


def test_wandb_offline_run_gets_the_image(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    module = MoEZooModule(arch="moe_lm_tiny")
    module.configure_model()
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="moezoo-test")
    _fit(module, _text_batches(module.model.config.vocab_size, 2), [ExpertLoadLogger(every_n_steps=2)], tmp_path,
         logger)
    logger.experiment.finish()
    images = list(Path(tmp_path, "wandb").glob("offline-run-*/files/media/images/**/*.png"))
    assert len(images) == 1 and "expert_load" in images[0].name
    with Image.open(images[0]) as im:
        assert im.format == "PNG"
