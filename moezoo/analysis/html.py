"""``report.html``: an expert analysis as one self-contained page.

The figures are embedded as ``data:image/png;base64`` URIs and the styles inline, so the page
references nothing outside itself (no script, no stylesheet, no font): it reads the same opened
from disk, attached to an e-mail, or on a machine without a network.

Example:
    >>> page = render_html({"model": "m", "task": "t", "position": "answer", "num_examples": 2,
    ...                     "metric": {"name": "acc", "value": 0.5, "higher_is_better": True},
    ...                     "layers": [], "sites": {}}, {})
    >>> page.startswith("<!DOCTYPE html>"), "src=\\"http" in page
    (True, False)
"""

from __future__ import annotations

import base64
import html
import math
from typing import Any

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f4f4f4; } td.l, th.l { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; } .note { color: #555; font-size: 0.9em; }
.side { display: flex; gap: 1.5em; flex-wrap: wrap; } .side > div { flex: 1 1 480px; }
"""

SUMMARY_KEYS = (("num_tokens", "tokens"), ("gate_entropy", "gate entropy"), ("topk_entropy", "top-k entropy"),
                ("load_entropy", "load entropy"), ("margin", "margin"))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header: list[str], rows: list[list[Any]], left: int = 1) -> str:
    """An HTML table; the first ``left`` columns are left-aligned (labels)."""
    def cells(tag: str, values: list[Any]) -> str:
        label = ' class="l"'
        return "".join(f"<{tag}{label if i < left else ''}>{v if tag == 'th' else _fmt(v)}</{tag}>"
                       for i, v in enumerate(values))
    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table><tr>{cells('th', [html.escape(h) for h in header])}</tr>{body}</table>"


def _img(png: bytes | None, caption: str) -> str:
    if not png:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def site_summary(report: dict[str, Any]) -> list[list[Any]]:
    """One row per site: name, experts, top-k, positions, tokens, entropies, margin, never-activated share."""
    rows = []
    for name, entry in report["sites"].items():
        never = len(entry.get("never_activated") or [])
        rows.append([name, entry["num_experts"], entry["top_k"], entry["positions"]]
                    + [entry.get(key) for key, _ in SUMMARY_KEYS]
                    + [f"{never}/{entry['num_experts']} ({never / entry['num_experts']:.0%})"])
    return rows


def _summary_table(report: dict[str, Any]) -> str:
    header = ["site", "experts", "top-k", "positions"] + [title for _, title in SUMMARY_KEYS] + ["never activated"]
    return _table(header, site_summary(report), left=1)


def _expert_table(report: dict[str, Any]) -> str:
    header = ["site", "expert", "top-k count", "top-k share", "top-1 share", "activation rate", "accuracy",
              "top-1 accuracy"]
    rows = []
    for name, entry in report["sites"].items():
        for e in range(entry["num_experts"]):
            def at(key: str, e: int = e, entry: dict = entry) -> Any:
                values = entry.get(key)
                return None if values is None else values[e]
            rows.append([name, e, at("topk_counts"), at("topk_frequency"), at("expert_frequency"),
                         at("activation_rate"), at("expert_accuracy"), at("expert_accuracy_top1")])
    return _table(header, rows, left=2)


def _ablation_table(ablation: dict[str, Any]) -> str:
    rows = [[r["site"], r["expert"], r["value"], r["delta"]] for r in ablation["experts"]]
    return _table(["site", "expert", ablation["metric"], "change"], rows, left=2)


def _headline(report: dict[str, Any]) -> str:
    m = report["metric"]
    return (f"<b>{html.escape(str(report['model']))}</b> on <b>{html.escape(report['task'])}</b>: "
            f"{html.escape(m['name'])} {_fmt(m['value'], 4)} over {report['num_examples']} examples; "
            f"statistics at the <b>{html.escape(report['position'])}</b> positions of the LLM")


def _compare_table(a: dict[str, Any], b: dict[str, Any]) -> str:
    header = ["site"] + [f"{title} ({which})" for _, title in SUMMARY_KEYS[1:] for which in ("A", "B")]
    header += ["never activated (A)", "never activated (B)"]
    rows = []
    for name in list(dict.fromkeys([*a["sites"], *b["sites"]])):
        ea, eb = a["sites"].get(name, {}), b["sites"].get(name, {})
        row: list[Any] = [name]
        for key, _ in SUMMARY_KEYS[1:]:
            row += [ea.get(key), eb.get(key)]
        row += [len(ea["never_activated"]) if ea else None, len(eb["never_activated"]) if eb else None]
        rows.append(row)
    metrics = _table(["model", a["metric"]["name"], "examples"],
                     [[f"A: {a['model']}", a["metric"]["value"], a["num_examples"]],
                      [f"B: {b['model']}", b["metric"]["value"], b["num_examples"]]])
    return metrics + _table(header, rows)


def render_html(report: dict[str, Any], figures: dict[str, bytes | None]) -> str:
    """The page of ``report`` (:func:`~moezoo.analysis.report.analyze`'s dict, with ``compare`` and
    ``ablation`` when present) with ``figures`` (name -> PNG bytes: ``load``, ``entropy``,
    ``expert_accuracy``, ``modality``, ``ablation``, ``compare_load``, ``compare_ablation``) embedded."""
    title = f"moezoo analyze: {report['model']} on {report['task']}"
    parts = [(f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{STYLE}</style></head><body>"),
             f"<h1>{html.escape(title)}</h1><p>{_headline(report)}.</p>",
             ("<p class=\"note\">Frequencies: <i>top-k share</i> is each expert's share of the top-k assignments, "
             "<i>top-1 share</i> of the first choices, <i>activation rate</i> the share of tokens that have the "
             "expert in their top-k (sums to k). Entropies are normalised to [0, 1]: gate H(p)/ln E (the router's "
             "whole distribution), top-k H(g)/ln k (the kept weights), load H(top-k share)/ln E. An expert's "
             "<i>accuracy</i> is the share of its tokens whose example was answered right.</p>"),
             "<h2>Layers</h2>", _summary_table(report),
             _img(figures.get("load"), "Expert load: each expert's share of the top-k assignments, per site."),
             _img(figures.get("entropy"), "Routing entropy by layer.")]
    if figures.get("expert_accuracy"):
        parts += ["<h2>Accuracy per expert</h2>",
                  _img(figures["expert_accuracy"], "Accuracy of the tokens routed to each expert; the count of "
                       "tokens above each bar; dashed: the model's accuracy.")]
    if figures.get("modality"):
        parts += ["<h2>Modalities</h2>",
                  _img(figures["modality"], "Each modality's top-k shares over the experts, every position "
                       "(MoE-LLaVA's view).")]
    if "ablation" in report:
        ablation = report["ablation"]
        parts += [f"<h2>Ablation ({html.escape(ablation['mode'])})</h2>",
                  (f"<p>Each expert of each site ablated in turn; {html.escape(ablation['metric'])} without ablation "
                  f"{_fmt(ablation['baseline'], 4)}. Sorted by effect, the largest loss first.</p>"),
                  _img(figures.get("ablation"), "Change in the task metric with each expert ablated."),
                  _ablation_table(ablation)]
    if "compare" in report:
        other = report["compare"]
        parts += ["<h2>Comparison</h2>", f"<p>A: {_headline(report)}.<br>B: {_headline(other)}.</p>",
                  _compare_table(report, other),
                  "<div class=\"side\"><div>", _img(figures.get("load"), f"A: {report['model']}"), "</div><div>",
                  _img(figures.get("compare_load"), f"B: {other['model']}"), "</div></div>"]
        if "ablation" in other:
            parts += [_img(figures.get("compare_ablation"), f"B: ablation ({other['ablation']['mode']})"),
                      _ablation_table(other["ablation"])]
    parts += ["<h2>Experts</h2>", _expert_table(report)]
    if "compare" in report:
        parts += [f"<h2>Experts of B ({html.escape(str(report['compare']['model']))})</h2>",
                  _expert_table(report["compare"])]
    parts.append("</body></html>\n")
    return "\n".join(p for p in parts if p)
