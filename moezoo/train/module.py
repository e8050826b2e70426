"""``MoEZooModule``: the thin LightningModule that trains a moezoo model, stage by stage.

The stages are the progressive recipe of LLaVA (Liu et al. 2023), LibMoE (arXiv
2411.00918), MoE-LLaVA (arXiv 2401.15947) and Uni-MoE (arXiv 2405.11273):

* ``align``: only the connectors train, mapping frozen encoder features into the frozen LLM;
* ``finetune``: the connectors and the LLM train (visual instruction tuning);
* ``moe``: the model is first sparse-upcycled (Komatsuzaki et al. 2022, arXiv 2212.05055)
  with :func:`moezoo.upcycle` when its LLM has no MoE layer or ``upcycle`` settings are
  given (e.g. ``{"targets": ["connector"]}``); then the MoE layers (routers and experts,
  wherever they sit: the LLM, an ``moe`` connector, an upcycled encoder) train, and with
  ``train_rest`` the connectors and the LLM too.

``train_encoder`` adds the encoders to any stage (a trunk trained from scratch, as the
quickstart's CNN). Each stage sets ``requires_grad`` on every parameter, never relying
on defaults; a text-only :class:`~moezoo.models.lm.MoEForCausalLM` is all LLM. The loss
is the model's own; the optimiser is AdamW with linear warm-up and cosine decay.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from moezoo.moe import MoELayer
from moezoo.moe.mlp_experts import MoEMLP

STAGES = ("align", "finetune", "moe")
# Top-level submodules of a multimodal model -> the part they are.
PARTS = {"vision": "encoder", "audio": "encoder", "connectors": "connector", "llm": "llm"}


def parameter_parts(model: nn.Module) -> dict[str, tuple[str, bool]]:
    """Parameter name -> ``(part, in_moe)``: ``part`` is ``encoder``, ``connector`` or ``llm``
    (a text-only model is all ``llm``), ``in_moe`` whether it belongs to an MoE layer.

    Raises:
        ValueError: a multimodal model has a top-level part this module does not know.

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> from moezoo.moe import MoEConfig
        >>> lm = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32,
        ...                              moe=MoEConfig(dim=16, expert_dim=8, num_experts=2, top_k=1)))
        >>> parts = parameter_parts(lm)
        >>> parts["embed_tokens.weight"], parts["layers.0.mlp.router.weight"]
        (('llm', False), ('llm', True))
    """
    moe = {id(p) for m in model.modules() if isinstance(m, (MoELayer, MoEMLP)) for p in m.parameters()}
    multimodal = hasattr(model, "llm")
    out = {}
    for name, param in model.named_parameters():
        top = name.split(".", 1)[0]
        if multimodal and top not in PARTS:
            raise ValueError(f"parameter {name!r} is in an unknown part {top!r}; known parts: {sorted(PARTS)}")
        out[name] = (PARTS[top] if multimodal else "llm", id(param) in moe)
    return out


def set_stage(model: nn.Module, stage: str, train_encoder: bool = False, train_rest: bool = False) -> dict[str, int]:
    """Set ``requires_grad`` on every parameter of ``model`` for ``stage`` (see the module docstring).

    Returns:
        ``{"trainable": n, "total": N, "encoder": .., "connector": .., "llm": .., "moe": ..}``: trainable
        parameter counts by part (``moe`` counts MoE parameters again, whatever part holds them).

    Raises:
        ValueError: an unknown stage, or one that leaves nothing to train in this model.

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> lm = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
        >>> set_stage(lm, "finetune")["trainable"] == sum(p.numel() for p in lm.parameters())
        True
        >>> set_stage(lm, "align")
        Traceback (most recent call last):
        ...
        ValueError: stage 'align' trains connectors, which this model has none of
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    trained = {"align": {"connector"}, "finetune": {"connector", "llm"},
               "moe": {"connector", "llm"} if train_rest else set()}[stage]
    if train_encoder:
        trained = trained | {"encoder"}
    parts = parameter_parts(model)
    unused = {f"{top}.{name}" for top in ("vision", "audio") if getattr(model, top, None) is not None
              for name in getattr(model, top).unused_parameters()}  # never in the forward: no gradient
    counts = dict.fromkeys(("trainable", "total", "encoder", "connector", "llm", "moe"), 0)
    for name, param in model.named_parameters():
        part, in_moe = parts[name]
        train = (part in trained or (stage == "moe" and in_moe)) and name not in unused
        param.requires_grad_(train)
        counts["total"] += param.numel()
        if train:
            counts["trainable"] += param.numel()
            counts[part] += param.numel()
            counts["moe"] += param.numel() if in_moe else 0
    if not counts["trainable"]:
        what = {"align": "connectors", "finetune": "connectors or an LLM", "moe": "MoE layers"}[stage]
        raise ValueError(f"stage {stage!r} trains {what}, which this model has none of")
    return counts


class WarmupCosine:
    """The LR multiplier of step ``s``: linear warm-up, then cosine decay to ``min_lr_ratio``.

    ``(s + 1) / warmup_steps`` for ``s < warmup_steps`` (the first step already moves), then
    ``m + (1 - m) * (1 + cos(pi * p)) / 2`` with ``p = (s - warmup_steps) / (total_steps - warmup_steps)``
    capped at 1. A plain callable class, so ``LambdaLR.state_dict()`` holds only numbers.

    Example:
        >>> f = WarmupCosine(warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
        >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10, 20)]
        [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float):
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def no_weight_decay(module: nn.Module, name: str, param: nn.Parameter) -> bool:
    """Whether ``module``'s own parameter ``name`` is exempt from weight decay: biases, norms
    (every 1-d parameter), embedding tables, and learned position / class tokens.

    Example:
        >>> linear, table = nn.Linear(2, 2), nn.Embedding(3, 2)
        >>> [no_weight_decay(m, n, p) for m in (linear, table) for n, p in m.named_parameters()]
        [False, True, True]
    """
    if param.ndim < 2 or name.endswith("bias") or isinstance(module, nn.Embedding):
        return True
    # Parameters held directly (not a layer's weight) named like ViT's pos_embed / cls_token / CLIP's class_embedding.
    return not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and ("embed" in name or "token" in name)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters: with and without weight decay."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if no_weight_decay(module, name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def model_inputs(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The tensors of a :class:`~moezoo.train.datamodule.ShardDataModule` batch (``keys`` / ``meta`` dropped)."""
    return {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}


class MoEZooModule(pl.LightningModule):
    """Trains a moezoo model (multimodal or text-only) in one of the stages of the module docstring.

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
        lr / weight_decay / betas / eps: AdamW's (no decay on biases, norms and embeddings).
        warmup_steps: linear warm-up steps; then cosine decay over ``trainer.estimated_stepping_batches``.
        min_lr_ratio: the final LR as a fraction of ``lr``.
        data_parallel: the FSDP2 data-parallel size (``None``: every process). Parallelism is
            applied in :meth:`configure_model` (:func:`moezoo.parallel.parallelize`) under
            Lightning's ``ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)``, or,
            outside a Trainer, when several processes run and this or ``expert_parallel`` is set.
            The LM loss is then normalised by the global count of label tokens and the router losses
            use statistics summed over the ranks, so N processes train as one on the global batch.
        expert_parallel: experts sharded over this many of the data-parallel ranks (must divide them).
        compile: ``torch.compile`` each transformer block (one process too).
        activation_checkpointing: recompute each transformer block in backward.

    Example:
        >>> module = MoEZooModule(arch="mm_tiny_cnn", stage="align")
        >>> module.configure_model()
        >>> module.trainable["trainable"] == sum(p.numel() for p in module.model.connectors.parameters())
        True
    """

    def __init__(self, arch: str | None = None, checkpoint: str | None = None, overrides: dict[str, Any] | None = None,
                 stage: str = "finetune", train_encoder: bool = False, train_rest: bool = False,
                 upcycle: dict[str, Any] | None = None, lr: float = 1e-3, weight_decay: float = 0.0,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, warmup_steps: int = 0,
                 min_lr_ratio: float = 0.1, data_parallel: int | None = None, expert_parallel: int = 1,
                 compile: bool = False, activation_checkpointing: bool = False):
        super().__init__()
        if (arch is None) == (checkpoint is None):
            raise ValueError(f"give exactly one of arch (a registered architecture) and checkpoint (a model dir); "
                             f"got arch={arch!r}, checkpoint={checkpoint!r}")
        if checkpoint is not None and overrides:
            raise ValueError(f"overrides {sorted(overrides)} apply to an arch; a checkpoint's architecture is fixed")
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
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
        Lightning again when loading a checkpoint. A model built before the processes started
        (by reading :attr:`processor`, say) is parallelised by the strategy's later call.
        """
        if self.model is None:
            self._build()
        self.parallelize()

    def _build(self) -> None:
        hp = self.hparams
        import moezoo

        if hp.arch is not None:  # on the device context the strategy set, the meta device for FSDP
            model = moezoo.create_model(hp.arch, device=torch.get_default_device(), **(hp.overrides or {}))
        else:
            model = moezoo.load(hp.checkpoint)
        if hp.stage == "moe" and (hp.upcycle or not getattr(model, "llm", model).config.sparse_layers()):
            model = self._upcycled(model)
        self.model = model
        self.trainable = set_stage(model, hp.stage, hp.train_encoder, hp.train_rest)
        self.train()  # a loaded model comes in eval mode; Lightning's fit loop does not switch modes itself
        n, total = self.trainable["trainable"], self.trainable["total"]
        parts = ", ".join(f"{k} {v:,}" for k, v in self.trainable.items() if k not in ("trainable", "total") and v)
        rank_zero_info(f"moezoo stage {hp.stage!r}: {n:,} of {total:,} parameters train ({100 * n / total:.1f}%: {parts})")

    def _parallel_mesh(self) -> Any:
        """The ``moezoo.parallel`` mesh of this run, or ``None`` for one process.

        Raises:
            ValueError: several processes under a strategy that shards nothing itself (DDP) with
                ``data_parallel`` / ``expert_parallel`` set, or a tensor-parallel Lightning mesh.
        """
        import torch.distributed as dist

        from moezoo.parallel import build_mesh

        hp = self.hparams
        lightning_mesh = self.device_mesh  # set by ModelParallelStrategy before it calls configure_model
        if lightning_mesh is not None:
            names = lightning_mesh.mesh_dim_names or ()
            if "tensor_parallel" in names and lightning_mesh["tensor_parallel"].size() > 1:
                raise ValueError("moezoo shards over data (and expert) parallelism only: use "
                                 "ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)")
            dp = lightning_mesh["data_parallel"].size() if "data_parallel" in names else lightning_mesh.size()
            if hp.data_parallel is not None and hp.data_parallel != dp:
                raise ValueError(f"data_parallel={hp.data_parallel} but the strategy's mesh has data_parallel_size={dp}")
            return build_mesh(dp, hp.expert_parallel, lightning_mesh.device_type) if dp > 1 else None
        wants = hp.data_parallel is not None or hp.expert_parallel > 1
        if not (wants and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            if hp.expert_parallel > 1 and self._trainer is not None:  # without a Trainer: wait for the processes
                raise ValueError(f"expert_parallel={hp.expert_parallel} needs several processes under "
                                 f"ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1)")
            return None
        if self._trainer is not None:
            raise ValueError(f"data_parallel / expert_parallel are applied by moezoo in configure_model: run them "
                             f"under ModelParallelStrategy(data_parallel_size=N, tensor_parallel_size=1), not "
                             f"{type(self.trainer.strategy).__name__}")
        return build_mesh(hp.data_parallel, hp.expert_parallel)

    def parallelize(self) -> None:
        """Apply :func:`moezoo.parallel.parallelize` once, when there is something to apply."""
        hp = self.hparams
        if self.parallelized or self.model is None:
            return
        mesh = self._parallel_mesh()
        if mesh is None and not (hp.compile or hp.activation_checkpointing):
            return
        from moezoo.parallel import parallelize

        parallelize(self.model, ep=hp.expert_parallel, compile=hp.compile,
                    activation_checkpointing=hp.activation_checkpointing, mesh=mesh)
        self.parallelized = True

    def _upcycled(self, model: nn.Module) -> nn.Module:
        from moezoo.models.upcycle import upcycle

        out = upcycle(model, **(self.hparams.upcycle or {}))
        for name in ("processor", "tokenizer"):  # what feeds the model stays with it
            if getattr(out, name, None) is None and getattr(model, name, None) is not None:
                setattr(out, name, getattr(model, name))
        return out

    def train(self, mode: bool = True) -> MoEZooModule:
        """Train mode, except for frozen encoders: they stay in eval mode, so their batch-norm
        statistics (a CNN trunk's) and dropout do not change while their weights do not train."""
        super().train(mode)
        for top in ("vision", "audio"):
            encoder = getattr(self.model, top, None) if self.model is not None else None
            if mode and encoder is not None and not any(p.requires_grad for p in encoder.parameters()):
                encoder.eval()
        return self

    @property
    def processor(self) -> Any:
        """The model's processor (``None`` for a text-only model): what a datamodule takes."""
        self.configure_model()
        return getattr(self.model, "processor", None)

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        self.configure_model()
        return self.model.tokenizer

    def save_pretrained(self, path: str | Path, **kwargs: Any) -> Path:
        """Save the model as a loadable model dir (``model.save_pretrained``; ``format="hf"`` too).

        With :meth:`load_from_checkpoint` this turns a Lightning checkpoint into a model dir. A
        model sharded over several processes (FSDP2, expert parallelism) is gathered first: every
        rank must call this, and rank 0 writes a single-process model dir.
        """
        self.configure_model()
        if not self._sharded():
            return self.model.save_pretrained(path, **kwargs)
        import torch.distributed as dist

        from moezoo.parallel import full_state_dict

        state = full_state_dict(self.model)  # collective
        if dist.get_rank() == 0:
            plain = MoEZooModule(**{**self.hparams, "data_parallel": None, "expert_parallel": 1, "compile": False,
                                    "activation_checkpointing": False})
            plain._build()
            plain.model.load_state_dict(state)
            plain.model.save_pretrained(path, **kwargs)
        dist.barrier()
        return Path(path)

    def _sharded(self) -> bool:
        from torch.distributed.tensor import DTensor

        return any(isinstance(p, DTensor) for p in self.model.parameters())

    # -- steps -----------------------------------------------------------------------------------------
    def forward(self, **inputs: torch.Tensor) -> Any:
        return self.model(**inputs)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        inputs = model_inputs(batch)
        out = self.model(**inputs, labelled_logits=True)  # the LM head on the answer positions only
        metrics = {"train/lm_loss": out.lm_loss.detach()}
        metrics.update(self._router_metrics(out))
        self.log_dict(metrics, on_step=True, on_epoch=False, batch_size=inputs["input_ids"].shape[0])
        self.log("train/loss", out.loss.detach(), prog_bar=True, on_step=True, on_epoch=False,
                 batch_size=inputs["input_ids"].shape[0])
        return out.loss

    def _router_metrics(self, out: Any) -> dict[str, torch.Tensor]:
        """Aux and z losses, and per MoE layer the max load (the busiest expert's share x E; 1 is
        balanced) and the router entropy (normalised by log E), in the LLM and at the other MoE sites."""
        metrics = {}
        if out.aux_loss is not None:
            metrics["train/aux_loss"], metrics["train/z_loss"] = out.aux_loss.detach(), out.z_loss.detach()
        llm = getattr(self.model, "llm", self.model)
        for layer, stats in zip(llm.config.sparse_layers(), out.router_stats):
            metrics.update(_load_metrics(f"router/layer{layer}", stats))
        for name, (aux, z) in getattr(out, "site_losses", {}).items():
            metrics[f"site/{name}/aux_loss"], metrics[f"site/{name}/z_loss"] = aux.detach(), z.detach()
        for name, module in self.model.named_modules():
            if isinstance(module, MoEMLP) and module.last_output is not None:
                metrics.update(_load_metrics(f"router/{name}", module.last_output.stats))
        return metrics

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
        """Store the random states (noisy routers and sampling draw from them) so a resumed run is exact.

        Plain tensors and ints: the checkpoint still loads with ``weights_only=True``.
        """
        import random

        version, state, gauss = random.getstate()
        checkpoint["moezoo_rng"] = {"torch": torch.get_rng_state(), "python": [version, list(state), gauss]}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        import random

        rng = checkpoint.get("moezoo_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            version, state, gauss = rng["python"]
            random.setstate((version, tuple(state), gauss))

    def on_train_start(self) -> None:
        for logger in self.loggers:  # once, at the start: they do not change within a stage
            logger.log_metrics({"params/trainable": float(self.trainable["trainable"]),
                                "params/total": float(self.trainable["total"])}, step=self.global_step)

    # -- optimiser -------------------------------------------------------------------------------------
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        total = self.trainer.estimated_stepping_batches
        if not math.isfinite(total):
            raise ValueError("the LR schedule needs the run's length: set Trainer(max_steps=...) (a resampled "
                             "dataset has no length)")
        optimizer = torch.optim.AdamW(param_groups(self.model, hp.weight_decay), lr=hp.lr, betas=tuple(hp.betas),
                                      eps=hp.eps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(hp.warmup_steps, int(total),
                                                                             hp.min_lr_ratio))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}


def _load_metrics(prefix: str, stats: Any) -> dict[str, torch.Tensor]:
    counts = stats.tokens_per_expert.float()
    return {f"{prefix}/max_load": counts.max() / counts.sum().clamp_min(1) * counts.numel(),
            f"{prefix}/entropy": stats.router_entropy}
