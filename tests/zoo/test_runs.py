"""``moezoo zoo train``: a recipe trained in a process of its own, resumed with ``--ckpt_path last``, timed, and
its card's facts written from what the run left (its last checkpoint, final evaluation and wall time)."""

from __future__ import annotations

import json
import subprocess

import pytest
import torch

from moezoo.cli import main
from moezoo.zoo import runs

RECIPE = """seed_everything: 3
trainer:
  max_steps: 7
  default_root_dir: {root}
  callbacks:
    - class_path: moezoo.train.eval_callbacks.FinalEvaluation
"""


def _fake_fit(calls: list, finish: bool = True):
    """``subprocess.run`` for ``moezoo fit``: a finished run leaves model/, final_eval.json and last.ckpt."""

    def run(cmd, *args, **kwargs):
        argv = cmd[3:]  # python -m moezoo fit ...
        calls.append(argv)
        root = runs.recipe_run_dir(argv[argv.index("-c") + 1])
        (root / "checkpoints").mkdir(parents=True, exist_ok=True)
        torch.save({"global_step": 7, "state_dict": {}, "hyper_parameters": {}}, root / "checkpoints" / "last.ckpt")
        if not finish:
            return subprocess.CompletedProcess(cmd, 1)
        (root / "model").mkdir(exist_ok=True)
        (root / "final_eval.json").write_text(json.dumps({"results": {}, "train": {"final_lm_loss": 1.234567}}))
        return subprocess.CompletedProcess(cmd, 0)

    return run


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(root=(tmp_path / "run").as_posix()))
    return path


def test_train_resumes_times_and_writes_the_cards_facts(recipe, tmp_path, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(runs.subprocess, "run", _fake_fit(calls, finish=False))
    with pytest.raises(RuntimeError, match="resumes from the last checkpoint"):
        runs.train_recipe(recipe)
    monkeypatch.setattr(runs.subprocess, "run", _fake_fit(calls))
    assert main(["zoo", "train", str(recipe), "--notes", "a shortfall"]) == 0
    assert calls == [["fit", "-c", recipe.as_posix(), "--ckpt_path", "last"]] * 2
    facts = json.loads((tmp_path / "run" / "FACTS.json").read_text())
    times = json.loads((tmp_path / "run" / "train_time.json").read_text())
    assert times["attempts"] == 2 and times["wall_time_s"] >= 0
    assert facts == {"seed": 3, "command": f"moezoo fit -c {recipe.as_posix()}", "steps": 7,
                     "wall_time_s": round(times["wall_time_s"], 1), "machine": runs.machine(times["torch_threads"]),
                     "final_train_loss": 1.2346, "notes": "a shortfall"}
    assert "moezoo zoo publish" in capsys.readouterr().out
    # A finished run is not trained again.
    monkeypatch.setattr(runs.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was rerun"))
    runs.train_recipe(recipe)


def test_a_recipe_without_a_run_dir_is_refused(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("trainer:\n  max_steps: 3\n")
    with pytest.raises(ValueError, match="names its run dir"):
        runs.train_recipe(path)


def test_a_recipe_in_stages_trains_them_in_order_and_sums_their_time(tmp_path, monkeypatch):
    stages = []
    for i, evaluates in enumerate((False, True)):
        path = tmp_path / f"stage{i}.yaml"
        text = RECIPE.format(root=(tmp_path / f"run{i}").as_posix())
        path.write_text(text if evaluates else text.split("  callbacks:")[0])
        stages.append(path)
    calls: list = []
    monkeypatch.setattr(runs.subprocess, "run", _fake_fit(calls))
    facts = json.loads(runs.train_recipe(stages).read_text())
    assert [c[2] for c in calls] == [s.as_posix() for s in stages]
    assert facts["command"] == " && ".join(f"moezoo fit -c {s.as_posix()}" for s in stages)
    times = [json.loads((tmp_path / f"run{i}" / "train_time.json").read_text())["wall_time_s"] for i in (0, 1)]
    assert facts["wall_time_s"] == round(sum(times), 1) and facts["steps"] == 7
    assert (tmp_path / "run1" / "FACTS.json").is_file() and not (tmp_path / "run0" / "FACTS.json").exists()
