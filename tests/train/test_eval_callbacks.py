"""The evaluation callbacks inside a fit: metrics logged, JSON tables written, W&B tables, and under
two processes each rank answers its shard and every rank ends with the single-process metrics."""

from __future__ import annotations

import itertools
import json
import string
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest

from moezoo.data.shards import shipped_dataset
from moezoo.eval.tasks import TASKS
from moezoo.train.datamodule import ShardDataModule
from moezoo.train.eval_callbacks import LMEvalCallback, VQAEvalCallback
from moezoo.train.module import MoEZooModule

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fit(tmp_path: Path, shapes_dir, callbacks, logger=False) -> tuple[pl.Trainer, MoEZooModule]:
    # fast_dev_run replaces the logger by a dummy, so a run that must log takes one step instead.
    run = {"fast_dev_run": True} if logger is False else {"max_steps": 1, "limit_val_batches": 1,
                                                           "num_sanity_val_steps": 0}
    dm = ShardDataModule(shapes_dir, processor="mm_tiny_cnn", batch_size=4, resampled=False, shuffle_buffer=0)
    module = MoEZooModule(arch="mm_tiny_cnn", stage="finetune", lr=1e-3)
    trainer = pl.Trainer(**run, accelerator="cpu", enable_progress_bar=False, enable_model_summary=False,
                         callbacks=callbacks, logger=logger, default_root_dir=tmp_path)
    trainer.fit(module, datamodule=dm)
    return trainer, module


# Independent VQAv2 scoring for the shipped shapes questions, whose answers are single plain words:
# lower case, no punctuation, no articles, number words as digits (the official rules, as they apply
# to such answers), then the official accuracy: min(#humans who gave it / 3, 1), averaged over the
# 10 subsets of 9 of the 10 human answers.
_NUMBERS = {w: str(i) for i, w in enumerate(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                                 "nine", "ten"])}


def _normalised(text: str) -> str:
    words = "".join(c for c in text.lower() if c not in string.punctuation).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in ("a", "an", "the"))


def _vqa_by_hand(prediction: str, humans: list[str]) -> float:
    pred = _normalised(prediction)
    subsets = itertools.combinations(humans, len(humans) - 1)
    scores = [min(sum(_normalised(h) == pred for h in subset) / 3, 1.0) for subset in subsets]
    return sum(scores) / len(scores)


def _majority_by_hand(train: dict[str, dict[str, bytes]]) -> dict[str, str]:
    """Question type -> the most frequent training answer (ties: the one seen first, in split order)."""
    counts: dict[str, dict[str, int]] = {}
    for key in train:  # split order
        body = json.loads(train[key]["json"])
        seen = counts.setdefault(body["question_type"], {})
        seen[body["answer"]] = seen.get(body["answer"], 0) + 1
    return {qtype: max(seen, key=lambda a: (seen[a], -list(seen).index(a))) for qtype, seen in counts.items()}


def test_callbacks_run_in_a_fast_dev_run_fit_and_leave_their_tables(tmp_path, shapes_dir, read_split):
    vqa = VQAEvalCallback("shapes_vqa", limit=6, batch_size=4, out_dir=str(tmp_path / "eval"))
    lm = LMEvalCallback(["text_ppl", "text_mc"], limit=3, out_dir=str(tmp_path / "eval"))
    trainer, module = _fit(tmp_path, shapes_dir, [vqa, lm])
    for task in ("shapes_vqa", "text_ppl", "text_mc"):
        table = json.loads((tmp_path / "eval" / f"{task}-step1.json").read_text())
        assert table["task"] == task and table["metrics"] == vqa.results.get(task, lm.results.get(task))
    rows = json.loads((tmp_path / "eval" / "shapes_vqa-step1.json").read_text())["rows"]
    assert [r["question_id"] for r in rows] == [it["question_id"] for it in TASKS["shapes_vqa"].items(6)]
    assert trainer.callback_metrics["eval/text_ppl/perplexity"] == pytest.approx(lm.results["text_ppl"]["perplexity"])

    # Every score in the table, recomputed from the shipped files with the rules above.
    root = shipped_dataset("shapes-vqa")
    annotations = json.loads((root / "test_annotations.json").read_text())["annotations"]
    humans = {a["question_id"]: [h["answer"] for h in a["answers"]] for a in annotations}
    majority = _majority_by_hand(read_split(root, "train"))
    expected = []
    for row in rows:
        answers = humans[row["question_id"]]
        truth = {"vqa_accuracy": _vqa_by_hand(row["prediction"], answers),
                 "exact_match": float(_normalised(row["prediction"]) == _normalised(answers[0])),
                 "majority_baseline": _vqa_by_hand(majority[row["question_type"]], answers)}
        assert row["answer"] == answers[0]
        assert {k: row[k] for k in truth} == pytest.approx(truth), row
        expected.append(truth | {"question_type": row["question_type"]})
    assert any(e["majority_baseline"] == 1.0 for e in expected)  # the check meets a correct answer too
    metrics = vqa.results["shapes_vqa"]
    assert metrics["num_questions"] == 6
    for name in ("vqa_accuracy", "exact_match", "majority_baseline"):
        assert metrics[name] == pytest.approx(sum(e[name] for e in expected) / 6), name
        for qtype in {e["question_type"] for e in expected}:
            mine = [e[name] for e in expected if e["question_type"] == qtype]
            assert metrics[f"{name}/{qtype}"] == pytest.approx(sum(mine) / len(mine)), (name, qtype)
    assert trainer.callback_metrics["eval/shapes_vqa/vqa_accuracy"] == pytest.approx(metrics["vqa_accuracy"])
    # The callback scored the trained model as `evaluate` scores it.
    from moezoo.eval.runner import evaluate

    direct = evaluate(module.model, ["shapes_vqa"], limit=6).results["shapes_vqa"]
    assert {k: direct[k] for k in metrics} == pytest.approx(metrics)


def test_tables_go_to_wandb_offline(tmp_path, shapes_dir, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(offline=True, save_dir=str(tmp_path), project="moezoo-test")
    _fit(tmp_path, shapes_dir, [VQAEvalCallback("shapes_vqa", every_n_epochs=None, every_n_steps=1, limit=4, batch_size=4)],
         logger=logger)
    logger.experiment.finish()
    tables = list(Path(tmp_path, "wandb").glob("offline-run-*/files/media/table/eval/shapes_vqa/table_*.table.json"))
    assert len(tables) == 1
    body = json.loads(tables[0].read_text())
    assert "prediction" in body["columns"] and len(body["data"]) == 4


def test_bad_callback_config_fails_early():
    with pytest.raises(ValueError, match="not a VQA task; known: shapes_vqa, digits_vqa"):
        VQAEvalCallback("text_ppl")
    with pytest.raises(ValueError, match="every_n_steps=0 must be >= 1"):
        VQAEvalCallback(every_n_steps=0)


DDP_SCRIPT = Path(__file__).with_name("ddp_vqa_eval.py")


@pytest.mark.multiprocess
def test_two_processes_answer_their_shards_and_agree_with_one(tmp_path):
    """Each rank answers every other question; the gathered metrics equal one process's."""
    runs = {}
    for devices in (1, 2):
        out = tmp_path / f"d{devices}"
        result = subprocess.run([sys.executable, str(DDP_SCRIPT), str(out), str(devices)], capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[devices] = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    (single,), (rank0, rank1) = runs[1], runs[2]
    assert single["checksum"] == rank0["checksum"] == rank1["checksum"]  # one model everywhere
    assert rank0["metrics"] == rank1["metrics"] == pytest.approx(single["metrics"])
    assert single["answered"] == 7 and rank0["answered"] == rank1["answered"] == 4  # 7 questions + 1 padding row
    assert rank0["rows"] == single["rows"] and len(single["rows"]) == 7
