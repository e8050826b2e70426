"""The figures of an expert analysis, as PNG bytes: load, entropy by layer, accuracy per expert, modality
shares, ablation deltas.

Each function takes :func:`~moezoo.analysis.report.analyze`'s report (or the statistics it holds) and
returns a PNG, drawn on a bare :class:`matplotlib.figure.Figure` (the Agg canvas): pyplot's global
state is never touched, so figures are safe to draw from any thread, in training callbacks too.

- :func:`plot_expert_load`: the load heatmap (rows: sites, columns: experts; each expert's share of the
  top-k assignments), the view of *Evaluating Expert Contributions* (arXiv 2502.17187) and LibMoE;
- :func:`plot_entropy`: gate, top-k and load entropy by layer, normalised to [0, 1], for one model or
  several side by side (the OLMoE paper's "close to uniform, and growing with depth");
- :func:`plot_expert_accuracy`: per site, each expert's accuracy over its top-k tokens, with its count;
- :func:`plot_modality_shares`: per site, how each modality's tokens spread over the experts (MoE-LLaVA,
  arXiv 2401.15947, Fig. 5; Uni-MoE);
- :func:`plot_ablation`: the change in the task metric with each expert ablated, sorted by effect;
- :func:`plot_curves`: values over training steps, one line per label (the switch rates of training).
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

MODALITY_COLOURS = {"text": "#4c72b0", "image": "#dd8452", "audio": "#55a868", "video": "#c44e52"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def png_bytes(fig: Any) -> bytes:
    """``fig`` rendered as PNG bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _nan(values: Sequence[Any]) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


def load_figure(fractions: dict[str, Any], title: str = "expert load") -> bytes:
    """The heatmap of ``fractions`` (site -> ``(E,)`` shares; rows: sites, columns: experts) as PNG bytes.

    Sites with fewer experts than the widest leave their extra cells blank.

    Example:
        >>> load_figure({"llm.0": [0.5, 0.5], "llm.1": [1.0, 0.0]})[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    labels = list(fractions)
    rows = [torch.tensor(_nan(v.tolist() if isinstance(v, torch.Tensor) else v)) for v in fractions.values()]
    width = max(r.numel() for r in rows)
    grid_LE = torch.full((len(labels), width), math.nan)
    for row, values in enumerate(rows):
        grid_LE[row, :values.numel()] = values
    margin = 0.5 + 0.07 * max(len(label) for label in labels)  # room for long site names (upcycled towers')
    fig = _figure(margin + 1.0 + 0.45 * width, 1.0 + 0.4 * len(labels))
    ax = fig.add_subplot()
    image = ax.imshow(grid_LE.numpy(), aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, label="share of assignments")
    ax.set_xticks(range(width))
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("expert")
    ax.set_title(title, fontsize=9)
    if width * len(labels) <= 256:  # numbers stay legible on small grids
        top = max(image.get_clim()[1], 1e-12)
        for row in range(len(labels)):
            for col in range(width):
                value = float(grid_LE[row, col])
                if not math.isnan(value):  # dark text on viridis' bright end
                    ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                            color="black" if value > 0.6 * top else "white")
    return png_bytes(fig)


def plot_expert_load(fractions: dict[str, torch.Tensor], path: str | Path, title: str = "expert load") -> Path:
    """Write :func:`load_figure` of ``fractions`` as a PNG at ``path`` (atomically) and return the path."""
    from moezoo.utils.io import atomic_write_bytes

    path = Path(path)
    atomic_write_bytes(path, load_figure(fractions, title))
    return path


def plot_entropy(reports: Sequence[tuple[str, dict[str, Any]]]) -> bytes:
    """Gate, top-k and load entropy of each site (x: sites in model order) for each ``(label, report)``."""
    fig = _figure(7.0, 3.6)
    ax = fig.add_subplot()
    styles = ["-", "--", ":", "-."]
    keys = (("gate_entropy", "gate H(p)/ln E", "#4c72b0"), ("topk_entropy", "top-k H(g)/ln k", "#dd8452"),
            ("load_entropy", "load H(f)/ln E", "#55a868"))
    names: list[str] = []
    for _, report in reports:
        names += [n for n in report["sites"] if n not in names]
    for i, (label, report) in enumerate(reports):
        for key, text, colour in keys:
            xs = [names.index(n) for n in report["sites"]]
            ys = _nan([entry.get(key) for entry in report["sites"].values()])
            tag = f"{text}" + (f" — {label}" if len(reports) > 1 else "")
            ax.plot(xs, ys, styles[i % len(styles)], marker="o", color=colour, label=tag)
    ax.set_xticks(range(len(names)), names, rotation=30 if len(names) > 8 else 0, fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("MoE site (layer)")
    ax.set_ylabel("entropy / max")
    ax.set_title("routing entropy by layer (1: uniform, 0: one expert)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    return png_bytes(fig)


def _grid(n: int) -> tuple[int, int]:
    cols = min(n, 4)
    return math.ceil(n / cols), cols


def plot_expert_accuracy(report: dict[str, Any]) -> bytes | None:
    """Per site, each expert's accuracy over the tokens that have it in their top-k, its token count above
    the bar, and the overall accuracy as a line. ``None`` when the task has no per-example correctness."""
    sites = {n: e for n, e in report["sites"].items() if e.get("expert_accuracy") is not None}
    if not sites:
        return None
    rows, cols = _grid(len(sites))
    fig = _figure(3.2 * cols, 2.6 * rows)
    overall = report["metric"]["value"] if report["metric"]["name"] != "perplexity" else None
    for i, (name, entry) in enumerate(sites.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        acc = _nan(entry["expert_accuracy"])
        counts = entry["topk_counts"]
        bars = ax.bar(range(len(acc)), [0.0 if math.isnan(a) else a for a in acc], color="#4c72b0")
        for bar, a, n in zip(bars, acc, counts):
            ax.text(bar.get_x() + bar.get_width() / 2, (0.0 if math.isnan(a) else a) + 0.02,
                    "—" if math.isnan(a) else str(n), ha="center", va="bottom", fontsize=6)
        if overall is not None:
            ax.axhline(overall, color="#c44e52", lw=1, ls="--")
        ax.set_ylim(0, 1.15)
        ax.set_xticks(range(len(acc)))
        ax.tick_params(labelsize=7)
        ax.set_title(f"{name} ({entry['positions']} positions)", fontsize=8)
        ax.set_xlabel("expert (count above)", fontsize=7)
        if i % cols == 0:
            ax.set_ylabel("accuracy", fontsize=7)
    fig.suptitle("accuracy of each expert's top-k tokens (dashed: the model's)", fontsize=9)
    return png_bytes(fig)


def plot_modality_shares(report: dict[str, Any]) -> bytes | None:
    """Per site, each modality's top-k shares over the experts (bars side by side), over every token."""
    sites = {n: e for n, e in report["sites"].items() if e.get("modality_frequency")}
    if not sites:
        return None
    rows, cols = _grid(len(sites))
    fig = _figure(3.4 * cols, 2.6 * rows)
    for i, (name, entry) in enumerate(sites.items()):
        ax = fig.add_subplot(rows, cols, i + 1)
        shares = entry["modality_frequency"]
        width = 0.8 / max(len(shares), 1)
        for j, (modality, values) in enumerate(shares.items()):
            xs = [e - 0.4 + width * (j + 0.5) for e in range(len(values))]
            ax.bar(xs, [0.0 if v is None else v for v in values], width, label=modality,
                   color=MODALITY_COLOURS.get(modality))
        ax.set_xticks(range(entry["num_experts"]))
        ax.tick_params(labelsize=7)
        ax.set_title(name, fontsize=8)
        ax.set_xlabel("expert", fontsize=7)
        if i % cols == 0:
            ax.set_ylabel("share of the modality's top-k", fontsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    fig.suptitle("how each modality's tokens spread over the experts (all positions)", fontsize=9)
    return png_bytes(fig)


def plot_ablation(ablation: dict[str, Any], limit: int = 40) -> bytes:
    """Horizontal bars: the change in the metric with each expert ablated, largest effect on top."""
    rows = ablation["experts"][:limit]
    fig = _figure(6.5, 1.0 + 0.22 * len(rows))
    ax = fig.add_subplot()
    deltas = _nan([r["delta"] for r in rows])
    labels = [f"{r['site']} e{r['expert']}" for r in rows]
    ax.barh(range(len(rows)), [0.0 if math.isnan(d) else d for d in deltas],
            color=["#c44e52" if d < 0 else "#55a868" for d in deltas])
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_xlabel(f"change in {ablation['metric']} (baseline {ablation['baseline']:.4f})", fontsize=8)
    shown = f", the {len(rows)} largest" if len(ablation["experts"]) > len(rows) else ""
    ax.set_title(f"ablating one expert at a time ({ablation['mode']}){shown}", fontsize=9)
    return png_bytes(fig)


def plot_curves(curves: dict[str, dict[int, float]], title: str, ylabel: str) -> bytes:
    """Lines over training steps: label -> {step: value}."""
    fig = _figure(6.0, 3.2)
    ax = fig.add_subplot()
    for label, points in curves.items():
        steps = sorted(points)
        ax.plot(steps, [points[s] for s in steps], marker="o", ms=3, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    if curves:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return png_bytes(fig)
