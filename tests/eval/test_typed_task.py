"""The typed VQA tasks: the shipped test questions as people type them, scored as the templated tasks are."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

import moezoo
from moezoo.cli import main
from moezoo.data.shards import shipped_dataset
from moezoo.eval.generation import generate_answers
from moezoo.eval.metrics import vqa_accuracy
from moezoo.eval.tasks import TASKS
from moezoo.train.eval_callbacks import VQAEvalCallback

SHAPES = shipped_dataset("shapes-vqa")
SHORT = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def mm_model():
    return moezoo.create_model("mm_tiny_cnn").eval()


@pytest.mark.parametrize("name, n", [("shapes_vqa", 500), ("digits_vqa", 400)])
def test_typed_items_ask_the_test_questions_about_the_same_images(name, n):
    templated, typed = TASKS[name].items(), TASKS[f"{name}_typed"].items()
    assert len(templated) == len(typed) == n
    questions = {q["question_id"]: q for q in json.loads(
        (shipped_dataset(TASKS[name].dataset) / "test_typed_questions.json").read_text())["questions"]}
    for t, q in zip(templated, typed):
        assert (q["question_id"], q["question_type"], q["answers"]) == (t["question_id"], t["question_type"],
                                                                         t["answers"])
        assert np.array_equal(np.asarray(q["image"]), np.asarray(t["image"]))
        assert q["question"] != t["question"] and q["prompt"] == questions[q["question_id"]]["prompt"]
        assert q["prompt"] in (q["question"], q["question"] + SHORT)  # asked as typed: with or without the instruction
    assert Counter(q["instruction"] for q in typed) == {"after": n // 2, "none": n // 2}
    if name == "shapes_vqa":  # both spellings, on every question type
        spellings = Counter((q["question_type"], q["spelling"]) for q in typed)
        assert spellings[("color", "british")] == spellings[("color", "american")] == 50


def test_typed_task_asks_the_typed_prompts_and_reports_what_shapes_vqa_reports(mm_model):
    task = TASKS["shapes_vqa_typed"]
    result = task.run(mm_model, limit=10, batch_size=4, blank_images=True)
    items = task.items(limit=10)
    prompts = [f"<image>\n{it['prompt']}" for it in items]  # exactly as typed: no normalising, no instruction added
    images = [[it["image"]] for it in items]
    assert [r["prediction"] for r in result.rows] == generate_answers(mm_model, prompts, images, max_new_tokens=16)
    for row, item in zip(result.rows, items):
        assert row["vqa_accuracy"] == vqa_accuracy(row["prediction"], item["answers"])
        assert (row["instruction"], row["spelling"], row["phrasing"]) == (item["instruction"], item["spelling"],
                                                                          item["phrasing"])
    templated = TASKS["shapes_vqa"].run(mm_model, limit=10, batch_size=4, blank_images=True)
    assert set(result.metrics) == set(templated.metrics)  # the same keys, so the two sit side by side
    assert result.metrics["num_questions"] == 10
    assert result.metrics["majority_baseline"] == templated.metrics["majority_baseline"]  # same answers
    assert result.metrics["vqa_accuracy"] == pytest.approx(sum(r["vqa_accuracy"] for r in result.rows) / 10)


def test_moezoo_eval_lists_and_runs_the_typed_tasks(tmp_path, capsys):
    assert main(["eval", "--list"]) == 0
    listed = capsys.readouterr().out
    assert "shapes_vqa_typed" in listed and "digits_vqa_typed" in listed
    moezoo.create_model("mm_tiny_cnn").save_pretrained(tmp_path / "mm")
    out = tmp_path / "results.json"
    assert main(["eval", str(tmp_path / "mm"), "--tasks", "shapes_vqa,shapes_vqa_typed,digits_vqa_typed", "--limit",
                 "3", "--batch-size", "4", "--json", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results["shapes_vqa_typed"]) == set(results["shapes_vqa"])
    assert results["digits_vqa_typed"]["num_questions"] == 3.0
    assert "shapes_vqa_typed: VQAv2 accuracy per question type" in capsys.readouterr().out


def test_the_training_callback_takes_a_typed_task():
    assert VQAEvalCallback("shapes_vqa_typed", limit=4).task is TASKS["shapes_vqa_typed"]


def test_a_dataset_without_the_typed_test_says_how_to_make_it(tmp_path):
    from moezoo.data.scenes import build_shapes_vqa
    from moezoo.data.vqa import VQABuildConfig

    build_shapes_vqa(tmp_path, VQABuildConfig(n_train=2, n_val=0, n_test=3, n_captions=0))
    assert len(TASKS["shapes_vqa_typed"].items(root=tmp_path)) == 3
    (tmp_path / "test_typed_questions.json").unlink()
    with pytest.raises(FileNotFoundError, match="moezoo data build shapes-vqa"):
        TASKS["shapes_vqa_typed"].items(root=tmp_path)
