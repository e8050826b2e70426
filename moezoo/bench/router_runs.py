"""``moezoo bench routers --retrain``: train the router family's recipes, both seeds, and write each variant's
``FACTS.json`` for ``moezoo zoo publish`` (it never publishes by itself).

Each run is ``moezoo fit -c configs/zoo/NAME.yaml --seed_everything S --ckpt_path last`` in a process of
its own, so a stopped run resumes exactly where its last checkpoint left it (the recipes save one every
100 steps). Seed 0 runs in the config's ``runs/zoo/NAME``; seed S > 0 in ``runs/zoo/NAME-seedS`` (its
``default_root_dir`` and checkpoint dir given on the command line). A run whose dir holds
``final_eval.json`` and ``model/`` is complete and skipped: remove the dir to train it again.
Each run's wall time (``moezoo fit`` from start to exit: start-up, training and the final evaluation,
summed over resumed attempts) is kept in ``DIR/train_time.json``.

When every seed of a variant is complete, ``runs/zoo/NAME/FACTS.json`` gets what the card records
(:func:`moezoo.zoo.publish.read_train_facts`): seed 0's ``seed``, ``steps``, ``wall_time_s``,
``machine``, ``command``, ``final_train_loss`` and ``load_entropy``, and ``seeds``: per seed ``{"seed",
"metrics"`` (its final evaluation), ``"final_train_loss"`` (its final evaluation's mean LM loss of the last
training steps), ``"load_entropy"``, ``"load_entropy_questions"``, ``"wall_time_s"``, ``"steps"}``.
``load_entropy`` is :func:`moezoo.analysis.answer_load_entropy` of the trained model over the test
split's answer positions. A ``FACTS.json`` newer than its runs is kept as it is.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

from moezoo.zoo.runs import FACTS, is_complete, machine, run_facts, timed_fit

# Variant -> its recipe, configs/zoo/NAME.yaml (the same NAME names its runs dir and its published tag).
VARIANTS = {"softmax": "router_softmax", "cosine": "router_cosine", "sigmoid": "router_sigmoid",
            "hyper": "router_hyper", "perturbed_cosine": "router_perturbed_cosine", "mh_moe": "mh_moe",
            "shared_expert": "shared_expert"}
ARCH = "film_cnn_moe_small"  # the recipe's architecture: published as ARCH.NAME
TASK = "shapes_vqa"
CARD_TASKS = ("shapes_vqa", "shapes_vqa_typed")  # what the recipes' FinalEvaluation runs and the cards report
RUNS = Path("runs/zoo")
SEEDS = (0, 1)


def config_path(variant: str) -> str:
    """``configs/zoo/NAME.yaml`` of ``variant``.

    Example:
        >>> config_path("mh_moe")
        'configs/zoo/mh_moe.yaml'
    """
    return f"configs/zoo/{VARIANTS[variant]}.yaml"


def run_dir(variant: str, seed: int, runs: str | Path = RUNS) -> Path:
    """Where seed ``seed`` of ``variant`` trains: ``runs/zoo/NAME`` for seed 0, else ``runs/zoo/NAME-seedS``.

    Example:
        >>> run_dir("cosine", 0).as_posix(), run_dir("cosine", 1).as_posix()
        ('runs/zoo/router_cosine', 'runs/zoo/router_cosine-seed1')
    """
    name = VARIANTS[variant]
    return Path(runs) / (name if seed == 0 else f"{name}-seed{seed}")


def fit_args(variant: str, seed: int, runs: str | Path = RUNS) -> list[str]:
    """The ``moezoo fit`` arguments of one run (resuming from its ``last.ckpt`` when there is one).

    Example:
        >>> " ".join(fit_args("sigmoid", 1))  # doctest: +NORMALIZE_WHITESPACE
        'fit -c configs/zoo/router_sigmoid.yaml --seed_everything 1 --trainer.default_root_dir
         runs/zoo/router_sigmoid-seed1 --trainer.callbacks.dirpath runs/zoo/router_sigmoid-seed1/checkpoints
         --ckpt_path last'
    """
    args = ["fit", "-c", config_path(variant), "--seed_everything", str(seed)]
    where = run_dir(variant, seed, runs)
    if where != run_dir(variant, 0, RUNS):  # the config's own dirs otherwise (the ModelCheckpoint is its last callback)
        args += ["--trainer.default_root_dir", where.as_posix(),
                 "--trainer.callbacks.dirpath", (where / "checkpoints").as_posix()]
    return args + ["--ckpt_path", "last"]


def train(variant: str, seed: int, runs: str | Path = RUNS, dry_run: bool = False) -> str:
    """Run (or resume) one recipe in a process of its own; ``"done"`` when it had finished already.

    Returns:
        ``"done"``, ``"dry-run"`` or ``"trained"``.

    Raises:
        RuntimeError: ``moezoo fit`` failed (rerun: it resumes from the last checkpoint).
    """
    where = run_dir(variant, seed, runs)
    args = fit_args(variant, seed, runs)
    if is_complete(where):
        print(f"[{variant} seed {seed}] complete in {where} (remove it to train again)")
        return "done"
    print(f"[{variant} seed {seed}] moezoo {shlex.join(args)}", flush=True)
    if dry_run:
        return "dry-run"
    code = timed_fit(args, where)
    if code != 0 or not is_complete(where):
        raise RuntimeError(f"moezoo {shlex.join(args)} exited with {code} and left no finished run in {where}; "
                           "run the same command again: it resumes from the last checkpoint (--ckpt_path last)")
    return "trained"


def seed_facts(variant: str, seed: int, runs: str | Path = RUNS, limit: int | None = None) -> dict[str, Any]:
    """One finished run's entry of ``seeds``: its final evaluation, load entropy (over the first ``limit`` test
    questions; all by default), the questions behind it, steps and wall time."""
    from moezoo.analysis import answer_load_entropy
    from moezoo.loading import load
    from moezoo.zoo.results import split_results

    where = run_dir(variant, seed, runs)
    final = json.loads((where / "final_eval.json").read_text())
    entry: dict[str, Any] = {"seed": seed, "metrics": {t: split_results(m)[0] for t, m in final["results"].items()}}
    report = answer_load_entropy(load(where / "model"), TASK, limit=limit)
    entry["load_entropy"], entry["load_entropy_questions"] = report["load_entropy"], report["num_positions"]
    facts = run_facts(where)
    entry.update({k: facts[k] for k in ("final_train_loss", "steps", "wall_time_s") if k in facts})
    return entry


def facts_current(variant: str, seeds: tuple[int, ...] = SEEDS, runs: str | Path = RUNS) -> bool:
    """Whether ``FACTS.json`` was written after every seed's run finished (then it is not computed again)."""
    path = run_dir(variant, 0, runs) / FACTS
    if not path.is_file():
        return False
    facts = json.loads(path.read_text())
    finished = max((run_dir(variant, s, runs) / "final_eval.json").stat().st_mtime for s in seeds)
    return [e.get("seed") for e in facts.get("seeds", [])] == list(seeds) and path.stat().st_mtime >= finished


def write_facts(variant: str, seeds: tuple[int, ...] = SEEDS, runs: str | Path = RUNS,
                limit: int | None = None) -> Path:
    """``runs/zoo/NAME/FACTS.json`` from the finished runs of every seed (the first seed's weights ship)."""
    from moezoo.utils.io import atomic_write_text

    entries = [seed_facts(variant, s, runs, limit) for s in seeds]
    first = entries[0]
    ran_on = run_facts(run_dir(variant, seeds[0], runs)).get("machine") or machine()  # the run's threads
    facts: dict[str, Any] = {"seed": first["seed"], "machine": ran_on,
                             "command": f"moezoo fit -c {config_path(variant)} --seed_everything {first['seed']}",
                             "load_entropy": first["load_entropy"], "seeds": entries}
    facts.update({k: first[k] for k in ("steps", "wall_time_s", "final_train_loss") if k in first})
    path = run_dir(variant, 0, runs) / FACTS
    atomic_write_text(path, json.dumps(facts, indent=2) + "\n")
    return path


def publish_command(variant: str, runs: str | Path = RUNS, bf16: bool = True) -> str:
    """The ``moezoo zoo publish`` command of seed 0's model, with the facts ``--retrain`` wrote.

    Example:
        >>> publish_command("hyper")  # doctest: +NORMALIZE_WHITESPACE
        'moezoo zoo publish runs/zoo/router_hyper/model --name film_cnn_moe_small.router_hyper
         --config configs/zoo/router_hyper.yaml --tasks shapes_vqa,shapes_vqa_typed --bf16
         --train-facts runs/zoo/router_hyper/FACTS.json'
    """
    where = run_dir(variant, 0, runs)
    return shlex.join(["moezoo", "zoo", "publish", (where / "model").as_posix(), "--name",
                       f"{ARCH}.{VARIANTS[variant]}", "--config", config_path(variant), "--tasks",
                       ",".join(CARD_TASKS), *(["--bf16"] if bf16 else []), "--train-facts",
                       (where / FACTS).as_posix()])


def retrain(variants: list[str], seeds: tuple[int, ...] = SEEDS, runs: str | Path = RUNS,
            dry_run: bool = False, limit: int | None = None) -> dict[str, Any]:
    """Train every seed of ``variants`` (resuming), write their FACTS.json, print the publish commands.

    ``limit``: the load entropy over the first N test questions (default: all of them).

    Returns:
        ``{"runs": [{"variant", "seed", "dir", "status"}], "facts": {variant: path}, "publish": [commands]}``.
    """
    done: list[dict[str, Any]] = []
    for variant in variants:
        for seed in seeds:
            status = train(variant, seed, runs, dry_run)
            done.append({"variant": variant, "seed": seed, "dir": run_dir(variant, seed, runs).as_posix(),
                         "status": status})
    facts: dict[str, str] = {}
    commands: list[str] = []
    for variant in variants:
        if all(is_complete(run_dir(variant, s, runs)) for s in seeds):
            path = run_dir(variant, 0, runs) / FACTS
            if facts_current(variant, seeds, runs):
                print(f"[{variant}] {path} is up to date (remove it to compute it again)")
            else:
                write_facts(variant, seeds, runs, limit)
                print(f"[{variant}] wrote {path}")
            facts[variant] = path.as_posix()
        commands.append(publish_command(variant, runs))
    print("\nPublish seed 0 of each (it evaluates the stored bytes and writes the card; nothing is published "
          "by --retrain), then `git add checkpoints/` and run `moezoo bench routers`:")
    for command in commands:
        print(f"  {command}")
    return {"runs": done, "facts": facts, "publish": commands}
