"""The router family's table (LibMoE's comparison, made reproducible), read from the shipped model cards.

The family is zoo models 6-12: one recipe (configs/zoo/router_*.yaml, mh_moe.yaml, shared_expert.yaml:
the quickstart's architecture and data, 1,000 fixed steps) with only the MoE variant changed, two seeds
each. A published variant's card (``checkpoints/ARCH.TAG/README.md``, found through the registry's
shipped entries, ``$MOEZOO_CHECKPOINTS`` included) records seed 0's figures as measured on the stored
bytes (``model-index``) and every seed's figures in its front matter's ``seeds``
(:mod:`moezoo.zoo.publish`). Per variant the table gives, for each seed and their mean, the VQAv2
accuracy on the shapes-VQA test split (overall and per question type), the expert-load balance at the
answer positions (``load_entropy``, 1 = every expert equally loaded: :mod:`moezoo.analysis`) and the
training wall time. Nothing is loaded or evaluated: it reads the cards, in well under a second.

With no router model published yet it says so and how to make them, and exits 0 (nothing failed:
there is nothing to compare yet). ``--retrain`` trains the recipes (:mod:`moezoo.bench.router_runs`)
and prints the publish commands; it never publishes.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from moezoo.bench.router_runs import SEEDS, TASK, VARIANTS, config_path

METRIC = "vqa_accuracy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", help="the checkpoints folder (default: $MOEZOO_CHECKPOINTS or the package's)")
    parser.add_argument("--task", default=TASK, help="the card task the table shows (default: %(default)s)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the recipes first (both seeds, resuming: moezoo fit ... --ckpt_path last), write "
                             "runs/zoo/NAME/FACTS.json and print the publish commands")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="with --retrain: comma-separated variants")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="with --retrain: comma-separated seeds")
    parser.add_argument("--runs-dir", default="runs/zoo", help="with --retrain: where the runs go")
    parser.add_argument("--dry-run", action="store_true", help="with --retrain: print the commands, run nothing")
    parser.add_argument("--limit", type=int, help="with --retrain: the load entropy over the first N test questions "
                                                  "(default: all)")


def router_cards(root: str | Path | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """Variant -> ``(published name, the card's front matter)`` of every shipped router-family model.

    The card must be the one its manifest lists (size and sha256), so the table shows checked figures.

    Raises:
        ValueError: two shipped models claim one variant (their names are given).
        moezoo.utils.digest.DigestMismatch: a card is not the file its manifest lists.
    """
    from moezoo.registry.shipped import restore_hint, shipped_entries
    from moezoo.shipped import checkpoints_root
    from moezoo.utils.digest import check_file
    from moezoo.zoo.card import CARD_NAME, read_front_matter

    root = Path(root) if root is not None else checkpoints_root()
    by_config = {config_path(v): v for v in VARIANTS}
    found: dict[str, tuple[str, dict[str, Any]]] = {}
    for name, cfg in sorted(shipped_entries(root).items()):
        variant = by_config.get(str(cfg.recipe.get("config")))
        if variant is None:
            continue
        if variant in found:
            raise ValueError(f"{found[variant][0]} and {name} were both trained by {config_path(variant)}: "
                             "ship one model per variant (publish a retrained one with --new-revision)")
        card = root / cfg.location / CARD_NAME
        listed = next((f for f in cfg.files if f.path == CARD_NAME), None)
        if listed is not None:
            check_file(card, listed.size, listed.sha256, restore_hint(card))
        found[variant] = (name, read_front_matter(card.read_text()))
    return found


def _task_metrics(front: dict[str, Any], task: str) -> dict[str, float]:
    for result in (front.get("model-index") or [{}])[0].get("results", []):
        if result.get("task", {}).get("name") == task:
            return {m["type"]: float(m["value"]) for m in result.get("metrics", [])}
    return {}


def variant_seeds(front: dict[str, Any], task: str = TASK) -> list[dict[str, Any]]:
    """Per seed: ``{"seed", "metrics" (the task's figures), "load_entropy", "wall_time_s"}`` from a card's front matter.

    The shipped seed's figures are the card's ``model-index`` (measured on the stored bytes, and re-measured
    by the zoo's test); the other seeds' are their ``seeds`` entries; the shipped seed's load entropy and
    wall time fall back to the recipe's.

    Example:
        >>> front = {"model-index": [{"results": [{"task": {"name": "shapes_vqa"},
        ...          "metrics": [{"type": "vqa_accuracy", "value": 0.8}]}]}],
        ...          "seeds": [{"seed": 0, "metrics": {}}, {"seed": 1, "metrics": {"shapes_vqa": {"vqa_accuracy": 0.6}},
        ...                     "load_entropy": 0.9}],
        ...          "moezoo": {"recipe": {"seed": 0, "load_entropy": 0.95, "wall_time_s": 600.0}}}
        >>> [(s["seed"], s["metrics"], s["load_entropy"], s["wall_time_s"]) for s in variant_seeds(front)]
        [(0, {'vqa_accuracy': 0.8}, 0.95, 600.0), (1, {'vqa_accuracy': 0.6}, 0.9, None)]
    """
    recipe = (front.get("moezoo") or {}).get("recipe") or {}
    shipped = recipe.get("seed", 0)
    entries = front.get("seeds") or [{"seed": shipped}]
    rows = []
    for entry in entries:
        own = entry.get("seed") == shipped
        metrics = _task_metrics(front, task) if own else {}
        metrics = metrics or {k: float(v) for k, v in (entry.get("metrics") or {}).get(task, {}).items()}
        fallback = recipe if own else {}
        rows.append({"seed": entry.get("seed"), "metrics": metrics,
                     "load_entropy": entry.get("load_entropy", fallback.get("load_entropy")),
                     "wall_time_s": entry.get("wall_time_s", fallback.get("wall_time_s"))})
    return rows


def _mean(values: list[Any]) -> float | None:
    if not values or any(v is None or math.isnan(float(v)) for v in values):
        return None  # a mean over some of the seeds would not be comparable with the others
    return sum(float(v) for v in values) / len(values)


def seed_mean(seeds: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean over seeds of every figure; ``None`` where a seed lacks it.

    Example:
        >>> seed_mean([{"metrics": {"acc": 0.5}, "load_entropy": 0.9, "wall_time_s": 10.0},
        ...            {"metrics": {"acc": 0.7}, "load_entropy": None, "wall_time_s": 20.0}])
        {'metrics': {'acc': 0.6}, 'load_entropy': None, 'wall_time_s': 15.0}
    """
    keys = list(dict.fromkeys(k for s in seeds for k in s["metrics"]))
    return {"metrics": {k: _mean([s["metrics"].get(k) for s in seeds]) for k in keys},
            "load_entropy": _mean([s.get("load_entropy") for s in seeds]),
            "wall_time_s": _mean([s.get("wall_time_s") for s in seeds])}


def router_table(root: str | Path | None = None, task: str = TASK) -> dict[str, Any]:
    """The table's data: every published variant with its seeds and their mean, and the variants not published."""
    cards = router_cards(root)
    rows = []
    for variant in VARIANTS:
        if variant not in cards:
            continue
        name, front = cards[variant]
        seeds = variant_seeds(front, task)
        block = front.get("moezoo") or {}
        rows.append({"variant": variant, "model": name, "config": config_path(variant),
                     "architecture": block.get("architecture", {}), "params_total": block.get("params_total"),
                     "params_active": block.get("params_active"), "seeds": seeds, "mean": seed_mean(seeds)})
    missing = [v for v in VARIANTS if v not in cards]
    return {"benchmark": "routers", "task": task, "metric": METRIC, "variants": rows, "missing": missing}


def _fmt(value: Any, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f} min"


def format_table(table: dict[str, Any]) -> str:
    """The table as text: one line per seed and one for their mean, per variant."""
    rows = table["variants"]
    types = sorted({k.split("/", 1)[1] for r in rows for s in r["seeds"] for k in s["metrics"]
                    if k.startswith(f"{METRIC}/")})
    head = ["variant", "seed", "overall", *types, "load_entropy", "train time"]
    widths = [max(16, *(len(r["variant"]) for r in rows)), 4, 7, *(max(6, len(t)) for t in types), 12, 10]
    lines = [(f"{table['task']} test split: VQAv2 accuracy, overall and per question type (seed 0 ships: its figures "
              "are the card's, measured on the stored bytes);"),
             ("load_entropy: H(top-k expert shares) / ln E at the answer positions (1 = even load); train time: "
              "moezoo fit's wall time"),
             "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    for row in rows:
        for i, s in enumerate([*row["seeds"], {"seed": "mean", **row["mean"]}]):
            cells = [row["variant"] if i == 0 else "", str(s["seed"]), _fmt(s["metrics"].get(METRIC)),
                     *(_fmt(s["metrics"].get(f"{METRIC}/{t}")) for t in types), _fmt(s.get("load_entropy")),
                     _minutes(s.get("wall_time_s"))]
            lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(cells, widths))))
    return "\n".join(lines)


def none_published_message(root: Path) -> str:
    return (f"No router-family model is published yet: no model in {root} was trained by configs/zoo/router_*.yaml, "
            "mh_moe.yaml or shared_expert.yaml.\n"
            "Make them (7 variants x 2 seeds, about 10 minutes a run on 2 CPU cores; a stopped run resumes):\n"
            "  moezoo bench routers --retrain\n"
            "then publish seed 0 of each with the `moezoo zoo publish ...` commands it prints, and run "
            "`moezoo bench routers` again.")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from moezoo.shipped import checkpoints_root

    result: dict[str, Any] = {}
    if args.retrain:
        from moezoo.bench.router_runs import retrain

        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown router variants {unknown}; the family: {', '.join(VARIANTS)}")
        seeds = tuple(int(s) for s in args.seeds.split(","))
        result["retrain"] = retrain(variants, seeds, args.runs_dir, args.dry_run, args.limit)
        print()
    root = Path(args.root) if args.root else checkpoints_root()
    table = router_table(root, args.task)
    if not table["variants"]:
        print(none_published_message(root))
    else:
        print(f"moezoo bench routers: the router family, from the cards in {root}")
        print(format_table(table))
        if table["missing"]:
            print("not published yet: " + ", ".join(f"{v} ({config_path(v)})" for v in table["missing"]))
    return {**table, **result}
