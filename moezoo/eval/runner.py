"""``evaluate``: a model on shipped tasks and lm-evaluation-harness tasks, one report.

The shipped tasks (:data:`moezoo.eval.tasks.TASKS`) run here; every other name goes to
lm-eval through :mod:`moezoo.eval.harness.lm_eval` (installed with ``moezoo[eval]``), with
the user's own task YAMLs found under ``include_path`` as lm-eval's ``--include_path`` finds
them. The report is the JSON of ``moezoo eval --json``::

    {"model": NAME, "results": {TASK: {METRIC: value, ...}, ...}}
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from moezoo.eval.batching import eval_mode
from moezoo.eval.tasks import TASKS, TaskResult
from moezoo.utils.io import atomic_write_text


@dataclass
class EvalReport:
    """Metrics per task (``results``), per-sample rows of the shipped tasks, seconds per task."""

    model: str
    results: dict[str, dict[str, float]] = field(default_factory=dict)
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "results": self.results}

    def save(self, path: str | Path) -> Path:
        """Write the report JSON (atomically: an older report is never left half-written)."""
        path = Path(path)
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        return path

    def summary(self) -> str:
        """The table, then each VQA task's per-type table (what ``moezoo eval`` prints)."""
        parts = [self.table()]
        for task, metrics in self.results.items():
            table = vqa_type_table(metrics)
            if table:
                parts.append(f"{task}: VQAv2 accuracy per question type\n{table}")
        return "\n\n".join(parts)

    def table(self) -> str:
        """The results as a plain-text table: one line per task and metric.

        Example:
            >>> print(EvalReport("m", {"t": {"acc": 0.5}}).table())
            task  metric  value
            t     acc     0.5000
        """
        lines = [("task", "metric", "value")]
        for task, metrics in self.results.items():
            lines += [(task, name, f"{value:.4f}") for name, value in metrics.items()]
        widths = [max(len(line[i]) for line in lines) for i in range(3)]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def vqa_type_table(metrics: dict[str, float]) -> str | None:
    """Per question type: accuracy, blank-image accuracy (when measured) and the majority baseline.

    Example:
        >>> print(vqa_type_table({"vqa_accuracy": 0.5, "vqa_accuracy/color": 0.5, "majority_baseline": 0.2,
        ...                       "majority_baseline/color": 0.2}))
        type      accuracy  majority
        color       0.5000    0.2000
        overall     0.5000    0.2000
    """
    types = sorted(k.split("/", 1)[1] for k in metrics if k.startswith("vqa_accuracy/"))
    if not types:
        return None
    columns = [("accuracy", "vqa_accuracy"), ("blank", "blank_vqa_accuracy"), ("majority", "majority_baseline")]
    columns = [(title, key) for title, key in columns if key in metrics]
    lines = [f"{'type':8}" + "".join(f"{title:>10}" for title, _ in columns)]
    for qtype, suffix in [(t, f"/{t}") for t in types] + [("overall", "")]:
        lines.append(f"{qtype:8}" + "".join(f"{metrics[key + suffix]:10.4f}" for _, key in columns))
    return "\n".join(lines)


def _load_task_yaml(text: str) -> Any:
    """An lm-eval task YAML, its ``!function module.name`` tags read as ``None`` (nothing is imported)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    return yaml.load(text, Loader=Loader)


def task_files(include_path: str | Path) -> dict[str, Path]:
    """Task name -> its YAML under ``include_path``, read as lm-eval reads them (without lm-eval).

    Raises:
        ValueError: a YAML file does not parse (the message names the file).

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = (d / "t.yaml").write_text("task: my_task\\ndataset_path: json\\n")
        >>> {name: path.name for name, path in task_files(d).items()}
        {'my_task': 't.yaml'}
    """
    import yaml

    found = {}
    for path in sorted(Path(include_path).rglob("*.yaml")):
        try:
            body = _load_task_yaml(path.read_text())
        except yaml.YAMLError as err:
            raise ValueError(f"task file {path} is not valid YAML: {err}") from None
        if isinstance(body, dict) and isinstance(body.get("task"), str):
            found[body["task"]] = path
    return found


def local_task_names(include_path: str | Path) -> list[str]:
    """The ``task:`` names of the lm-eval task YAMLs under ``include_path``."""
    return list(task_files(include_path))


def check_task_files(include_path: str | Path, names: Sequence[str]) -> None:
    """Fail early, naming the file, when a requested task's YAML cannot make an lm-eval task.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = (d / "t.yaml").write_text("task: bad\\noutput_type: generate_until\\n")
        >>> check_task_files(d, ["bad"])
        Traceback (most recent call last):
        ...
        ValueError: task file ...t.yaml (task 'bad') has no dataset_path: lm-eval tasks need dataset_path (e.g. json with dataset_kwargs.data_files), or include: another task YAML
    """
    files = task_files(include_path)
    for name in names:
        if name not in files:
            continue
        body = _load_task_yaml(files[name].read_text())
        if not any(key in body for key in ("dataset_path", "include", "class")):
            raise ValueError(f"task file {files[name]} (task {name!r}) has no dataset_path: lm-eval tasks need "
                             "dataset_path (e.g. json with dataset_kwargs.data_files), or include: another task YAML")


def split_tasks(tasks: Sequence[str], include_path: str | Path | None = None) -> tuple[list[str], list[str]]:
    """``(shipped, harness)`` task names; an unknown name without lm-eval installed is a ``ValueError``.

    Example:
        >>> split_tasks(["shapes_vqa", "text_ppl"])
        (['shapes_vqa', 'text_ppl'], [])
    """
    names = [t.strip() for t in tasks if t.strip()]
    if not names:
        raise ValueError(f"no task given; shipped tasks: {', '.join(TASKS)} (or any lm-eval task)")
    shipped = [t for t in names if t in TASKS]
    others = [t for t in names if t not in TASKS]
    if others and importlib.util.find_spec("lm_eval") is None:
        close = {t: difflib.get_close_matches(t, list(TASKS), n=3) for t in others}
        hints = "; ".join(f"{t!r} (closest: {', '.join(c) or 'none'})" for t, c in close.items())
        raise ValueError(f"unknown task {hints}. Shipped tasks: {', '.join(TASKS)}. Other names are "
                         "lm-evaluation-harness tasks: install them with `pip install 'moezoo[eval]'`")
    if include_path is not None:
        if not Path(include_path).is_dir():
            raise FileNotFoundError(f"--include-path {include_path}: no such directory (it should hold lm-eval "
                                    "task YAMLs)")
        check_task_files(include_path, others)
    return shipped, others


def evaluate(model: nn.Module, tasks: Sequence[str], name: str | None = None, limit: int | None = None,
             batch_size: int = 32, include_path: str | Path | None = None, blank_images: bool = False,
             progress: bool = False, num_fewshot: int | None = None) -> EvalReport:
    """Evaluate ``model`` on ``tasks`` (shipped names or lm-eval task names).

    Args:
        model: a moezoo model (``moezoo.load`` / ``create_model``); it is evaluated in eval mode and
            left in the mode it came in.
        tasks: task names; see :data:`moezoo.eval.tasks.TASKS`, else lm-eval's.
        name: the model's name in the report (default: its class name).
        limit: at most this many samples per task.
        batch_size: prompts per forward / generate call.
        include_path: a folder of lm-eval task YAMLs (lm-eval's ``--include_path``).
        blank_images: also evaluate VQA tasks with every image blanked (``blank_*`` metrics).
        progress: show progress bars.
        num_fewshot: lm-eval's few-shot count (its task default when ``None``).

    Example:
        >>> import moezoo
        >>> report = evaluate(moezoo.create_model("moe_lm_tiny").eval(), ["text_mc"], limit=4)
        >>> sorted(report.results["text_mc"])
        ['acc', 'acc_norm', 'num_items']
    """
    shipped, others = split_tasks(tasks, include_path)
    report = EvalReport(name or type(model).__name__)
    for task in shipped:
        start = time.perf_counter()
        with eval_mode(model):
            result: TaskResult = TASKS[task].run(model, limit=limit, batch_size=batch_size, progress=progress,
                                                 blank_images=blank_images)
        report.results[task], report.rows[task] = result.metrics, result.rows
        report.seconds[task] = time.perf_counter() - start
    if others:
        from moezoo.eval.harness.lm_eval import run_lm_eval

        start = time.perf_counter()
        try:
            with eval_mode(model):
                results = run_lm_eval(model, others, include_path=include_path, limit=limit,
                                      batch_size=batch_size, num_fewshot=num_fewshot)
        except ValueError as err:
            if "unknown" not in str(err):
                raise
            raise ValueError(f"{err}. Shipped tasks: {', '.join(TASKS)}") from None
        report.results.update(results)
        report.seconds["lm_eval"] = time.perf_counter() - start
    return report
