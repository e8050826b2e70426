"""Evaluation during training: VQA answers and language benchmarks as Lightning callbacks.

:class:`VQAEvalCallback` generates answers to a VQA split with the model's own ``generate``
(the loop of :mod:`moezoo.eval.generation`) and scores them with VQAv2 accuracy and exact
match, overall and per question type. Under several processes every rank answers its own
shard of the questions (``rank::world_size``, padded to the same count so that every rank runs
the same forwards, and with a fixed number of decoding steps: a sharded model, FSDP or expert
parallel, all-gathers inside each forward, so a rank that stopped early would hang the others),
then the scored rows are gathered and every rank computes the same metrics.

:class:`LMEvalCallback` runs shipped language tasks (``text_ppl``, ``text_mc``) or lm-eval tasks
through :func:`moezoo.eval.runner.evaluate`. Every rank evaluates the whole task on the same
inputs, which keeps sharded forwards in step; the metrics are identical on every rank.

Both log their metrics (``eval/{task}/{metric}``), log a table to the logger that takes one
(W&B's ``log_table``) and write ``{out_dir}/{task}-step{N}.json`` (metrics and rows) from rank 0.
"""

from __future__ import annotations

import json
from collections import deque
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import Callback

from moezoo.eval.batching import eval_mode
from moezoo.utils.io import atomic_write_text


class _PeriodicEval(Callback):
    """Runs :meth:`evaluate` every ``every_n_epochs`` validation epochs and / or every ``every_n_steps`` steps."""

    def __init__(self, every_n_epochs: int | None = 1, every_n_steps: int | None = None, limit: int | None = None,
                 batch_size: int = 32, out_dir: str | None = None):
        for name, value in (("every_n_epochs", every_n_epochs), ("every_n_steps", every_n_steps), ("limit", limit)):
            if value is not None and value < 1:
                raise ValueError(f"{type(self).__name__}.{name}={value} must be >= 1 (or None)")
        self.every_n_epochs, self.every_n_steps = every_n_epochs, every_n_steps
        self.limit, self.batch_size, self.out_dir = limit, batch_size, out_dir
        self.results: dict[str, dict[str, float]] = {}  # the latest metrics per task

    def evaluate(self, trainer, model: torch.nn.Module) -> dict[str, tuple[dict[str, float], list[dict]]]:
        raise NotImplementedError  # each subclass's evaluation: task -> (metrics, rows)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or not self.every_n_epochs:
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0 or trainer.fast_dev_run:
            self._run(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.every_n_steps and trainer.global_step % self.every_n_steps == 0:  # the same step on every rank
            self._run(trainer, pl_module)

    def _run(self, trainer, pl_module) -> None:
        model = pl_module.model
        with eval_mode(model), torch.no_grad():
            outcome = self.evaluate(trainer, model)
        for task, (metrics, rows) in outcome.items():
            self.results[task] = metrics
            for name, value in metrics.items():
                # Identical on every rank (gathered or computed in full), so no reduction is needed.
                pl_module.log(f"eval/{task}/{name}", value, sync_dist=False)
            if trainer.is_global_zero:
                self._write(trainer, task, metrics, rows)

    def _write(self, trainer, task: str, metrics: dict[str, float], rows: list[dict]) -> None:
        out_dir = Path(self.out_dir or Path(trainer.default_root_dir) / "eval")
        payload = {"task": task, "step": trainer.global_step, "epoch": trainer.current_epoch,
                   "metrics": metrics, "rows": rows}
        atomic_write_text(out_dir / f"{task}-step{trainer.global_step}.json", json.dumps(payload, indent=1) + "\n")
        table = rows or [{"metric": k, "value": v} for k, v in metrics.items()]
        columns = list(table[0]) if table else []
        for logger in trainer.loggers:
            if hasattr(logger, "log_table") and columns:  # W&B
                logger.log_table(key=f"eval/{task}/table", columns=columns,
                                 data=[[row.get(c) for c in columns] for row in table], step=trainer.global_step)


def _gather(trainer, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's rows, on every rank (Python objects over ``all_gather_object``)."""
    if trainer.world_size == 1 or not torch.distributed.is_initialized():
        return rows
    parts: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(parts, rows)
    return [row for part in parts for row in part]


class VQAEvalCallback(_PeriodicEval):
    """Generated answers to a shipped VQA split, scored with VQAv2 accuracy and exact match.

    Args:
        task: a shipped VQA task (``shapes_vqa``, ``digits_vqa``, or the audio ``tones_qa``).
        every_n_epochs / every_n_steps: when to evaluate (after validation / after a training step).
        limit: the first N questions of the split.
        batch_size: prompts per ``generate`` call.
        max_new_tokens: most tokens per answer (every rank decodes exactly this many under DDP / FSDP).
        out_dir: where the JSON tables go (default ``{default_root_dir}/eval``).

    Example:
        >>> VQAEvalCallback("shapes_vqa", every_n_steps=100, limit=64).state_key
        'VQAEvalCallback'
    """

    def __init__(self, task: str = "shapes_vqa", every_n_epochs: int | None = 1, every_n_steps: int | None = None,
                 limit: int | None = None, batch_size: int = 32, max_new_tokens: int = 8, out_dir: str | None = None):
        from moezoo.eval.tasks import TASKS, VQATask

        if not isinstance(TASKS.get(task), VQATask):
            known = [n for n, t in TASKS.items() if isinstance(t, VQATask)]
            raise ValueError(f"VQAEvalCallback.task={task!r} is not a VQA task; known: {', '.join(known)}")
        super().__init__(every_n_epochs, every_n_steps, limit, batch_size, out_dir)
        self.task, self.max_new_tokens = TASKS[task], max_new_tokens
        self._items: list[dict] | None = None

    def evaluate(self, trainer, model):
        from moezoo.eval.metrics import vqa_accuracy
        from moezoo.eval.tasks import vqa_metrics

        if self._items is None:  # read once per run
            self._items = self.task.items(self.limit)
            majority = self.task.majority_answers()
            for item in self._items:
                item["majority_baseline"] = vqa_accuracy(majority.get(item["question_type"], ""), item["answers"])
        rank, world = trainer.global_rank, trainer.world_size
        mine = self._items[rank::world]
        per_rank = -(-len(self._items) // world)
        padded = mine + [self._items[0]] * (per_rank - len(mine))  # equal forwards on every rank
        answers = self.task.answer(model, padded, batch_size=self.batch_size, max_new_tokens=self.max_new_tokens,
                                   fixed_steps=world > 1)
        rows = [self.task.row(it) | self.task.score(it, answer) | {"majority_baseline": it["majority_baseline"]}
                for it, answer in zip(mine, answers)]
        rows = sorted(_gather(trainer, rows), key=lambda r: r["question_id"])
        return {self.task.name: (vqa_metrics(rows), rows)}


class LMEvalCallback(_PeriodicEval):
    """Language benchmarks during training: shipped ``text_ppl`` / ``text_mc`` or lm-eval task names.

    Args:
        tasks: task names, as ``moezoo eval --tasks`` takes them.
        include_path: a folder of lm-eval task YAMLs.
        (the rest as :class:`VQAEvalCallback`)

    Example:
        >>> LMEvalCallback(["text_ppl", "text_mc"], every_n_epochs=1, limit=16).tasks
        ['text_ppl', 'text_mc']
    """

    def __init__(self, tasks: Sequence[str] = ("text_ppl", "text_mc"), every_n_epochs: int | None = 1,
                 every_n_steps: int | None = None, limit: int | None = None, batch_size: int = 16,
                 include_path: str | None = None, out_dir: str | None = None):
        from moezoo.eval.runner import split_tasks

        split_tasks(list(tasks), include_path)  # unknown names fail when the config is read, not mid-run
        super().__init__(every_n_epochs, every_n_steps, limit, batch_size, out_dir)
        self.tasks, self.include_path = list(tasks), include_path

    def evaluate(self, trainer, model):
        from moezoo.eval.runner import evaluate

        report = evaluate(model, self.tasks, limit=self.limit, batch_size=self.batch_size,
                          include_path=self.include_path)
        return {task: (metrics, report.rows.get(task, [])) for task, metrics in report.results.items()}


class FinalEvaluation(Callback):
    """At the end of ``fit``: evaluate the trained model (``moezoo eval``'s tasks), print the report,
    log its metrics as ``final/{task}/{metric}`` and write ``{out}`` (the ``moezoo eval --json`` layout).

    The quickstart's closing report: VQAv2 accuracy on the shipped test split, per question type
    beside the majority-answer baseline, and the accuracy with blank images. The JSON also carries
    ``"train": {"final_lm_loss", "steps_averaged", "global_step"}``: the LM loss (the answer tokens'
    cross-entropy, router losses excluded) averaged over the last ``loss_window`` training steps of
    this process, the final training loss a model card reports.

    Args:
        tasks: task names (shipped or lm-eval).
        blank_images: also evaluate VQA tasks on blank images.
        batch_size: prompts per batch.
        limit: the first N samples of each task.
        out: the JSON path (default ``{default_root_dir}/final_eval.json``).
        loss_window: how many of the last training steps ``final_lm_loss`` averages.

    Example:
        >>> FinalEvaluation(["shapes_vqa"], blank_images=True).tasks
        ['shapes_vqa']
    """

    def __init__(self, tasks: Sequence[str] = ("shapes_vqa",), blank_images: bool = True, batch_size: int = 64,
                 limit: int | None = None, out: str | None = None, loss_window: int = 50):
        from moezoo.eval.runner import split_tasks

        split_tasks(list(tasks))  # unknown names fail when the config is read
        if loss_window < 1:
            raise ValueError(f"FinalEvaluation(loss_window={loss_window}): average at least 1 step")
        self.tasks, self.blank_images, self.batch_size, self.limit, self.out = (
            list(tasks), blank_images, batch_size, limit, out)
        self.report = None
        self.losses: deque[torch.Tensor] = deque(maxlen=loss_window)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = trainer.callback_metrics.get("train/lm_loss")
        if loss is not None:
            self.losses.append(loss.detach())  # kept as tensors: no device sync per step

    def train_facts(self, trainer) -> dict[str, Any]:
        """What the run ended with: the mean LM loss of its last steps (None when it trained none here)."""
        mean = float(torch.stack([x.float().cpu() for x in self.losses]).mean()) if self.losses else None
        return {"final_lm_loss": mean, "steps_averaged": len(self.losses), "global_step": trainer.global_step}

    def on_fit_end(self, trainer, pl_module) -> None:
        from lightning.pytorch.utilities import rank_zero_info

        from moezoo.eval.runner import evaluate

        model = pl_module.model
        # Every rank evaluates the same inputs, so a sharded model's forwards stay in step; evaluate
        # runs in eval mode and gives the model back in the mode it found it in.
        self.report = evaluate(model, self.tasks, name=model.spec.name, limit=self.limit,
                               batch_size=self.batch_size, blank_images=self.blank_images,
                               progress=trainer.is_global_zero)
        if not trainer.is_global_zero:
            return
        out = Path(self.out or Path(trainer.default_root_dir) / "final_eval.json")
        payload = {**self.report.to_dict(), "train": self.train_facts(trainer)}
        atomic_write_text(out, json.dumps(payload, indent=2, sort_keys=True) + "\n")
        flat = {f"final/{t}/{k}": v for t, m in self.report.results.items() for k, v in m.items()}
        for logger in trainer.loggers:
            logger.log_metrics(flat, step=trainer.global_step)
        rank_zero_info(f"\n{self.report.summary()}\n\nwrote {out}")
