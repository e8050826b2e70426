"""Re-measure a shipped model's card: load it by name, run ``moezoo eval`` on its card's tasks with the card's
limit, and compare every figure, within one question's worth (1/N, N the questions behind the figure).

This is what the zoo's CI test runs for every shipped model (``moezoo zoo verify`` from the command line).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from moezoo.registry.entry import PretrainedCfg
from moezoo.registry.pretrained import pretrained_cfg
from moezoo.registry.shipped import verify_shipped
from moezoo.zoo.card import CARD_NAME, render_card
from moezoo.zoo.results import split_results, tolerance


@dataclass(frozen=True)
class Check:
    """One card figure against its re-measurement."""

    task: str
    metric: str
    card: float
    measured: float
    tolerance: float

    @property
    def ok(self) -> bool:
        """Within tolerance (a figure the eval no longer gives is measured as NaN and fails).

        Example:
            >>> Check("t", "acc", 0.5, 0.502, 0.002).ok, Check("t", "acc", 0.5, 0.51, 0.002).ok
            (True, False)
        """
        return not math.isnan(self.measured) and abs(self.measured - self.card) <= self.tolerance + 1e-9

    def __str__(self) -> str:
        mark = "ok  " if self.ok else "FAIL"
        return (f"{mark} {self.task} {self.metric}: card {self.card:.4f}, measured {self.measured:.4f} "
                f"(tolerance {self.tolerance:.4f})")


def verify_model(name: str, batch_size: int = 32, progress: bool = False) -> list[Check]:
    """Load shipped model ``name`` with ``moezoo.load(name)`` and re-measure every figure of its card.

    Args:
        name: a shipped pretrained name (``$MOEZOO_CHECKPOINTS`` points at another zoo).
        batch_size: prompts per eval batch.
        progress: show progress bars.
    """
    from moezoo.eval.runner import evaluate
    from moezoo.loading import load

    cfg = pretrained_cfg(name)
    if cfg.source != "shipped":
        raise ValueError(f"{name} is a {cfg.source} entry: only shipped models carry measured figures")
    model = load(name)
    report = evaluate(model, list(cfg.tasks), name=name, limit=cfg.eval_limit, batch_size=batch_size,
                      progress=progress)
    checks = []
    for task in cfg.tasks:
        measured, _, _ = split_results(report.results.get(task, {}))
        for metric, value in cfg.metrics.get(task, {}).items():
            got = float(measured.get(metric, math.nan))
            checks.append(Check(task, metric, float(value), got, tolerance(float(value), cfg.counts.get(task, {})
                                                                            .get(metric))))
    return checks


def card_is_current(cfg: PretrainedCfg, root: str | Path | None = None) -> bool:
    """Whether the shipped card is the one its manifest entry renders (checked files, no hand edits)."""
    return (verify_shipped(cfg, root) / CARD_NAME).read_text() == render_card(cfg)
