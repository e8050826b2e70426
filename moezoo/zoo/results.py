"""``moezoo eval`` results as a zoo entry keeps them: the model's own figures, the baselines beside them,
the number of questions behind each figure, and the headline.

:func:`moezoo.eval.runner.evaluate` with ``blank_images=True`` (what the quickstart's
``FinalEvaluation`` runs) gives one flat dict per task: ``vqa_accuracy``, ``exact_match`` (overall and
``/TYPE``), ``blank_*`` (every image blanked), ``majority_baseline*`` (the majority answer's VQAv2
accuracy) and ``num_questions``. :func:`split_results` files them as an entry's ``metrics``,
``baselines`` and ``counts``.

Example:
    >>> own, base, counts = split_results(
    ...     {"vqa_accuracy": 0.5, "vqa_accuracy/color": 1.0, "blank_vqa_accuracy": 0.25, "majority_baseline": 0.2,
    ...      "majority_baseline/color": 0.1, "num_questions": 2.0},
    ...     rows=[{"question_type": "color"}, {"question_type": "count"}])
    >>> own, base["majority"], counts
    ({'vqa_accuracy': 0.5, 'vqa_accuracy/color': 1.0}, {'vqa_accuracy': 0.2, 'vqa_accuracy/color': 0.1}, {'vqa_accuracy': 2, 'vqa_accuracy/color': 1})
"""

from __future__ import annotations

from collections import Counter
from typing import Any

COUNT_KEYS = ("num_questions", "num_items", "tokens")
HEADLINE_METRICS = ("vqa_accuracy", "acc", "perplexity")
# Hub pipeline tags for the model-index, by the modality a task asks about.
TASK_TYPES = {"image": "visual-question-answering", "audio": "audio-text-to-text", "text": "text-generation"}
RELATIVE_TOLERANCE = 1e-3  # figures with no question count (perplexity): measured on the same bytes


def split_results(metrics: dict[str, float], rows: list[dict[str, Any]] | None = None
                  ) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, int]]:
    """``(own, baselines, counts)`` of one task's flat metrics.

    Args:
        metrics: ``evaluate(...).results[task]``.
        rows: ``evaluate(...).rows[task]``: per-question rows with ``question_type``, for the per-type counts.

    Returns:
        own: the model's figures; baselines: ``{"blank": {...}, "majority": {...}}`` keyed like ``own``;
        counts: metric -> the number of questions (items) behind it, where there is one.
    """
    own: dict[str, float] = {}
    blank: dict[str, float] = {}
    majority: dict[str, float] = {}
    for key, value in metrics.items():
        if key.startswith("blank_"):
            blank[key.removeprefix("blank_")] = value
        elif key.startswith("majority_baseline"):
            majority["vqa_accuracy" + key.removeprefix("majority_baseline")] = value
        elif key not in COUNT_KEYS:
            own[key] = value
    baselines = {k: v for k, v in (("blank", blank), ("majority", majority)) if v}
    n = metrics.get("num_questions") or metrics.get("num_items")
    counts: dict[str, int] = {}
    if rows and all("question_type" in r for r in rows):
        per_type = Counter(r["question_type"] for r in rows)
        counts = {m: per_type[m.split("/", 1)[1]] if "/" in m else len(rows) for m in own}
    elif n:
        counts = {m: int(n) for m in own}
    return own, baselines, counts


def tolerance(value: float, count: int | None) -> float:
    """How far a re-measured figure may be from the card's: one question's worth (1/N), or, for a figure
    with no question count (perplexity), a relative 1e-3.

    Example:
        >>> tolerance(0.9, 500), tolerance(12.0, None)
        (0.002, 0.012)
    """
    return 1.0 / count if count else abs(value) * RELATIVE_TOLERANCE


def task_info(task: str) -> dict[str, str]:
    """The model-index facts of a task: its Hub task type, dataset and split."""
    from moezoo.eval.tasks import TASKS

    shipped = TASKS.get(task)
    if shipped is None:  # an lm-eval task
        return {"type": "text-generation", "dataset": task, "split": "test"}
    return {"type": TASK_TYPES.get(shipped.modality, "text-generation"), "dataset": shipped.dataset,
            "split": shipped.split}


def headline(cfg: Any) -> tuple[str, str, float] | None:
    """``(task, metric, value)``: the first task's VQA accuracy, accuracy or perplexity (else its first figure).

    Example:
        >>> from moezoo.registry import PretrainedCfg
        >>> headline(PretrainedCfg("a.b", "shipped", "a.b", tasks=("t",), metrics={"t": {"x": 1.0, "acc": 0.5}}))
        ('t', 'acc', 0.5)
    """
    for task in list(cfg.tasks) or list(cfg.metrics):
        metrics = cfg.metrics.get(task) or {}
        for metric in (*HEADLINE_METRICS, *metrics):
            if metric in metrics:
                return task, metric, float(metrics[metric])
    return None
