"""Training a zoo recipe: ``moezoo fit`` in a process of its own, timed, resumable, and the card's facts.

``moezoo zoo train configs/zoo/NAME.yaml`` runs ``moezoo fit -c CONFIG --ckpt_path last`` (so a stopped
run resumes from its last checkpoint), adds the attempt's wall time to ``RUN/train_time.json`` (with the
run's torch threads), and, once the run has finished, writes ``RUN/FACTS.json``: what
``moezoo zoo publish --train-facts`` puts on the card (:func:`moezoo.zoo.publish.read_train_facts`).
``RUN`` is the config's ``trainer.default_root_dir``. The router family trains both seeds of each
variant the same way through ``moezoo bench routers --retrain`` (:mod:`moezoo.bench.router_runs`).

Example:
    >>> recipe_run_dir("configs/zoo/digits_vqa.yaml").as_posix()
    'runs/zoo/digits_vqa'
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TIMES = "train_time.json"
FACTS = "FACTS.json"


def is_complete(where: Path, evaluates: bool = True) -> bool:
    """Whether the run in ``where`` finished: exported (``model/``) and, if its recipe ``evaluates``
    (:class:`~moezoo.train.eval_callbacks.FinalEvaluation`), evaluated (``final_eval.json``)."""
    return (where / "model").is_dir() and (not evaluates or (where / "final_eval.json").is_file())


def add_time(where: Path, seconds: float) -> None:
    """Add one attempt's wall time to ``where/train_time.json`` (with this process's torch threads: the run's)."""
    import torch

    from moezoo.utils.io import atomic_write_text

    record = json.loads((where / TIMES).read_text()) if (where / TIMES).is_file() else {"wall_time_s": 0.0,
                                                                                         "attempts": 0}
    # The run inherits this process's environment (OMP_NUM_THREADS included), so its threads are these.
    record = {"wall_time_s": record["wall_time_s"] + seconds, "attempts": record["attempts"] + 1,
              "torch_threads": torch.get_num_threads()}
    where.mkdir(parents=True, exist_ok=True)
    atomic_write_text(where / TIMES, json.dumps(record, indent=2) + "\n")


def machine(threads: int | None = None) -> str:
    """This machine in a few words, for the card's wall times (``threads``: the run's, default this process's)."""
    import torch

    n = threads or torch.get_num_threads()
    return (f"{os.cpu_count()} CPU cores ({platform.machine()}), {n} torch thread{'s' * (n != 1)}, "
            f"torch {torch.__version__}")


def timed_fit(args: Sequence[str], where: Path) -> int:
    """``moezoo ARGS`` in a process of its own; its wall time is added to ``where``'s record. Returns its exit code."""
    start = time.perf_counter()
    try:
        return subprocess.run([sys.executable, "-m", "moezoo", *args], check=False).returncode
    finally:
        add_time(where, time.perf_counter() - start)


def run_facts(where: Path) -> dict[str, Any]:
    """A finished run's ``steps`` (its last checkpoint's), ``wall_time_s``, ``machine`` and ``final_train_loss``
    (the final evaluation's mean LM loss of the last steps), each only when the run recorded it."""
    from moezoo.train.checkpoints import load_checkpoint

    facts: dict[str, Any] = {}
    last = where / "checkpoints" / "last.ckpt"
    if last.is_file():
        facts["steps"] = int(load_checkpoint(last)["global_step"])
    if (where / TIMES).is_file():
        times = json.loads((where / TIMES).read_text())
        facts["wall_time_s"] = round(times["wall_time_s"], 1)
        facts["machine"] = machine(times.get("torch_threads"))
    final = json.loads((where / "final_eval.json").read_text()) if (where / "final_eval.json").is_file() else {}
    if (final.get("train") or {}).get("final_lm_loss") is not None:
        facts["final_train_loss"] = round(final["train"]["final_lm_loss"], 4)
    return facts


def recipe_run_dir(config: str | Path) -> Path:
    """The recipe's ``trainer.default_root_dir``: where it trains, exports and evaluates."""
    import yaml

    root = ((yaml.safe_load(Path(config).read_text()) or {}).get("trainer") or {}).get("default_root_dir")
    if not root:
        raise ValueError(f"{config}: a zoo recipe names its run dir (trainer.default_root_dir); this one does not")
    return Path(root)


def _train_one(config: str | Path) -> Path:
    """Train (or resume) one recipe unless its run is complete; returns its run dir."""
    where = recipe_run_dir(config)
    args = ["fit", "-c", Path(config).as_posix(), "--ckpt_path", "last"]
    evaluates = "FinalEvaluation" in Path(config).read_text()
    if is_complete(where, evaluates):
        print(f"{where} holds a finished run (remove it to train again)")
        return where
    print(f"moezoo {shlex.join(args)}", flush=True)
    code = timed_fit(args, where)
    if code != 0 or not is_complete(where, evaluates):
        raise RuntimeError(f"moezoo {shlex.join(args)} exited with {code} and left no finished run in {where}; "
                           "run the same command again: it resumes from the last checkpoint")
    return where


def train_recipe(config: str | Path | Sequence[str | Path], notes: str | None = None) -> Path:
    """Train (or resume) the recipe ``config`` and write its run's ``FACTS.json``; returns that path.

    ``config`` may be a list: the stages of one recipe, trained in order (each reads the model the one
    before exported, as the three-stage recipe's do). The facts are the last stage's, with the wall time
    summed over every stage and the command chaining them. A stage already complete is not trained
    again (remove its dir to retrain); the facts are rewritten.

    Raises:
        RuntimeError: ``moezoo fit`` failed or left no finished run (the same call resumes it).
    """
    import yaml

    from moezoo.utils.io import atomic_write_text

    stages = [config] if isinstance(config, (str, Path)) else list(config)
    dirs = [_train_one(stage) for stage in stages]
    last = Path(stages[-1])
    facts = {"seed": (yaml.safe_load(last.read_text()) or {}).get("seed_everything"),
             "command": " && ".join(f"moezoo fit -c {Path(c).as_posix()}" for c in stages), **run_facts(dirs[-1])}
    times = [json.loads((d / TIMES).read_text())["wall_time_s"] for d in dirs if (d / TIMES).is_file()]
    if len(stages) > 1 and len(times) == len(stages):
        facts["wall_time_s"] = round(sum(times), 1)
    elif len(stages) > 1:
        facts.pop("wall_time_s", None)  # a stage's time is unknown: no sum to give
    if notes:
        facts["notes"] = notes
    atomic_write_text(dirs[-1] / FACTS, json.dumps(facts, indent=2) + "\n")
    return dirs[-1] / FACTS
