"""Expert-load heatmaps and router-entropy curves during training.

The expert-selection analysis of LibMoE (arXiv 2411.00918: router entropy, expert
distributions) and of *Evaluating Expert Contributions in a MoE LLM* (arXiv 2502.17187:
activation frequency per expert and layer), followed as it evolves over training rather
than once at the end. :class:`ExpertLoadLogger` reads every MoE site's routing from the
outputs, through forward hooks, so it needs nothing from the LightningModule: each
:class:`~moezoo.moe.MoELayer` of the LLM returns its :class:`~moezoo.moe.MoEOutput`, and the
model's output carries the calls of the :class:`~moezoo.moe.mlp_experts.MoEMLP` sites of its
connectors and upcycled encoders (``site_outputs``, one record per pass: a tower that encodes
images and then video frames counts both).

At each validation pass it also follows how the routing *changes* and how the *modalities*
spread: the switch rate of the same validation tokens between one pass and the next, per
site, by each of :func:`~moezoo.analysis.switch.switch_rate`'s three definitions (LibMoE's
ordered and per-slot rates, OLMoE's set-based router saturation), and each modality's share
of every expert's top-k assignments (MoE-LLaVA, arXiv 2401.15947; Uni-MoE).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from moezoo.analysis.figures import plot_curves, plot_expert_load
from moezoo.analysis.routing import chosen_experts
from moezoo.analysis.switch import SWITCH_RATES, switch_rate
from moezoo.models.base import ZooModel
from moezoo.moe import MoELayer, MoEOutput
from moezoo.moe.mlp_experts import MoEMLP
from moezoo.processing.tokens import MODALITY_NAMES
from moezoo.utils.io import atomic_write_bytes

__all__ = ["ExpertLoadLogger", "load_fractions", "plot_expert_load", "site_label"]

# "layers.3.mlp" (a text LM) or "llm.layers.3.mlp" (a multimodal model's LLM) -> "layer3".
_LLM_LAYER = re.compile(r"^(?:llm\.)?layers\.(\d+)\.mlp$")


def site_label(name: str) -> str:
    """The label of the MoE site at module path ``name``: ``layer{i}`` for the LLM's layer ``i``
    (as the module's ``router/layer{i}/...`` metrics), else the module path itself.

    Example:
        >>> site_label("llm.layers.3.mlp"), site_label("layers.0.mlp"), site_label("connectors.image.mlp")
        ('layer3', 'layer0', 'connectors.image.mlp')
    """
    name = name.replace("_orig_mod.", "").replace("_checkpoint_wrapped_module.", "")  # wrappers' names
    match = _LLM_LAYER.match(name)
    return f"layer{match.group(1)}" if match else name


def load_fractions(counts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per site, each expert's share of the top-k assignments (``NaN`` where a site saw no token).

    Example:
        >>> load_fractions({"layer0": torch.tensor([3, 1]), "layer1": torch.tensor([0, 0])})
        {'layer0': tensor([0.7500, 0.2500]), 'layer1': tensor([nan, nan])}
    """
    return {k: v.double().div(v.sum()).float() if v.sum() > 0 else torch.full(v.shape, float("nan"))
            for k, v in counts.items()}


class ExpertLoadLogger(Callback):
    """Every ``every_n_steps`` optimiser steps, log the expert load and router entropy of each MoE site.

    Between two logs, the assignments each expert received in the training forwards (every
    micro-batch, on every rank: the counts are summed over processes before logging) are
    accumulated per site. At a log step rank 0

    * draws the heatmap of the window's load (rows: MoE sites, columns: experts, value: the
      expert's share of the site's top-k assignments, so each row sums to 1), saves it as
      ``{default_root_dir}/expert_load/step{N}.png`` and hands it to each ``WandbLogger``
      (``log_image(key=key, ...)``);
    * logs ``router/entropy/{site}`` (``layer{i}`` for the LLM's layer ``i``): the mean router
      entropy over the window's tokens, normalised by ``log E`` (1 uniform, 0 one-hot).

    The sites are read by forward hooks, registered at ``on_fit_start``: on each ``MoELayer``,
    whose output is its routing, and on each child of the LightningModule that holds
    ``MoEMLP`` sites (``MoEZooModule.model``), whose output's ``site_outputs`` hold every call of
    them. Counts are taken only between ``on_train_batch_start`` and ``on_before_backward``, so
    validation forwards and the recomputation of activation checkpointing are not counted.

    Args:
        every_n_steps: the window, in optimiser steps.
        key: the W&B image key.

    Attributes:
        last_counts / last_load / last_entropy: per site, the last logged window's assignment
            counts ``(E,)``, their shares ``(E,)`` and the normalised entropy (a float).

    Example:
        >>> ExpertLoadLogger(every_n_steps=10).every_n_steps
        10
    """

    def __init__(self, every_n_steps: int = 50, key: str = "router/expert_load", switch_tokens: int = 65536):
        if every_n_steps < 1:
            raise ValueError(f"expected every_n_steps >= 1, got {every_n_steps}")
        if switch_tokens < 1:
            raise ValueError(f"expected switch_tokens >= 1, got {switch_tokens}")
        self.every_n_steps, self.key, self.switch_tokens = every_n_steps, key, switch_tokens
        self._handles: list[Any] = []
        self._counts: dict[str, torch.Tensor] = {}  # site -> (E,) int64, this window
        self._entropy: dict[str, torch.Tensor] = {}  # site -> (2,) float64: sum of entropy x tokens, tokens
        self._armed = False
        self._last_step = -1
        self.last_counts: dict[str, torch.Tensor] = {}
        self.last_load: dict[str, torch.Tensor] = {}
        self.last_entropy: dict[str, float] = {}
        self._llm_labels: list[str] = []  # the LLM MoE layers' labels, in the order of output.routings
        self._val_armed = False
        self._val_mask: torch.Tensor | None = None  # the batch's attention mask (a text LM's output has none)
        self._val_routes: dict[str, list[torch.Tensor]] = {}  # site -> this pass's (n, k) routes
        self._val_modality: dict[str, torch.Tensor] = {}  # site -> (modalities, E) int64 assignments
        self._prev_routes: dict[str, torch.Tensor] = {}
        self.last_switch: dict[str, dict[str, float]] = {}
        self.switch_history: dict[str, dict[str, dict[int, float]]] = {how: {} for how in SWITCH_RATES}
        self.last_modality_shares: dict[str, dict[str, torch.Tensor]] = {}

    # -- collecting ------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self._remove_hooks()
        self._counts, self._entropy, self._last_step = {}, {}, -1
        self._llm_labels, self._prev_routes = [], {}
        for name, module in pl_module.named_modules():
            if isinstance(module, (MoELayer, MoEMLP)):
                label = site_label(name.removeprefix("model."))
                # Every site gets its buffers now, so every rank reduces tensors of the same shapes,
                # also when a site did not run on some rank (a batch without audio, say).
                self._counts[label] = torch.zeros(module.config.num_experts, dtype=torch.int64,
                                                  device=pl_module.device)
                self._entropy[label] = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
                self._val_modality[label] = torch.zeros(len(MODALITY_NAMES), module.config.num_experts,
                                                        dtype=torch.int64, device=pl_module.device)
                if isinstance(module, MoELayer):
                    self._llm_labels.append(label)
                    self._handles.append(module.register_forward_hook(self._layer_hook(label)))
        for child_name, child in pl_module.named_children():  # the model: its output carries the MoEMLP calls
            if any(isinstance(m, MoEMLP) for m in child.modules()):
                self._handles.append(child.register_forward_hook(self._sites_hook(child_name)))
            if isinstance(child, ZooModel):  # validation: the whole output (routings, modality ids, site calls)
                self._handles.append(child.register_forward_hook(self._val_hook(child_name)))
        if not self._counts:
            rank_zero_warn("ExpertLoadLogger: the model has no MoE layer (MoELayer / MoEMLP); nothing to log")

    def _layer_hook(self, label: str):
        def hook(module: nn.Module, args: Any, output: MoEOutput) -> None:
            if self._armed:
                self._add(label, output)
        return hook

    def _sites_hook(self, child_name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._armed:
                return
            for record in getattr(output, "site_outputs", ()):
                label = site_label(f"{child_name}.{record.site}".removeprefix("model."))
                if label not in self._counts:
                    raise RuntimeError(f"ExpertLoadLogger: the output reports MoE site {record.site!r}, which is "
                                       f"not among the sites found at fit start ({sorted(self._counts)}); the "
                                       f"model's modules changed after on_fit_start")
                self._add(label, record.output)
        return hook

    def _add(self, label: str, out: MoEOutput) -> None:
        stats = out.stats  # cached on the output: the module's own metrics reuse it
        tokens = out.routing.probs.shape[0]
        self._counts[label] += stats.tokens_per_expert.detach().to(self._counts[label])
        entropy = self._entropy[label]  # device-side sums: no host sync per step
        entropy[0] += stats.router_entropy.detach().double() * tokens
        entropy[1] += tokens

    # -- validation passes: switch rate and modality shares ----------------------------------------------
    def _val_hook(self, child_name: str):
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            if not self._val_armed:
                return
            modality_BT = getattr(output, "modality_ids", None)
            if modality_BT is None and self._val_mask is not None:  # a text LM: text, or padding
                modality_BT = torch.where(self._val_mask.bool(), 0, -1)
            routings = getattr(output, "routings", None) or []
            for label, routing in zip(self._llm_labels, routings):
                self._add_val(label, routing, None if modality_BT is None else modality_BT.reshape(-1))
            for record in getattr(output, "site_outputs", ()):
                label = site_label(f"{child_name}.{record.site}".removeprefix("model."))
                rows = record.output.routing.probs.shape[0]
                modality = MODALITY_NAMES.index(record.modality) if record.modality in MODALITY_NAMES else 0
                self._add_val(label, record.output.routing, torch.full((rows,), modality))
        return hook

    @torch.no_grad()
    def _add_val(self, label: str, routing: Any, modality_N: torch.Tensor | None) -> None:
        """One forward's routing at a site: its routes (for the switch rate) and its assignments by modality."""
        if label not in self._val_modality:
            return
        rows = routing.probs.shape[0]
        chosen = chosen_experts(routing)  # (rows, k) ids in rank order, or (rows, E) bools for expert choice
        modality = torch.zeros(rows, dtype=torch.long, device=chosen.device)
        if modality_N is not None and modality_N.numel() and rows % modality_N.numel() == 0:
            modality = modality_N.to(chosen.device).repeat_interleave(rows // modality_N.numel())  # MH-MoE
        keep = modality >= 0
        counts = self._val_modality[label]
        num_experts = counts.shape[1]
        for m in range(len(MODALITY_NAMES)):
            rows_m = chosen[keep & (modality == m)]
            if rows_m.numel():
                member = rows_m.sum(0) if rows_m.dtype == torch.bool else torch.zeros(
                    num_experts, dtype=torch.int64, device=rows_m.device).scatter_add_(
                    0, rows_m.reshape(-1), torch.ones(rows_m.numel(), dtype=torch.int64, device=rows_m.device))
                counts[m] += member.to(counts)
        if chosen.dtype != torch.bool:
            routes = self._val_routes.setdefault(label, [])
            room = self.switch_tokens - sum(len(r) for r in routes)
            if room > 0:
                routes.append(chosen[keep][:room].to(torch.int32).cpu())

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._val_armed = not trainer.sanity_checking
        self._val_mask = batch.get("attention_mask") if isinstance(batch, dict) else None

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._val_armed, self._val_mask = False, None

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self._val_modality:
            return
        step = trainer.global_step
        labels = list(self._val_modality)
        routes = {k: torch.cat(v) for k, v in self._val_routes.items() if v}
        self._val_routes = {}
        # Per site and definition: (sum of per-token switches, tokens) on this rank, summed over ranks.
        sums = torch.zeros(len(labels), len(SWITCH_RATES), 2, dtype=torch.float64)
        mismatched = []
        for i, label in enumerate(labels):
            now, before = routes.get(label), self._prev_routes.get(label)
            if now is None or before is None or not len(now):
                continue
            if now.shape != before.shape:
                mismatched.append(label)
                continue
            for j, how in enumerate(SWITCH_RATES):
                sums[i, j] = torch.tensor([switch_rate(before, now, how) * len(now), float(len(now))])
        self._prev_routes = routes
        if mismatched:
            rank_zero_warn(f"ExpertLoadLogger: this validation pass routed a different number of tokens than the "
                           f"previous one at {mismatched}; no switch rate for them (the validation loader must "
                           "give the same tokens each pass)")
        flat = torch.cat([sums.flatten().to(pl_module.device)] + [self._val_modality[k].double().flatten()
                                                                   for k in labels])
        if trainer.world_size > 1:
            flat = trainer.strategy.reduce(flat, reduce_op="sum")
        flat = flat.cpu()
        sums = flat[:sums.numel()].view_as(sums)
        sizes = [self._val_modality[k].numel() for k in labels]
        counts = dict(zip(labels, (c.view(len(MODALITY_NAMES), -1) for c in flat[sums.numel():].split(sizes))))
        for k in labels:
            self._val_modality[k].zero_()
        self.last_switch = {}
        for j, how in enumerate(SWITCH_RATES):
            rates = {label: float(sums[i, j, 0] / sums[i, j, 1]) for i, label in enumerate(labels) if sums[i, j, 1] > 0}
            if rates:
                self.last_switch[how] = rates
                for label, rate in rates.items():
                    self.switch_history[how].setdefault(label, {})[step] = rate
        self.last_modality_shares = {
            label: {MODALITY_NAMES[m]: c[m] / c[m].sum() for m in range(len(MODALITY_NAMES)) if c[m].sum() > 0}
            for label, c in counts.items()}
        if trainer.is_global_zero:
            self._write_validation(trainer, step)

    def _write_validation(self, trainer, step: int) -> None:
        from lightning.pytorch.loggers import WandbLogger

        root = Path(trainer.default_root_dir) / "expert_load"
        scalars = {f"router/switch_{how}/{label}": rate for how, rates in self.last_switch.items()
                   for label, rate in rates.items()}
        for how in self.last_switch:
            atomic_write_bytes(root / f"switch_{how}.png", plot_curves(
                self.switch_history[how], f"switch rate between validation passes ({how})", "share of tokens"))
        rows = {f"{label} {m}": shares for label, by_m in self.last_modality_shares.items()
                for m, shares in by_m.items()}
        path = None
        if rows:
            path = plot_expert_load(rows, root / f"modality_step{step}.png",
                                    title=f"modality shares at validation, step {step} (share of the modality's "
                                          "top-k assignments)")
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and path is not None:
                logger.log_image(key=f"{self.key}_modality", images=[str(path)], step=step,
                                 caption=[f"validation at step {step}"])
            if scalars:
                logger.log_metrics(scalars, step=step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._armed = True

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._armed = False  # the backward may recompute checkpointed blocks: not new routings

    def on_fit_end(self, trainer, pl_module) -> None:
        self._remove_hooks()

    def teardown(self, trainer, pl_module, stage) -> None:
        self._remove_hooks()

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles, self._armed, self._val_armed = [], False, False

    # -- logging ---------------------------------------------------------------------------------------
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._armed = False
        step = trainer.global_step  # optimiser steps: the same on every rank
        if not self._counts or step == 0 or step % self.every_n_steps or step == self._last_step:
            return  # (a step spans several batches under gradient accumulation: log once, after it)
        self._last_step = step
        labels = list(self._counts)
        flat = torch.cat([self._counts[k].double() for k in labels] + [self._entropy[k] for k in labels])
        if trainer.world_size > 1:  # each rank routed its own tokens; the load is the global one
            flat = trainer.strategy.reduce(flat, reduce_op="sum")
        flat = flat.cpu()
        sizes = [self._counts[k].numel() for k in labels]
        counts = dict(zip(labels, flat[:sum(sizes)].round().long().split(sizes)))
        ent = flat[sum(sizes):].view(len(labels), 2)
        for k in labels:
            self._counts[k].zero_()
            self._entropy[k].zero_()
        self.last_counts, self.last_load = counts, load_fractions(counts)
        self.last_entropy = {k: s / n for k, (s, n) in zip(labels, ent.tolist()) if n > 0}
        if trainer.is_global_zero:
            self._write(trainer, step)

    def _write(self, trainer, step: int) -> None:
        from lightning.pytorch.loggers import WandbLogger

        first = step - self.every_n_steps + 1
        path = plot_expert_load(self.last_load, Path(trainer.default_root_dir) / "expert_load" / f"step{step}.png",
                                title=f"expert load, steps {first}-{step} (share of top-k assignments)")
        scalars = {f"router/entropy/{k}": v for k, v in self.last_entropy.items()}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image(key=self.key, images=[str(path)], step=step, caption=[f"steps {first}-{step}"])
            logger.log_metrics(scalars, step=step)
