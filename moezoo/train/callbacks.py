"""Lightning callbacks of the training side.

:class:`SkippedSamplesLogger` turns the data pipeline's skip counters
(:mod:`moezoo.data.robust`) into the ``data/skipped`` metrics.
"""

from __future__ import annotations

from typing import Mapping

import torch
from lightning.pytorch import Callback

from moezoo.data.robust import METRIC, REASONS, SkipCounter, merge_totals


class SkippedSamplesLogger(Callback):
    """Log the skipped-sample counts: ``data/skipped`` (total) and ``data/skipped/REASON``.

    The counts are cumulative since the start of the run, summed over every loader of
    the datamodule (anything with ``skip_counters() -> {split: SkipCounter}``) and,
    under DDP, over ranks. They are logged every ``log_every_n_steps`` and at the end
    of every train / validation epoch.

    Args:
        counters: explicit counters; by default ``trainer.datamodule.skip_counters()``.

    Example:
        >>> SkippedSamplesLogger().state_key
        'SkippedSamplesLogger'
    """

    def __init__(self, counters: Mapping[str, SkipCounter] | None = None):
        self.counters = counters

    def _counters(self, trainer) -> Mapping[str, SkipCounter]:
        if self.counters is not None:
            return self.counters
        source = getattr(trainer, "datamodule", None)
        return source.skip_counters() if hasattr(source, "skip_counters") else {}

    def _log(self, trainer, pl_module, on_step: bool) -> None:
        totals = merge_totals(self._counters(trainer))
        values = torch.tensor([sum(totals.values()), *totals.values()], dtype=torch.float32)
        if trainer.world_size > 1:  # each rank counts its own samples; the metric is the global sum
            values = trainer.strategy.reduce(values.to(pl_module.device), reduce_op="sum").cpu()
        names = [METRIC, *(f"{METRIC}/{r}" for r in REASONS)]
        for name, value in zip(names, values.tolist()):
            # The counts are cumulative, so "max" is the latest value whatever Lightning aggregates.
            pl_module.log(name, value, on_step=on_step, on_epoch=not on_step, reduce_fx="max", sync_dist=False)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if (trainer.global_step % max(1, trainer.log_every_n_steps)) == 0:  # same step on every rank
            self._log(trainer, pl_module, on_step=True)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._log(trainer, pl_module, on_step=False)  # the loader is exhausted: these counts are exact

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log(trainer, pl_module, on_step=False)


class ExportModel(Callback):
    """At the end of ``fit``, save the trained model with ``save_pretrained`` into ``dirpath``: the dir
    ``moezoo.load`` and ``moezoo eval`` take (weights, config, tokenizer and processor).

    Args:
        dirpath: where to save (default ``{default_root_dir}/model``).
        format: ``"moezoo"`` or ``"hf"`` (see ``save_pretrained``).

    Example:
        >>> ExportModel("runs/x/model").dirpath
        'runs/x/model'
    """

    def __init__(self, dirpath: str | None = None, format: str = "moezoo"):
        self.dirpath, self.format = dirpath, format

    def on_fit_end(self, trainer, pl_module) -> None:
        from pathlib import Path

        from lightning.pytorch.utilities import rank_zero_info

        from moezoo.parallel import is_sharded

        path = Path(self.dirpath or Path(trainer.default_root_dir) / "model")
        if is_sharded(pl_module) or trainer.is_global_zero:  # gathering a sharded model takes every rank; rank 0 writes
            pl_module.save_pretrained(path, format=self.format)
        rank_zero_info(f"saved the trained model to {path} (moezoo.load / moezoo eval take it)")
        trainer.strategy.barrier("export_model")
