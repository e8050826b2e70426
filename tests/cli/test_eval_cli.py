"""``moezoo eval``: a saved model on shipped tasks, the table, the JSON of the design card, clear errors."""

from __future__ import annotations

import json

import pytest

import moezoo
from moezoo.cli import main


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    moezoo.create_model("mm_tiny_cnn").save_pretrained(root / "mm")
    moezoo.create_model("moe_lm_tiny").save_pretrained(root / "lm")
    return root


def test_list_names_every_shipped_task(capsys, tmp_path):
    (tmp_path / "t.yaml").write_text("task: my_local_task\n")
    assert main(["eval", "--list", "--include-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for name in ("shapes_vqa", "digits_vqa", "text_ppl", "text_mc", "my_local_task"):
        assert name in out


def test_vqa_eval_prints_per_type_table_and_writes_the_json(saved, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["eval", str(saved / "mm"), "--tasks", "shapes_vqa,text_mc", "--limit", "5", "--batch-size", "4",
                 "--blank-images", "--json", str(out), "--no-progress"])
    assert code == 0
    printed = capsys.readouterr().out
    body = json.loads(out.read_text())
    assert body["model"] == str(saved / "mm")
    vqa = body["results"]["shapes_vqa"]
    for key in ("vqa_accuracy", "exact_match", "blank_vqa_accuracy", "majority_baseline", "num_questions"):
        assert key in vqa
    assert vqa["num_questions"] == 5.0
    assert {"acc", "acc_norm"} <= set(body["results"]["text_mc"])
    assert "VQAv2 accuracy per question type" in printed
    table = printed.split("VQAv2 accuracy per question type")[1]
    assert "blank" in table and "majority" in table and "overall" in table


def test_errors_are_one_line_with_what_is_right(saved, capsys):
    assert main(["eval", str(saved / "lm"), "--tasks", "shapes_vqa", "--limit", "2"]) == 2
    assert "no image encoder" in capsys.readouterr().err
    assert main(["eval", str(saved / "lm")]) == 2
    assert "--tasks" in capsys.readouterr().err


def test_lm_eval_tasks_from_include_path(saved, tmp_path, monkeypatch):
    """Local multiple-choice, generation and rolling tasks through `moezoo eval --include-path`, offline;
    the numbers are the adapter's on the loaded model."""
    pytest.importorskip("lm_eval")
    from moezoo.eval.harness.lm_eval import run_lm_eval

    from tests.eval.test_lm_eval_adapter import GEN, MC, PPL, write_tasks

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tasks = write_tasks(tmp_path / "tasks", tmp_path / "cache")
    out = tmp_path / "r.json"
    assert main(["eval", str(saved / "lm"), "--tasks", f"{MC},{GEN},{PPL},text_mc", "--include-path", str(tasks),
                 "--limit", "4", "--json", str(out), "--no-progress"]) == 0
    results = json.loads(out.read_text())["results"]
    assert set(results) == {MC, GEN, PPL, "text_mc"}
    expected = run_lm_eval(moezoo.load(saved / "lm"), [MC, GEN, PPL], include_path=tasks, limit=4, batch_size=32)
    for task in (MC, GEN, PPL):
        assert results[task] == pytest.approx(expected[task])


def test_bad_task_files_and_names(saved, tmp_path, capsys):
    pytest.importorskip("lm_eval")
    (tmp_path / "broken.yaml").write_text("task: broken\ndataset_path: [unclosed\n")
    assert main(["eval", str(saved / "lm"), "--tasks", "broken", "--include-path", str(tmp_path)]) == 2
    assert f"task file {tmp_path / 'broken.yaml'} is not valid YAML" in capsys.readouterr().err
    (tmp_path / "broken.yaml").unlink()
    (tmp_path / "nodata.yaml").write_text("task: nodata\noutput_type: multiple_choice\n")
    assert main(["eval", str(saved / "lm"), "--tasks", "nodata", "--include-path", str(tmp_path)]) == 2
    assert "(task 'nodata') has no dataset_path" in capsys.readouterr().err
