"""The model card of a shipped model: ``checkpoints/ARCH.TAG/README.md`` in Hugging Face's format.

The card is a pure function of the model's manifest entry (:class:`~moezoo.registry.PretrainedCfg`),
so it can always be re-rendered and checked against the file. The YAML front matter carries the
Hub's keys (``license``, ``library_name``, ``tags``, ``datasets``, ``model-index`` with the
``moezoo eval`` figures) and a ``moezoo`` block (revision, parameters, architecture, recipe, the eval
tasks and limit, and for the router recipes every seed's figures) that ``moezoo bench routers``
reads; the body gives the architecture, the recipe and the command that reproduces it, every eval
figure beside the blank-input and majority baselines, intended use and limitations, the training
data's licences and the files.

Example:
    >>> from moezoo.registry import PretrainedCfg
    >>> cfg = PretrainedCfg("moe_lm_tiny.demo", "shipped", "moe_lm_tiny.demo", license="apache-2.0",
    ...                     tasks=("text_mc",), metrics={"text_mc": {"acc": 0.5}})
    >>> card = render_card(cfg)
    >>> read_front_matter(card)["model-index"][0]["results"][0]["metrics"][0]["value"]
    0.5
"""

from __future__ import annotations

from typing import Any

from moezoo.registry.entry import PretrainedCfg
from moezoo.zoo.datasets import dataset_licence
from moezoo.zoo.results import headline, task_info

CARD_NAME = "README.md"
METRIC_NAMES = {"vqa_accuracy": "VQAv2 accuracy", "exact_match": "exact match", "acc": "accuracy",
                "acc_norm": "accuracy (length-normalised)", "perplexity": "perplexity",
                "nll_per_token": "NLL per token"}


def _metric_name(metric: str) -> str:
    base, _, qtype = metric.partition("/")
    name = METRIC_NAMES.get(base, base)
    return f"{name} ({qtype})" if qtype else name


def front_matter(cfg: PretrainedCfg) -> dict[str, Any]:
    """The card's YAML front matter as a dict (Hugging Face's model-card metadata plus a ``moezoo`` block)."""
    recipe = cfg.recipe
    datasets = list(recipe.get("datasets", []))
    tags = ["moezoo", "mixture-of-experts"] + (["multimodal"] if len(cfg.modalities) > 1 else [])
    if cfg.architecture.get("router"):
        tags.append(f"router-{cfg.architecture['router']}")
    results = []
    for task in cfg.tasks:
        info = task_info(task)
        metrics = [{"type": m, "value": round(float(v), 6), "name": _metric_name(m)}
                   for m, v in cfg.metrics.get(task, {}).items()]
        results.append({"task": {"type": info["type"], "name": task},
                        "dataset": {"name": f"{info['dataset']} ({info['split']})", "type": info["dataset"],
                                    "split": info["split"]},
                        "metrics": metrics})
    block = {"name": cfg.name, "revision": cfg.revision, "params_total": cfg.params_total,
             "params_active": cfg.params_active, "modalities": list(cfg.modalities),
             "architecture": cfg.architecture, "eval": {"tasks": list(cfg.tasks), "limit": cfg.eval_limit},
             "recipe": {k: v for k, v in recipe.items() if k != "seeds"}}
    meta: dict[str, Any] = {"license": cfg.license or "other", "library_name": "moezoo", "tags": tags}
    if datasets:
        meta["datasets"] = datasets
    meta["model-index"] = [{"name": cfg.name, "results": results}]
    if recipe.get("seeds"):
        meta["seeds"] = recipe["seeds"]
    meta["moezoo"] = block
    return meta


def read_front_matter(card: str) -> dict[str, Any]:
    """The YAML front matter of a card's text.

    Raises:
        ValueError: the text does not start with a ``---`` block.
    """
    import yaml

    if not card.startswith("---\n") or "\n---\n" not in card[3:]:
        raise ValueError("a model card starts with YAML front matter between '---' lines")
    return yaml.safe_load(card[4:card.index("\n---\n", 3)]) or {}


def _fmt_int(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("—" if value is None else str(value))


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _architecture(cfg: PretrainedCfg) -> str:
    a = cfg.architecture
    rows = [("architecture", f"`{cfg.arch}` ({a.get('architecture', '?')})"),
            ("parameters", f"{_fmt_int(cfg.params_total)} total, {_fmt_int(cfg.params_active)} active per token"),
            ("experts", f"{a.get('num_experts', '—')} per MoE layer, top-{a.get('top_k', '—')}"
             + (f", {a['num_shared_experts']} shared" if a.get("num_shared_experts") else "")
             + (f", {a['moe_heads']} MH-MoE heads" if a.get("moe_heads") else "")),
            ("router", f"`{a.get('router', '—')}`"),
            ("MoE sites", f"{a.get('moe_sites', '—')} (LLM layers {a.get('moe_layers', '—')} of "
                          f"{a.get('llm_layers', '—')}, width {a.get('llm_dim', '—')})"),
            ("modalities", ", ".join(cfg.modalities))]
    if a.get("encoders"):
        rows.append(("encoders", ", ".join(f"{k}: {v}" for k, v in a["encoders"].items())))
        rows.append(("tokens per input", ", ".join(f"{k}: {v}" for k, v in a.get("tokens_per_input", {}).items())))
    rows.append(("weights", f"{cfg.recipe.get('weights_dtype', 'float32')} safetensors, computed in float32 by "
                            "`moezoo.load`"))
    return "## Architecture\n\n| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _recipe(cfg: PretrainedCfg) -> str:
    r = cfg.recipe
    config = r.get("config") or "?"
    wall = r.get("wall_time_s")
    rows = [("config", f"`{config}`"), ("seed", _fmt(r.get("seed"))), ("steps", _fmt(r.get("steps"))),
            ("wall time", f"{_duration(wall)} ({r.get('machine') or 'this machine'})" if wall else "—"),
            ("final training loss", _fmt(r.get("final_train_loss")))]
    if r.get("load_entropy") is not None:  # expert-load balance at the answer positions (moezoo.analysis)
        rows.append(("load entropy (answer positions)", _fmt(r.get("load_entropy"))))
    limit = f" --limit {cfg.eval_limit}" if cfg.eval_limit else ""
    dtype = " --bf16" if r.get("weights_dtype") == "bfloat16" else ""
    train = r.get("command") or f"moezoo fit -c {config}"
    lines = ["## Recipe", "", "| | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows), "",
             "Reproduce it (train, then publish: evaluate the stored bytes and write this card):", "", "```bash",
             train, f"moezoo zoo publish MODEL_DIR --name {cfg.name} --config {config} --tasks "
             f"{','.join(cfg.tasks)}{limit}{dtype} --train-facts FACTS.json", "```"]
    return "\n".join(lines)


def _task_table(cfg: PretrainedCfg, task: str) -> str:
    own = cfg.metrics.get(task, {})
    base = cfg.baselines.get(task, {})
    blank, majority = base.get("blank", {}), base.get("majority", {})
    counts = cfg.counts.get(task, {})
    lines = ["| metric | value | blank input | majority answer | N |", "|---|---:|---:|---:|---:|"]
    for metric, value in own.items():
        lines.append(f"| {_metric_name(metric)} | {_fmt(value)} | {_fmt(blank.get(metric))} | "
                     f"{_fmt(majority.get(metric))} | {counts.get(metric, '—')} |")
    return "\n".join(lines)


def _evaluation(cfg: PretrainedCfg) -> str:
    limit = f" --limit {cfg.eval_limit}" if cfg.eval_limit else ""
    parts = ["## Evaluation", "",
             f"`moezoo eval {cfg.name} --tasks {','.join(cfg.tasks)}{limit} --blank-images` on the stored bytes, "
             "computed in float32 (N: the questions behind each figure; the zoo's test re-measures each within 1/N). "
             "Blank input: every image (or clip) replaced by a blank one; majority answer: always the training "
             "split's most frequent answer of the question's type."]
    for task in cfg.tasks:
        parts += ["", f"### {task}", "", _task_table(cfg, task)]
    seeds = cfg.recipe.get("seeds")
    if seeds:
        keys = sorted({(t, m) for s in seeds for t, ms in s.get("metrics", {}).items() for m in ms
                       if "/" not in m})
        head = "| seed | " + " | ".join(f"{t} {_metric_name(m)}" for t, m in keys) + " |"
        lines = [head, "|---|" + "---:|" * len(keys)]
        for s in seeds:
            lines.append(f"| {s.get('seed')} | " + " | ".join(_fmt(s.get("metrics", {}).get(t, {}).get(m))
                                                            for t, m in keys) + " |")
        parts += ["", "### Seeds", "", "Each seed trained with the same recipe; only seed "
                  f"{cfg.recipe.get('seed', 0)}'s weights ship.", "", "\n".join(lines)]
    return "\n".join(parts)


def _use_and_limits(cfg: PretrainedCfg) -> str:
    media = [m for m in cfg.modalities if m != "text"]
    text = ["## Intended use and limitations", "",
            f"A small research and teaching model: it shows how a {'multimodal ' if media else ''}Mixture-of-Experts "
            "model trains and routes, runs offline on a laptop CPU, and is a fixed point for comparing MoE "
            "variants. It knows only its synthetic training domain "
            f"({', '.join(cfg.recipe.get('datasets', [])) or 'see below'}): it is not a general assistant, "
            "its answers outside that domain are meaningless, and its figures hold for the shipped test split "
            "only."]
    if cfg.recipe.get("notes"):
        text += ["", cfg.recipe["notes"]]
    return "\n".join(text)


def _training_data(cfg: PretrainedCfg) -> str:
    lines = ["## Training data", "", "| dataset | licence | source |", "|---|---|---|"]
    for name in cfg.recipe.get("datasets", []):
        d = dataset_licence(name)
        lines.append(f"| {name} | {d.licence} | {d.source} |")
    return "\n".join(lines)


def _files(cfg: PretrainedCfg) -> str:
    lines = ["## Files", "", f"Revision {cfg.revision}. `moezoo.load` checks each file's sha256 before reading "
             "the weights (this card included).", "", "| file | bytes | sha256 |",
             "|---|---:|---|"]
    for f in cfg.files:
        if f.path != CARD_NAME:
            lines.append(f"| {f.path} | {_fmt_int(f.size)} | `{(f.sha256 or '?')[:16]}` |")
    for old in cfg.history:
        digests = ", ".join(f"{p} `{d[:16]}`" for p, d in sorted(old.get("files", {}).items()))
        lines.append(f"\nRevision {old.get('revision')} (replaced): {digests}")
    return "\n".join(lines)


def render_card(cfg: PretrainedCfg) -> str:
    """The model card of shipped entry ``cfg``: YAML front matter, then the body (Markdown)."""
    import yaml

    top = headline(cfg)
    intro = [f"# {cfg.name}", ""]
    if cfg.description:
        intro += [cfg.description, ""]
    if top:
        intro += [f"{top[0]} {_metric_name(top[1])}: **{top[2]:.4f}**.", ""]
    example = {"image": ' --image scene.png "What colour is the circle?"',
               "audio": ' --audio clip.wav "How many beeps are there?"'}
    chat = next((example[m] for m in cfg.modalities if m in example), ' "Hello"')
    intro += ["```python", "import moezoo", "", f'model = moezoo.load("{cfg.name}")   # offline: shipped with moezoo',
              "```", "", f"or `moezoo chat {cfg.name}{chat}`."]
    body = "\n\n".join(["\n".join(intro), _architecture(cfg), _recipe(cfg), _evaluation(cfg), _use_and_limits(cfg),
                        _training_data(cfg), _files(cfg)])
    head = yaml.safe_dump(front_matter(cfg), sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{head}---\n\n{body}\n"
