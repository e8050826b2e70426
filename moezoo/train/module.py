"""``MoEZooModule``: the thin LightningModule that trains a moezoo model, stage by stage.

It holds plain settings and hands each concern to the module that owns it: which parameters
train and when the model is upcycled to :mod:`moezoo.train.stages`, the optimiser and LR
schedule to :mod:`moezoo.train.optim`, the mesh and the sharded save to :mod:`moezoo.parallel`,
and the processor the data takes to :mod:`moezoo.train.processors`. It knows a model only
through its protocol (:class:`~moezoo.models.base.ZooModel`), so every registered family trains
here unchanged. The loss is the model's own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from moezoo.parallel import is_sharded, negotiate_mesh, parallelize, save_gathered
from moezoo.train import stages
from moezoo.train.optim import adamw_warmup_cosine
from moezoo.train.processors import architecture_processor, model_processor
from moezoo.train.rng import restore_rng_state, rng_state


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a :class:`~moezoo.train.datamodule.ShardDataModule` batch (``keys`` / ``meta`` dropped)."""
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


class MoEZooModule(pl.LightningModule):
    """Trains a moezoo model of any registered family in one of the stages of :mod:`moezoo.train.stages`.

    Every argument is a plain value, so a LightningCLI ``model:`` section describes it and its
    checkpoints load with ``torch.load(weights_only=True)``.

    Args:
        arch: a registered architecture (``moezoo.list_models()``) to build untrained, or
        checkpoint: a model dir to start from (:func:`moezoo.load`: moezoo or transformers format).
        overrides: config fields changed when building ``arch`` (nested ones as dicts).
        stage: ``"align"``, ``"finetune"`` or ``"moe"``.
        train_encoder: the encoders train too (in any stage).
        train_rest: in the ``moe`` stage, the connectors and the LLM train besides the MoE layers.
        upcycle: :func:`moezoo.upcycle` arguments (``num_experts``, ``top_k``, ``router``, ``targets``,
            ...). In the ``moe`` stage the model is upcycled when these are given or its LLM has no
            MoE layer (then with :func:`moezoo.upcycle`'s defaults). Keep them when resuming: a
            Lightning checkpoint of the stage reloads onto the layout they make.
        init_from: with ``arch``, a model dir or pretrained name whose weights of the same name and
            shape start the model (:func:`~moezoo.train.stages.warm_start`); the rest is built fresh.
            A recipe that grows a trained model (an image model gains audio) starts this way.
        lr / weight_decay / betas / eps: AdamW's (no decay on biases, norms and embeddings).
        warmup_steps: linear warm-up steps; then cosine decay over ``trainer.estimated_stepping_batches``.
        min_lr_ratio: the final LR as a fraction of ``lr``.
        data_parallel: the FSDP2 data-parallel size (``None``: every process). Parallelism is
            applied in :meth:`configure_model` (:func:`moezoo.parallel.parallelize`) under
            Lightning's ``ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)``, or,
            outside a Trainer, when several processes run and this or ``expert_parallel`` is set
            (:func:`moezoo.parallel.negotiate_mesh`). The LM loss is then normalised by the global
            count of label tokens and the router losses use statistics summed over the ranks, so N
            processes train as one on the global batch.
        expert_parallel: experts sharded over this many of the data-parallel ranks (must divide them).
        compile: ``torch.compile`` each transformer block (one process too).
        activation_checkpointing: recompute each transformer block in backward.

    Example:
        >>> module = MoEZooModule(arch="mm_tiny_cnn", stage="align")
        >>> module.processor.num_tokens  # from the architecture's spec: the model is not built yet
        {'image': 4}
        >>> module.configure_model()
        >>> module.trainable["trainable"] == sum(p.numel() for p in module.model.connectors.parameters())
        True
    """

    def __init__(self, arch: str | None = None, checkpoint: str | None = None, overrides: dict[str, Any] | None = None,
                 stage: str = "finetune", train_encoder: bool = False, train_rest: bool = False,
                 upcycle: dict[str, Any] | None = None, init_from: str | None = None,
                 lr: float = 1e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, warmup_steps: int = 0,
                 min_lr_ratio: float = 0.1, data_parallel: int | None = None, expert_parallel: int = 1,
                 compile: bool = False, activation_checkpointing: bool = False):
        super().__init__()
        if (arch is None) == (checkpoint is None):
            raise ValueError(f"give exactly one of arch (a registered architecture) and checkpoint (a model dir); "
                             f"got arch={arch!r}, checkpoint={checkpoint!r}")
        if init_from is not None and arch is None:
            raise ValueError(f"init_from={init_from!r} warm-starts an arch; a checkpoint already starts from its "
                             "weights")
        if checkpoint is not None and overrides:
            raise ValueError(f"overrides {sorted(overrides)} apply to an arch; a checkpoint's architecture is fixed")
        stages.check_stage(stage)
        if warmup_steps < 0 or not 0.0 <= min_lr_ratio <= 1.0 or lr <= 0:
            raise ValueError(f"expected lr > 0, warmup_steps >= 0 and 0 <= min_lr_ratio <= 1, got lr={lr}, "
                             f"warmup_steps={warmup_steps}, min_lr_ratio={min_lr_ratio}")
        if (data_parallel is not None and data_parallel < 1) or expert_parallel < 1:
            raise ValueError(f"expected data_parallel >= 1 (or None) and expert_parallel >= 1, got "
                             f"data_parallel={data_parallel}, expert_parallel={expert_parallel}")
        self.save_hyperparameters()
        self.model: nn.Module | None = None
        self.parallelized = False
        self.trainable: dict[str, int] = {}

    # -- the model -------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        """Build (or load) the model, upcycle it for the ``moe`` stage, set the stage, and apply
        parallelism and compilation (:meth:`parallelize`).

        Idempotent: the model is built once and parallelised once, so a strategy may call it, and
        Lightning again when loading a checkpoint. A model built before the processes started is
        parallelised by the strategy's later call.
        """
        if self.model is None:
            self._build()
        self.parallelize()

    def _build(self) -> None:
        hp = self.hparams
        import moezoo

        if hp.arch is not None:  # on the device context the strategy set, the meta device for FSDP
            model = moezoo.create_model(hp.arch, device=torch.get_default_device(), **(hp.overrides or {}))
            if hp.init_from is not None:
                report = stages.warm_start(model, moezoo.load(hp.init_from))
                rank_zero_info(f"moezoo: warm start from {hp.init_from}: {len(report['copied'])} tensors copied, "
                               f"{len(report['fresh'])} fresh ({stages.prefixes(report['fresh'])}), "
                               f"{len(report['unused'])} of the source unused")
        else:
            model = moezoo.load(hp.checkpoint)
        self.model = stages.upcycle_for_stage(model, hp.stage, hp.upcycle)
        self.trainable = stages.set_stage(self.model, hp.stage, hp.train_encoder, hp.train_rest)
        self.train()  # a loaded model comes in eval mode; Lightning's fit loop does not switch modes itself
        rank_zero_info(stages.describe(hp.stage, self.trainable))

    def parallelize(self) -> None:
        """Apply :func:`moezoo.parallel.parallelize` once, over :func:`moezoo.parallel.negotiate_mesh`'s mesh,
        when there is something to apply."""
        hp = self.hparams
        if self.parallelized or self.model is None:
            return
        strategy = type(self.trainer.strategy).__name__ if self._trainer is not None else None
        mesh = negotiate_mesh(self.device_mesh, hp.data_parallel, hp.expert_parallel, strategy)
        if mesh is None and not (hp.compile or hp.activation_checkpointing):
            return
        parallelize(self.model, ep=hp.expert_parallel, compile=hp.compile,
                    activation_checkpointing=hp.activation_checkpointing, mesh=mesh)
        self.parallelized = True

    def train(self, mode: bool = True) -> MoEZooModule:
        """Train mode, except for frozen encoders (:func:`~moezoo.train.stages.keep_frozen_encoders_in_eval`)."""
        super().train(mode)
        if mode and self.model is not None:
            stages.keep_frozen_encoders_in_eval(self.model)
        return self

    @property
    def processor(self) -> Any:
        """The :class:`~moezoo.processing.processor.Processor` that feeds the model (the tokenizer's alone
        for a text model): what ``moezoo fit`` links to the datamodule. For an ``arch`` not built yet it
        comes from the architecture's spec, without building the model; a checkpoint's from its model."""
        if self.model is None and self.hparams.arch is not None:
            return architecture_processor(self.hparams.arch, self.hparams.overrides)
        self.configure_model()
        return model_processor(self.model)

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        return self.processor.tokenizer

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> Path:
        """Save the model as a loadable model dir (``model.save_pretrained``; ``format="hf"`` too).

        With :meth:`load_from_checkpoint` this turns a Lightning checkpoint into a model dir. A
        model sharded over several processes (FSDP2, expert parallelism) is gathered first
        (:func:`moezoo.parallel.save_gathered`): every rank must call this, and rank 0 writes a
        single-process model dir.
        """
        self.configure_model()
        if not is_sharded(self.model):
            return self.model.save_pretrained(path, **kwargs)
        return save_gathered(self.model, path, self._plain_model, **kwargs)

    def _plain_model(self) -> nn.Module:
        """A fresh model of these settings on one process (the sharded save's template)."""
        plain = MoEZooModule(**{**self.hparams, "data_parallel": None, "expert_parallel": 1, "compile": False,
                                "activation_checkpointing": False})
        plain._build()
        return plain.model

    # -- steps -----------------------------------------------------------------------------------------
    def forward(self, **inputs: torch.Tensor) -> Any:
        return self.model(**inputs)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        inputs = model_inputs(batch)
        out = self.model(**inputs, labelled_logits=True)  # the LM head on the answer positions only
        size = inputs["input_ids"].shape[0]
        metrics = {"train/lm_loss": out.lm_loss.detach(), **router_metrics(self.model, out)}
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=size)
        self.log("train/loss", out.loss.detach(), prog_bar=True, on_step=True, on_epoch=False, batch_size=size)
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._eval_step("val", batch)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        return self._eval_step("test", batch)

    def _eval_step(self, split: str, batch: dict[str, Any]) -> torch.Tensor:
        inputs = model_inputs(batch)
        loss = self.model(**inputs).loss  # in eval mode the LM loss alone
        self.log(f"{split}/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=inputs["input_ids"].shape[0])
        return loss

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["moezoo_rng"] = rng_state()  # noisy routers and sampling draw from it: a resumed run is exact

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_rng_state(checkpoint.get("moezoo_rng"))

    def on_train_start(self) -> None:
        for logger in self.loggers:  # once, at the start: they do not change within a stage
            logger.log_metrics({"params/trainable": float(self.trainable["trainable"]),
                                "params/total": float(self.trainable["total"])}, step=self.global_step)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        return adamw_warmup_cosine(self.model, self.trainer.estimated_stepping_batches, lr=hp.lr,
                                   weight_decay=hp.weight_decay, betas=hp.betas, eps=hp.eps,
                                   warmup_steps=hp.warmup_steps, min_lr_ratio=hp.min_lr_ratio)


def router_metrics(model: nn.Module, out: Any) -> dict[str, torch.Tensor]:
    """Aux and z losses, and per MoE layer the max load (the busiest expert's share x E; 1 is
    balanced) and the router entropy (normalised by log E), in the LLM and at the other MoE sites
    (read from the output; a site that ran in several passes, say images and video frames, has
    its losses summed and its statistics taken over all its tokens)."""
    metrics = {}
    if out.aux_loss is not None:
        metrics["train/aux_loss"], metrics["train/z_loss"] = out.aux_loss.detach(), out.z_loss.detach()
    for layer, stats in zip(model.language_model.config.sparse_layers(), out.router_stats):
        metrics.update(_load_metrics(f"router/layer{layer}", stats))
    for name, (aux, z) in getattr(out, "site_losses", {}).items():
        metrics[f"site/{name}/aux_loss"], metrics[f"site/{name}/z_loss"] = aux.detach(), z.detach()
    for name, stats in getattr(out, "site_stats", {}).items():  # each site over all its passes
        metrics.update(_load_metrics(f"router/{name}", stats))
    return metrics


def _load_metrics(prefix: str, stats: Any) -> dict[str, torch.Tensor]:
    counts = stats.tokens_per_expert.float()
    return {f"{prefix}/max_load": counts.max() / counts.sum().clamp_min(1) * counts.numel(),
            f"{prefix}/entropy": stats.router_entropy}
