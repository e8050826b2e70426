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
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from moezoo.moe import MoELayer, MoEOutput
from moezoo.moe.mlp_experts import MoEMLP

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


def plot_expert_load(fractions: dict[str, torch.Tensor], path: str | Path, title: str = "expert load") -> Path:
    """Write the heatmap of ``fractions`` (rows: sites, columns: experts) as a PNG at ``path``.

    Sites with fewer experts than the widest leave their extra cells blank. Rendered on a
    bare :class:`matplotlib.figure.Figure` (the Agg canvas): pyplot's global state is not touched.
    """
    from matplotlib.figure import Figure

    labels = list(fractions)
    width = max(v.numel() for v in fractions.values())
    grid_LE = torch.full((len(labels), width), float("nan"))
    for row, label in enumerate(labels):
        grid_LE[row, :fractions[label].numel()] = fractions[label]
    margin = 0.5 + 0.07 * max(len(label) for label in labels)  # room for long site names (upcycled towers')
    fig = Figure(figsize=(margin + 1.0 + 0.45 * width, 1.0 + 0.4 * len(labels)), dpi=100)
    ax = fig.add_subplot()
    image = ax.imshow(grid_LE.numpy(), aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of assignments")
    ax.set_xticks(range(width))
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("expert")
    ax.set_title(title, fontsize=9)
    if width * len(labels) <= 256:  # numbers stay legible on small grids
        top = max(image.get_clim()[1], 1e-12)
        for (row, col), value in zip(torch.cartesian_prod(torch.arange(len(labels)), torch.arange(width)).tolist(),
                                     grid_LE.flatten().tolist()):
            if not math.isnan(value):  # dark text on viridis' bright end
                ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                        color="black" if value > 0.6 * top else "white")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


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

    def __init__(self, every_n_steps: int = 50, key: str = "router/expert_load"):
        if every_n_steps < 1:
            raise ValueError(f"expected every_n_steps >= 1, got {every_n_steps}")
        self.every_n_steps, self.key = every_n_steps, key
        self._handles: list[Any] = []
        self._counts: dict[str, torch.Tensor] = {}  # site -> (E,) int64, this window
        self._entropy: dict[str, torch.Tensor] = {}  # site -> (2,) float64: sum of entropy x tokens, tokens
        self._armed = False
        self._last_step = -1
        self.last_counts: dict[str, torch.Tensor] = {}
        self.last_load: dict[str, torch.Tensor] = {}
        self.last_entropy: dict[str, float] = {}

    # -- collecting ------------------------------------------------------------------------------------
    def on_fit_start(self, trainer, pl_module) -> None:
        self._remove_hooks()
        self._counts, self._entropy, self._last_step = {}, {}, -1
        for name, module in pl_module.named_modules():
            if isinstance(module, (MoELayer, MoEMLP)):
                label = site_label(name.removeprefix("model."))
                # Every site gets its buffers now, so every rank reduces tensors of the same shapes,
                # also when a site did not run on some rank (a batch without audio, say).
                self._counts[label] = torch.zeros(module.config.num_experts, dtype=torch.int64,
                                                  device=pl_module.device)
                self._entropy[label] = torch.zeros(2, dtype=torch.float64, device=pl_module.device)
                if isinstance(module, MoELayer):
                    self._handles.append(module.register_forward_hook(self._layer_hook(label)))
        for child_name, child in pl_module.named_children():  # the model: its output carries the MoEMLP calls
            if any(isinstance(m, MoEMLP) for m in child.modules()):
                self._handles.append(child.register_forward_hook(self._sites_hook(child_name)))
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
        self._handles, self._armed = [], False

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
