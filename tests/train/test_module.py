"""MoEZooModule: stages train exactly their parameters, the loss and router metrics are logged, the LR
schedule is warm-up + cosine, and a training checkpoint loads with weights_only=True and exports a model."""

from __future__ import annotations

import csv
import math
import re

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger

import moezoo
from moezoo.models.lm.model import causal_lm_loss
from moezoo.processing.tokenizer import ZOO_TOKENIZER_DIR
from moezoo.train.datamodule import ShardDataModule
from moezoo.train.module import MoEZooModule, model_inputs
from moezoo.train.optim import WarmupCosine, no_weight_decay, param_groups
from moezoo.train.stages import parameter_parts, set_stage, warm_start

# The stage tests fit on one in-memory batch, with no validation loader.
pytestmark = pytest.mark.filterwarnings("ignore:You defined a `validation_step` but have no `val_dataloader`")
LLM_MOE = re.compile(r"^llm\.layers\.\d+\.mlp\.(router|experts)\.")


@pytest.fixture(scope="module")
def image_batch(shapes_dir):
    dm = ShardDataModule(shapes_dir, processor="mm_tiny_cnn", batch_size=4, resampled=False, shuffle_buffer=0)
    return next(iter(dm.val_dataloader()))


@pytest.fixture(scope="module")
def text_batch(text_dir):
    dm = ShardDataModule(text_dir, ZOO_TOKENIZER_DIR, batch_size=4, max_length=32, resampled=False, test_split=None)
    return next(iter(dm.val_dataloader()))


class GradRecorder(pl.Callback):
    """The parameters holding a gradient when the optimiser steps (the stage's, and only those)."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.with_grad = {n for n, p in pl_module.model.named_parameters() if p.grad is not None}
        self.nonzero = {n for n, p in pl_module.model.named_parameters() if p.grad is not None and p.grad.any()}


def _trainer(steps: int, **kw) -> pl.Trainer:
    kw = {"logger": False, "enable_checkpointing": False, **kw}
    return pl.Trainer(max_steps=steps, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **kw)


def _one_step(module: MoEZooModule, batch: dict) -> tuple[GradRecorder, dict[str, torch.Tensor], pl.Trainer]:
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    recorder = GradRecorder()
    trainer = _trainer(1, callbacks=[recorder])
    trainer.fit(module, torch.utils.data.DataLoader([batch], batch_size=None))
    return recorder, before, trainer


# (arch, overrides, stage options, which parameter names must train)
STAGE_CASES = {
    "align": ("mm_tiny_cnn", {}, {}, lambda n: n.startswith("connectors.")),
    "align+encoder": ("mm_tiny_cnn", {}, {"train_encoder": True},
                      lambda n: n.startswith(("connectors.", "vision."))),
    "finetune": ("mm_tiny_cnn", {}, {}, lambda n: n.startswith(("connectors.", "llm."))),
    "moe": ("mm_tiny_cnn", {}, {}, lambda n: bool(LLM_MOE.match(n))),
    "moe+rest": ("mm_tiny_cnn", {}, {"train_rest": True}, lambda n: n.startswith(("connectors.", "llm."))),
    "moe+moe_connector": ("mm_tiny_cnn", {"image_connector": {"kind": "moe", "num_experts": 4}}, {},
                          lambda n: bool(LLM_MOE.match(n)) or n.startswith("connectors.image.mlp.")),
}


@pytest.mark.parametrize("case", list(STAGE_CASES))
def test_each_stage_trains_exactly_its_parameters(case, image_batch):
    arch, overrides, options, intended = STAGE_CASES[case]
    module = MoEZooModule(arch=arch, overrides=overrides, stage=case.split("+")[0], lr=1e-2, **options)
    recorder, before, _ = _one_step(module, image_batch)
    params = dict(module.model.named_parameters())
    want = {n for n in params if intended(n)}
    assert want and want != set(params)
    assert {n for n, p in params.items() if p.requires_grad} == want
    assert recorder.with_grad == want  # gradients reach every trained parameter and no frozen one
    # An expert no token chose may get a zero gradient; and the FiLM condition's pool and norm feed FiLM
    # weights that start at zero, so nothing reaches them on the first step.
    behind_film = {n for n in want if n.startswith("vision.condition_")}
    assert len(recorder.nonzero - behind_film) > 0.9 * len(want - behind_film)
    assert all(torch.equal(params[n], before[n]) for n in set(params) - want)  # frozen ones did not move
    assert module.trainable["trainable"] == sum(params[n].numel() for n in want)


def test_moe_stage_upcycles_a_dense_text_model(text_batch):
    module = MoEZooModule(arch="moe_lm_tiny", overrides={"moe": None}, stage="moe",
                          upcycle={"num_experts": 4, "top_k": 2})
    module.configure_model()
    assert module.model.config.sparse_layers() == [0, 1] and module.model.tokenizer is not None
    recorder, _, _ = _one_step(module, text_batch)
    want = {n for n in dict(module.model.named_parameters()) if re.match(r"^layers\.\d+\.mlp\.(router|experts)\.", n)}
    assert want and recorder.with_grad == want
    with pytest.raises(ValueError, match="stage 'align' trains connectors"):
        MoEZooModule(arch="moe_lm_tiny", stage="align").configure_model()


@pytest.mark.parametrize("overrides, upcycle, intended", [
    ({"llm": {"moe": None}}, {"num_experts": 4, "top_k": 2}, lambda n: bool(LLM_MOE.match(n))),  # a dense LLM
    ({}, {"targets": ["connector"], "num_experts": 4},  # an MoE LLM gains an MoE connector
     lambda n: bool(LLM_MOE.match(n)) or n.startswith("connectors.image.mlp.")),
])
def test_moe_stage_upcycles_a_multimodal_model(overrides, upcycle, intended, image_batch):
    module = MoEZooModule(arch="mm_tiny_cnn", overrides=overrides, stage="moe", upcycle=upcycle)
    module.configure_model()
    assert module.model.llm.config.sparse_layers() == [0, 1] and module.processor is not None
    recorder, _, _ = _one_step(module, image_batch)
    assert recorder.with_grad == {n for n in dict(module.model.named_parameters()) if intended(n)}


def test_moe_connector_losses_are_logged_and_counted_once(image_batch):
    module = MoEZooModule(arch="mm_tiny_cnn", overrides={"image_connector": {"kind": "moe", "z_loss_coef": 0.1}})
    *_, trainer = _one_step(module, image_batch)
    m = {k: v.item() for k, v in trainer.callback_metrics.items()}
    llm, site = module.model.config.llm.moe, module.model.config.image_connector
    assert 1.0 <= m["router/connectors.image.mlp/max_load"] <= 4 and 0 < m["router/connectors.image.mlp/entropy"] <= 1
    expected = (m["train/lm_loss"] + llm.aux_loss_coef * m["train/aux_loss"] + llm.z_loss_coef * m["train/z_loss"]
                + site.aux_loss_coef * m["site/connectors.image.mlp/aux_loss"]
                + site.z_loss_coef * m["site/connectors.image.mlp/z_loss"])
    assert m["site/connectors.image.mlp/z_loss"] > 0 and m["train/loss"] == pytest.approx(expected, rel=1e-5)


def test_fit_logs_losses_router_metrics_and_the_lr_schedule(shapes_dir, tmp_path):
    dm = ShardDataModule(shapes_dir, processor="mm_tiny_cnn", batch_size=4, epoch_length=16)
    module = MoEZooModule(arch="mm_tiny_cnn", stage="finetune", lr=2e-3, warmup_steps=2, min_lr_ratio=0.1)
    trainer = _trainer(4, logger=CSVLogger(tmp_path), log_every_n_steps=1, val_check_interval=2, limit_val_batches=1,
                       callbacks=[LearningRateMonitor(logging_interval="step")])  # fmt: skip
    trainer.fit(module, datamodule=dm)
    with open(trainer.logger.log_dir + "/metrics.csv") as f:
        rows = list(csv.DictReader(f))
    steps = [r for r in rows if r["train/loss"]]
    assert len(steps) == 4
    for r in steps:
        values = {k: float(v) for k, v in r.items() if v and k.startswith(("train/", "router/"))}
        assert {"train/loss", "train/lm_loss", "train/aux_loss", "train/z_loss", "router/layer0/max_load",
                "router/layer0/entropy", "router/layer1/max_load", "router/layer1/entropy"} <= set(values)
        assert all(math.isfinite(v) for v in values.values())
        assert 1.0 <= values["router/layer0/max_load"] <= 4 and 0 < values["router/layer1/entropy"] <= 1
        moe = module.model.config.llm.moe  # the router terms are in the loss once, with their coefficients
        expected = values["train/lm_loss"] + moe.aux_loss_coef * values["train/aux_loss"] + \
            moe.z_loss_coef * values["train/z_loss"]
        assert values["train/loss"] == pytest.approx(expected, rel=1e-5)
    (logged,) = [float(r["params/trainable"]) for r in rows if r.get("params/trainable")]
    assert logged == sum(p.numel() for p in module.model.parameters() if p.requires_grad) > 0
    assert any(r.get("val/loss") for r in rows)
    column = next(k for k in rows[0] if k.startswith("lr-AdamW"))  # the first param group's
    lrs = [float(r[column]) for r in rows if r[column]]
    assert lrs == pytest.approx([2e-3 * f for f in (0.5, 1.0, 1.0, 0.55)])


def test_warmup_cosine_values():
    f = WarmupCosine(warmup_steps=4, total_steps=104, min_lr_ratio=0.0)
    assert [f(s) for s in (0, 1, 3)] == [0.25, 0.5, 1.0]
    assert f(4) == 1.0 and f(54) == pytest.approx(0.5) and f(104) == pytest.approx(0.0) and f(500) == 0.0
    assert WarmupCosine(0, 10, 0.2)(0) == 1.0


def test_checkpoint_loads_weights_only_and_exports_a_model_dir(image_batch, tmp_path):
    module = MoEZooModule(arch="mm_tiny_cnn", stage="align", weight_decay=0.1)
    trainer = _trainer(2, default_root_dir=tmp_path)
    trainer.fit(module, torch.utils.data.DataLoader([image_batch] * 2, batch_size=None))
    trainer.save_checkpoint(tmp_path / "last.ckpt")
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["hyper_parameters"]["arch"] == "mm_tiny_cnn" and ckpt["global_step"] == 2
    restored = MoEZooModule.load_from_checkpoint(tmp_path / "last.ckpt", weights_only=True)
    assert restored.hparams.stage == "align" and restored.trainable == module.trainable
    out_dir = restored.save_pretrained(tmp_path / "model")
    loaded = moezoo.load(out_dir)
    inputs = {k: v for k, v in model_inputs(image_batch).items() if k != "labels"}
    module.model.eval()
    torch.testing.assert_close(loaded(**inputs).logits, module.model(**inputs).logits, rtol=0, atol=0)
    assert loaded.processor.to_dict() == module.processor.to_dict()


def test_weight_decay_groups():
    module = MoEZooModule(arch="mm_tiny_cnn", stage="finetune")
    module.configure_model()
    decay, no_decay = ({id(p) for p in g["params"]} for g in param_groups(module.model, 0.1))
    names = {id(p): n for n, p in module.model.named_parameters()}
    assert {names[i] for i in no_decay} == {n for n, p in module.model.named_parameters() if p.requires_grad and (
        n.endswith(("bias", "norm.weight")) or n == "llm.embed_tokens.weight")}
    assert "llm.lm_head.weight" in {names[i] for i in decay} and "llm.layers.0.mlp.experts.gate_up_proj" in \
        {names[i] for i in decay}
    assert not {names[i] for i in decay | no_decay} & {n for n, p in module.model.named_parameters()
                                                         if not p.requires_grad}  # fmt: skip
    assert no_weight_decay(torch.nn.Module(), "pos_embed", torch.nn.Parameter(torch.zeros(1, 4, 8)))


def test_configure_model_is_idempotent_and_args_are_checked():
    module = MoEZooModule(arch="mm_tiny_cnn")
    module.configure_model()
    model = module.model
    module.configure_model()
    assert module.model is model
    with pytest.raises(ValueError, match="exactly one of arch"):
        MoEZooModule()
    with pytest.raises(ValueError, match="unknown stage 'pretrain'"):
        MoEZooModule(arch="mm_tiny_cnn", stage="pretrain")


def test_audio_and_video_models_have_their_parts():
    whisper, video = moezoo.create_model("mm_tiny_whisper"), moezoo.create_model("mm_tiny_video")
    parts = {**{f"w.{n}": v for n, v in parameter_parts(whisper).items()},
             **{f"v.{n}": v for n, v in parameter_parts(video).items()}}
    assert {n.split(".")[1]: part for n, (part, _) in parts.items()} == {
        "audio": "encoder", "vision": "encoder", "connectors": "connector", "llm": "llm"}
    counts = set_stage(whisper, "align", train_encoder=True)
    assert counts["trainable"] == sum(p.numel() for n, p in whisper.named_parameters() if not n.startswith("llm."))


def test_tower_layers_the_forward_never_reaches_stay_frozen():
    """Every trainable parameter gets a gradient (DDP rejects unused ones): the tiny CLIP's features
    come from layer -2, so its last layer, post-norm and SigLIP-style head never train."""
    module = MoEZooModule(arch="mm_tiny_clip", stage="finetune", train_encoder=True)
    module.configure_model()
    model = module.model
    trainable = {n for n, p in model.vision.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith(("vision_tower.embeddings.", "vision_tower.pre_layrnorm.",
                                           "vision_tower.encoder.layers.0.")) for n in trainable)
    inputs = model.processor(text="<image> what?", images=[torch.rand(3, 40, 40)])
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    assert {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None} == set()


@pytest.mark.parametrize("train_encoder", [False, True])
def test_a_frozen_encoder_keeps_its_batch_norm_statistics(image_batch, train_encoder):
    module = MoEZooModule(arch="mm_tiny_cnn", overrides={"vision": {"norm": "batch"}}, stage="finetune",
                          train_encoder=train_encoder)
    module.configure_model()
    stats = {n: b.clone() for n, b in module.model.vision.named_buffers() if "running_mean" in n}
    _one_step(module, image_batch)
    changed = any(not torch.equal(b, stats[n]) for n, b in module.model.vision.named_buffers() if n in stats)
    assert changed == train_encoder


def test_a_loaded_checkpoint_trains_in_train_mode(tmp_path, image_batch):
    """moezoo.load gives an eval-mode model; in training the MoE aux loss must count (it does in train mode only)."""
    path = moezoo.create_model("mm_tiny_cnn").save_pretrained(tmp_path / "ckpt")
    module = MoEZooModule(checkpoint=str(path), stage="finetune")
    module.configure_model()
    assert module.model.llm.training and module.model.connectors.training
    assert not module.model.vision.training  # frozen: its statistics and dropout stay fixed
    inputs = model_inputs(image_batch)
    out = module.model(**inputs)
    moe = module.model.llm.config.moe
    expected = causal_lm_loss(out.logits, inputs["labels"]) + moe.aux_loss_coef * out.aux_loss + moe.z_loss_coef * out.z_loss
    assert out.aux_loss > 0
    torch.testing.assert_close(out.loss, expected)


def test_the_processor_comes_from_the_spec_before_the_model_is_built():
    """What `moezoo fit` links to the data: the architecture's processor, overrides applied, with no model built."""
    overrides = {"image_connector": {"kind": "resampler", "num_queries": 3}}  # 3 image tokens instead of 4
    module = MoEZooModule(arch="mm_tiny_cnn", overrides=overrides)
    early = module.processor
    assert module.model is None and early.num_tokens == {"image": 3}
    module.configure_model()
    assert early.to_dict() == module.model.processor.to_dict() == module.processor.to_dict()
    text = MoEZooModule(arch="moe_lm_tiny")
    assert text.processor.modalities == [] and text.model is None
    assert text.tokenizer.encode("the zoo") == moezoo.create_model("moe_lm_tiny").tokenizer.encode("the zoo")


def test_a_checkpoints_processor_is_its_models(tmp_path):
    path = moezoo.create_model("mm_tiny_cnn").save_pretrained(tmp_path / "ckpt")
    module = MoEZooModule(checkpoint=str(path))
    assert module.processor.to_dict() == moezoo.load(path).processor.to_dict()


def test_the_schedule_needs_the_runs_length():
    from moezoo.train.optim import adamw_warmup_cosine

    with pytest.raises(ValueError, match="set Trainer\\(max_steps=...\\)"):
        adamw_warmup_cosine(torch.nn.Linear(2, 2), total_steps=float("inf"), lr=1e-3)


def test_init_from_grows_a_trained_model_keeping_its_weights(tmp_path):
    """Uni-MoE's start: an audio model built fresh takes the LLM of a saved image model (same names and
    shapes); its audio parts stay as built, and the image model's tower is left out."""
    image_model = moezoo.create_model("mm_tiny_cnn")
    path = image_model.save_pretrained(tmp_path / "image")
    torch.manual_seed(0)
    fresh = moezoo.create_model("mm_tiny_whisper").state_dict()
    module = MoEZooModule(arch="mm_tiny_whisper", init_from=str(path), stage="finetune")
    torch.manual_seed(0)  # the same draws build it
    module.configure_model()
    grown = module.model.state_dict()
    given = image_model.state_dict()
    llm = [k for k in grown if k.startswith("llm.")]
    assert llm and all(torch.equal(grown[k], given[k]) for k in llm)
    assert all(torch.equal(grown[k], fresh[k]) for k in grown if k.startswith("audio."))  # the seed builds these
    assert not any(k.startswith("vision.") for k in grown)


def test_init_from_needs_an_arch_of_the_same_layout(tmp_path):
    path = moezoo.create_model("mm_tiny_cnn").save_pretrained(tmp_path / "image")
    with pytest.raises(ValueError, match="warm-starts an arch; a checkpoint already starts from its weights"):
        MoEZooModule(checkpoint=str(path), init_from=str(path))
    wider = MoEZooModule(arch="mm_tiny_cnn", overrides={"llm": {"moe": {"expert_dim": 96}}}, init_from=str(path))
    clash = r"other shapes than this model's: llm\.\S+gate_up_proj \(4, 128, 64\) -> \(4, 192, 64\)"
    with pytest.raises(ValueError, match=clash):
        wider.configure_model()


def test_init_from_refuses_a_model_on_the_meta_device(tmp_path):
    """FSDP builds the model on the meta device: copied weights would vanish when it is materialised."""
    path = moezoo.create_model("mm_tiny_cnn").save_pretrained(tmp_path / "image")
    with pytest.raises(ValueError, match="on the meta device .* train from that dir with checkpoint=DIR"):
        warm_start(moezoo.create_model("mm_tiny_cnn", device="meta"), moezoo.load(path))
