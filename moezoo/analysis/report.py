"""``analyze``: one model's expert analysis on one task, as the ``report.json`` of ``moezoo analyze``.

The report is DESIGN.md's contract, extended with every key of
:func:`~moezoo.analysis.routing.routing_stats` per layer and site::

    {"model": NAME, "task": T, "position": "answer" | "all", "num_examples": N,
     "metric": {"name": "vqa_accuracy", "value": 0.84, "higher_is_better": true},
     "layers": [{"layer": i, "site": "llm.i", "num_experts": E, "top_k": k, "num_tokens": T,
                 "expert_frequency": [E floats, top-1 shares], "topk_frequency": [E floats],
                 "never_activated": [expert ids], "gate_entropy": float (normalised by ln E), ...}, ...],
     "sites": {"llm.0": {...the same keys...}, "connector": {...}, "vision.5": {...}},
     "ablation": {"mode": "drop", "baseline": float, "experts": [{"site", "expert", "value", "delta"}, ...]},
     "compare": {...model B's report on the same task...}}

``layers`` are the language model's MoE layers (``layer`` its layer index); ``sites`` are every MoE site
that routed a token, named as :mod:`moezoo.analysis.sites` names them. The statistics of an LLM site are
taken at ``position`` (``"answer"``: the positions that predict the first answer token, the OLMoE
paper's attribution, arXiv 2502.17187; ``"all"``: every position), those of a site outside the LLM over
all its media tokens (``"positions": "media"``); ``modality_frequency`` is always over every token of the
site, the MoE-LLaVA view (arXiv 2401.15947). NaN (an unused expert's accuracy, an undefined entropy) is
written as ``null``.

``ablation`` (``--ablate``) holds, for every expert of every site, the task metric with that expert
ablated (:func:`~moezoo.analysis.ablation.ablate`) and its change from the unablated ``baseline``,
sorted by effect: the largest loss of quality first (a drop in accuracy, a rise in perplexity).

Example:
    >>> import moezoo
    >>> report = analyze(moezoo.create_model("moe_lm_tiny"), "text_mc", name="tiny", limit=4)
    >>> report["position"], [entry["layer"] for entry in report["layers"]], report["metric"]["name"]
    ('answer', [0, 1], 'acc')
    >>> sum(report["layers"][0]["topk_frequency"])  # doctest: +ELLIPSIS
    1.0...
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moezoo.analysis.ablation import ABLATION_MODES, ablate
from moezoo.analysis.records import POSITIONS, Records, TaskProbe, probe_for


def to_json(value: Any) -> Any:
    """``value`` with tensors as lists and NaN / inf as ``None``: strict JSON (``json.dumps(allow_nan=False)``).

    Example:
        >>> to_json({"a": torch.tensor([1.0, float("nan")]), "b": [float("inf"), 2], "c": torch.tensor(3)})
        {'a': [1.0, None], 'b': [None, 2], 'c': 3}
    """
    if isinstance(value, torch.Tensor):
        return to_json(value.tolist())
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def site_entries(records: Records, position: str) -> dict[str, dict[str, Any]]:
    """Short site name -> its report entry: the routing statistics at ``position`` (media tokens for sites
    outside the LLM), each example's correctness reaching its tokens."""
    entries = {}
    for name, site in records.sites.items():
        stats = site.stats(position, records.correct)
        entries[name] = {"site": name, "positions": position if site.in_llm else "media"} | to_json(stats)
    return entries


def ablation_table(model: nn.Module, probe: TaskProbe, records: Records, mode: str = "drop",
                   progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The task metric with each expert of each recorded site ablated in turn, sorted by effect.

    Args:
        model: the model ``records`` were collected from.
        probe: the task probe that collected them (its prepared inputs are reused).
        records: the unablated run: its metric is the baseline.
        mode: ``"drop"``, ``"reroute"`` or ``"zero"`` (:func:`~moezoo.analysis.ablation.ablate`).
        progress: called with a line per ablation, or ``None``.

    Returns:
        ``{"mode", "metric", "baseline", "experts": [{"site", "expert", "value", "delta"}, ...]}``, the
        largest loss of quality first.
    """
    if mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {mode!r}; choose one of {ABLATION_MODES}")
    rows = []
    for name, site in records.sites.items():
        for expert in range(site.num_experts):
            start = time.perf_counter()
            with ablate(model, name, expert, mode):
                value = probe.score(model, name)
            rows.append({"site": name, "expert": expert, "value": value, "delta": value - records.value})
            if progress is not None:
                progress(f"ablated {name} expert {expert} ({mode}): {records.metric} {value:.4f} "
                         f"({value - records.value:+.4f}, {time.perf_counter() - start:.1f} s)")
    sign = -1.0 if records.higher_is_better else 1.0  # the loss of quality: a fall in accuracy, a rise in perplexity
    rows.sort(key=lambda r: (-(sign * r["delta"]) if math.isfinite(r["delta"]) else math.inf))
    return to_json({"mode": mode, "metric": records.metric, "baseline": records.value, "experts": rows})


def analyze(model: nn.Module, task: str, name: str | None = None, position: str | None = None,
            limit: int | None = None, batch_size: int = 64, ablate_mode: str | None = None,
            progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The expert analysis of ``model`` on shipped task ``task``: the ``report.json`` dict (module docstring).

    Args:
        model: a moezoo model with MoE sites (``moezoo.load`` / ``create_model``).
        task: a shipped ``moezoo eval`` task (``shapes_vqa``, ``text_mc``, ``text_ppl``, ...).
        name: the model's name in the report (default: its class name).
        position: ``"answer"`` or ``"all"``; default ``"answer"``, ``"all"`` for a perplexity task.
        limit: the first N examples.
        batch_size: examples per forward.
        ablate_mode: also ablate every expert in turn in this mode (``"drop"``, ``"reroute"``, ``"zero"``).
        progress: called with a line per stage, or ``None``.

    Raises:
        ValueError: an unknown task or position, a task the model cannot read, or a model without MoE sites.
    """
    if position is not None and position not in POSITIONS:
        raise ValueError(f"position={position!r} must be one of {POSITIONS}")
    if ablate_mode is not None and ablate_mode not in ABLATION_MODES:
        raise ValueError(f"unknown ablation mode {ablate_mode!r}; choose one of {ABLATION_MODES}")
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    probe = probe_for(model, task, limit, batch_size)
    records = probe.collect(model)
    seconds["records"] = time.perf_counter() - start
    position = position or records.default_position
    sites = site_entries(records, position)
    layers = [{"layer": int(n.split(".")[1])} | entry for n, entry in sites.items() if records.sites[n].in_llm]
    report: dict[str, Any] = {
        "model": name or type(model).__name__, "task": records.task, "position": position,
        "num_examples": records.num_examples,
        "metric": {"name": records.metric, "value": to_json(records.value),
                   "higher_is_better": records.higher_is_better},
        "layers": layers, "sites": sites,
    }
    if progress is not None:
        progress(f"{report['model']} on {records.task}: {records.metric} {records.value:.4f} over "
                 f"{records.num_examples} examples, {len(sites)} MoE sites ({seconds['records']:.1f} s)")
    if ablate_mode is not None:
        start = time.perf_counter()
        report["ablation"] = ablation_table(model, probe, records, ablate_mode, progress)
        seconds["ablation"] = time.perf_counter() - start
    report["seconds"] = seconds
    return report


FIGURES = {"load": "load.png", "entropy": "entropy.png", "expert_accuracy": "expert_accuracy.png",
           "modality": "modality.png", "ablation": "ablation.png", "compare_load": "compare_load.png",
           "compare_ablation": "compare_ablation.png"}


def report_figures(report: dict[str, Any]) -> dict[str, bytes]:
    """The PNGs of ``report`` (and of its ``compare`` report), by the names of :data:`FIGURES`."""
    from moezoo.analysis import figures

    def load(r: dict[str, Any]) -> bytes:
        return figures.load_figure({n: e["topk_frequency"] for n, e in r["sites"].items()},
                                   title=f"{r['model']} on {r['task']}\nshare of top-k assignments "
                                         f"({r['position']} positions)")

    other = report.get("compare")
    pngs = {"load": load(report),
            "entropy": figures.plot_entropy([("A", report)] + ([("B", other)] if other else [])),
            "expert_accuracy": figures.plot_expert_accuracy(report),
            "modality": figures.plot_modality_shares(report)}
    if "ablation" in report:
        pngs["ablation"] = figures.plot_ablation(report["ablation"])
    if other:
        pngs["compare_load"] = load(other)
        if "ablation" in other:
            pngs["compare_ablation"] = figures.plot_ablation(other["ablation"])
    return {k: v for k, v in pngs.items() if v is not None}


def write_report(report: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``out/report.json``, the figures (PNG) and ``out/report.html`` (self-contained), each atomically.

    Returns:
        What was written: ``{"report.json": path, "report.html": path, figure name: path, ...}``.
    """
    from moezoo.analysis.html import render_html
    from moezoo.utils.io import atomic_write_bytes, atomic_write_text

    out = Path(out)
    pngs = report_figures(report)
    written = {}
    for key, png in pngs.items():
        written[key] = out / FIGURES[key]
        atomic_write_bytes(written[key], png)
    body = dict(report) | {"figures": {key: FIGURES[key] for key in pngs}}
    written["report.json"] = out / "report.json"
    atomic_write_text(written["report.json"], json.dumps(body, indent=2, allow_nan=False) + "\n")
    written["report.html"] = out / "report.html"
    atomic_write_text(written["report.html"], render_html(report, pngs))
    return written
