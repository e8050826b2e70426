"""``moezoo bench routers``: ``--retrain``'s runs and FACTS.json (with ``moezoo fit`` replaced by a fake that leaves
what a finished run leaves), tiny models published from them into a temporary zoo, and the table the bench then
reads from their cards: every seed's figures, their mean, the load entropy and the training time."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

import moezoo
from moezoo.analysis import answer_load_entropy
from moezoo.bench import router_runs
from moezoo.cli import main
from moezoo.registry.shipped import shipped_entries
from moezoo.zoo import runs as zoo_runs
from moezoo.zoo.publish import publish

VARIANTS = {"softmax": "softmax", "cosine": "cosine"}  # variant -> the tiny model's router
TYPES = ("color", "count", "exists", "position", "shape")
LIMIT = 12  # test questions behind the load entropy (the default is all 500)


def _final_eval(variant: str, seed: int) -> dict[str, float]:
    """A run's made-up final evaluation: distinct figures per variant, seed and question type."""
    base = 0.5 + 0.1 * list(VARIANTS).index(variant) + 0.05 * seed
    results = {"vqa_accuracy": base, "exact_match": base, "num_questions": 500.0, "blank_vqa_accuracy": 0.3,
               "majority_baseline": 0.35}
    results |= {f"vqa_accuracy/{t}": round(base + 0.01 * i, 4) for i, t in enumerate(TYPES)}
    return results


def _fake_fit(variant_of):
    """``subprocess.run`` for ``moezoo fit``: leaves the model dir, final_eval.json and last.ckpt of a finished run."""
    calls = []

    def run(cmd, *args, **kwargs):
        argv = cmd[3:]  # python -m moezoo fit ...
        calls.append(argv)
        root = Path(argv[argv.index("--trainer.default_root_dir") + 1])
        seed = int(argv[argv.index("--seed_everything") + 1])
        variant = variant_of[argv[argv.index("-c") + 1]]
        assert argv[-2:] == ["--ckpt_path", "last"]
        assert argv[argv.index("--trainer.callbacks.dirpath") + 1] == (root / "checkpoints").as_posix()
        torch.manual_seed(seed)
        moezoo.create_model("mm_tiny_cnn", llm={"moe": {"router": VARIANTS[variant]}}).save_pretrained(root / "model")
        (root / "final_eval.json").write_text(json.dumps({"model": "x", "results": {
            "shapes_vqa": _final_eval(variant, seed)}, "train": {"final_lm_loss": 0.4 + seed / 10, "steps_averaged": 50,
                                                               "global_step": 1000}}))
        (root / "checkpoints").mkdir()
        torch.save({"global_step": 1000, "state_dict": {}, "hyper_parameters": {}}, root / "checkpoints" / "last.ckpt")
        return subprocess.CompletedProcess(cmd, 0)

    return run, calls


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """``--retrain`` of two variants into a temp runs dir, and each variant's seed 0 published into a temp zoo."""
    tmp = tmp_path_factory.mktemp("routers")
    runs, root = tmp / "runs", tmp / "checkpoints"
    fake, calls = _fake_fit({router_runs.config_path(v): v for v in VARIANTS})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(zoo_runs.subprocess, "run", fake)
        assert main(["bench", "routers", "--retrain", "--variants", ",".join(VARIANTS), "--runs-dir", str(runs),
                     "--root", str(root), "--limit", str(LIMIT)]) == 0
    facts = {}
    for variant in VARIANTS:
        path = runs / router_runs.VARIANTS[variant] / "FACTS.json"
        facts[variant] = json.loads(path.read_text())
        publish(runs / router_runs.VARIANTS[variant] / "model", f"mm_tiny_cnn.{router_runs.VARIANTS[variant]}",
                ["shapes_vqa"], config=router_runs.config_path(variant), limit=4, train_facts=path, root=root)
    return {"runs": runs, "root": root, "facts": facts, "calls": calls}


def test_retrain_runs_both_seeds_resumably_and_writes_the_facts(zoo):
    runs = zoo["runs"]
    assert len(zoo["calls"]) == 4  # 2 variants x 2 seeds
    for variant, name in ((v, router_runs.VARIANTS[v]) for v in VARIANTS):
        facts = zoo["facts"][variant]
        assert [s["seed"] for s in facts["seeds"]] == [0, 1] and facts["seed"] == 0 and facts["steps"] == 1000
        assert facts["command"] == f"moezoo fit -c configs/zoo/{name}.yaml --seed_everything 0"
        for entry, where in zip(facts["seeds"], (runs / name, runs / f"{name}-seed1")):
            own = {k: v for k, v in _final_eval(variant, entry["seed"]).items()
                   if not k.startswith(("blank_", "majority_")) and k != "num_questions"}
            assert entry["metrics"] == {"shapes_vqa": own}
            # The load entropy is the trained model's at the test split's answer positions.
            expected = answer_load_entropy(moezoo.load(where / "model"), "shapes_vqa", limit=LIMIT)["load_entropy"]
            assert entry["load_entropy"] == pytest.approx(expected, abs=1e-12) and 0 <= expected <= 1
            assert entry["load_entropy_questions"] == LIMIT
            assert entry["wall_time_s"] >= 0 and entry["steps"] == 1000
            assert entry["final_train_loss"] == pytest.approx(0.4 + entry["seed"] / 10)  # the run's last steps' LM loss
            times = json.loads((where / "train_time.json").read_text())
            assert times["attempts"] == 1 and times["torch_threads"] == torch.get_num_threads()
        assert facts["load_entropy"] == facts["seeds"][0]["load_entropy"]
        assert facts["final_train_loss"] == facts["seeds"][0]["final_train_loss"]  # the card's, seed 0's
        assert f", {torch.get_num_threads()} torch thread" in facts["machine"]  # the run's threads


def test_retrain_skips_finished_runs_and_prints_the_publish_commands(zoo, capsys, monkeypatch):
    monkeypatch.setattr(zoo_runs.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was rerun"))
    result = router_runs.retrain(["cosine"], runs=zoo["runs"])
    assert [r["status"] for r in result["runs"]] == ["done", "done"]
    out = capsys.readouterr().out
    assert "FACTS.json is up to date" in out  # newer than both runs: not computed again
    assert ("moezoo zoo publish " + (zoo["runs"] / "router_cosine" / "model").as_posix() +
            " --name film_cnn_moe_small.router_cosine --config configs/zoo/router_cosine.yaml") in out


def test_the_table_gives_every_seed_and_their_mean_from_the_cards(zoo, tmp_path, capsys):
    out = tmp_path / "routers.json"
    assert main(["bench", "routers", "--root", str(zoo["root"]), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    table = json.loads(out.read_text())
    assert [r["variant"] for r in table["variants"]] == list(VARIANTS)
    assert table["missing"] == [v for v in router_runs.VARIANTS if v not in VARIANTS]
    for row in table["variants"]:
        variant, facts = row["variant"], zoo["facts"][row["variant"]]
        card = shipped_entries(zoo["root"])[row["model"]]
        assert row["architecture"]["router"] == VARIANTS[variant]
        seed0, seed1 = row["seeds"]
        # Seed 0 (shipped): the figures measured on the stored bytes at publish time; seed 1: its run's.
        assert seed0["metrics"] == card.metrics["shapes_vqa"] != {}
        assert seed1["metrics"] == facts["seeds"][1]["metrics"]["shapes_vqa"]
        for metric in ("vqa_accuracy", "vqa_accuracy/color", "vqa_accuracy/position"):
            mean = (seed0["metrics"][metric] + seed1["metrics"][metric]) / 2
            assert row["mean"]["metrics"][metric] == pytest.approx(mean)
        assert [s["load_entropy"] for s in row["seeds"]] == [s["load_entropy"] for s in facts["seeds"]]
        assert row["mean"]["load_entropy"] == pytest.approx(sum(s["load_entropy"] for s in facts["seeds"]) / 2)
        assert row["mean"]["wall_time_s"] == pytest.approx(sum(s["wall_time_s"] for s in facts["seeds"]) / 2)
        # The printed lines: seed 0, seed 1, mean, with the overall accuracy and load entropy to 3 decimals.
        lines = printed[printed.index(f"\n{variant} "):].splitlines()[1:4]
        for line, seed in zip(lines, (seed0, seed1, row["mean"])):
            assert f"{seed['metrics']['vqa_accuracy']:.3f}" in line and f"{seed['load_entropy']:.3f}" in line
        assert lines[2].split()[0] == "mean"
    assert "not published yet: sigmoid (configs/zoo/router_sigmoid.yaml)" in printed


def test_with_nothing_published_it_says_how_to_make_them(tmp_path, capsys):
    assert main(["bench", "routers", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "No router-family model is published yet" in out and "moezoo bench routers --retrain" in out


def test_a_card_that_is_not_its_manifests_is_refused(zoo, tmp_path, capsys):
    root = tmp_path / "checkpoints"
    shutil.copytree(zoo["root"], root)
    card = root / "mm_tiny_cnn.router_softmax" / "README.md"
    card.write_text(card.read_text().replace("load_entropy: ", "load_entropy: 1"))
    assert main(["bench", "routers", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert str(card) in err and ("sha256" in err or "size" in err)
