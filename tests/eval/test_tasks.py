"""The shipped tasks and ``evaluate``: prompts as in training, rows as the model answers, metrics as the rows say."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest

import moezoo
from moezoo.data.shards import shipped_dataset
from moezoo.eval.generation import generate_answers
from moezoo.eval.language import multiple_choice, perplexity
from moezoo.eval.metrics import exact_match, vqa_accuracy
from moezoo.eval.runner import EvalReport, evaluate, local_task_names, split_tasks
from moezoo.eval.tasks import TASKS


SHAPES = shipped_dataset("shapes-vqa")
TEXT = shipped_dataset("text")
SHORT = "\nAnswer the question using a single word or phrase."


@pytest.fixture(scope="module")
def mm_model():
    return moezoo.create_model("mm_tiny_cnn").eval()


def test_vqa_items_follow_the_shipped_split_and_its_vqav2_annotations(read_split):
    items = TASKS["shapes_vqa"].items(limit=5)
    samples = list(read_split(SHAPES, "test").values())[:5]
    annotations = {a["question_id"]: a for a in json.loads((SHAPES / "test_annotations.json").read_text())["annotations"]}
    for item, sample in zip(items, samples):
        body = json.loads(sample["json"])
        assert (item["question_id"], item["question"], item["question_type"]) == (
            body["question_id"], body["question"], body["question_type"])
        assert item["answers"] == [a["answer"] for a in annotations[body["question_id"]]["answers"]]
        assert item["image"].size == (64, 64)


def test_majority_baseline_is_the_most_frequent_training_answer(read_split):
    counts: dict[str, Counter] = {}
    for sample in read_split(SHAPES, "train").values():
        body = json.loads(sample["json"])
        counts.setdefault(body["question_type"], Counter())[body["answer"]] += 1
    majority = TASKS["shapes_vqa"].majority_answers()
    assert set(majority) == {"color", "shape", "count", "position", "exists"}
    for qtype, c in counts.items():
        assert c[majority[qtype]] == max(c.values())


def test_vqa_task_answers_with_the_training_prompt_and_scores_the_rows(mm_model, read_split):
    task = TASKS["shapes_vqa"]
    result = task.run(mm_model, limit=6, batch_size=4, blank_images=True)
    items = task.items(limit=6)
    # The prompt is the training conversation's human turn (LLaVA-1.5's short-answer VQA prompt).
    first = json.loads(next(iter(read_split(SHAPES, "test").values()))["json"])
    prompt = first["conversations"][0]["value"]
    assert prompt == f"<image>\n{items[0]['question']}{SHORT}"
    prompts = [f"<image>\n{it['question']}{SHORT}" for it in items]
    images = [[it["image"]] for it in items]
    expected = generate_answers(mm_model, prompts, images, max_new_tokens=16)
    assert [r["prediction"] for r in result.rows] == expected
    blank = generate_answers(mm_model, prompts, images, max_new_tokens=16, blank_images=True)
    assert [r["blank_prediction"] for r in result.rows] == blank
    for row, item in zip(result.rows, items):
        assert row["vqa_accuracy"] == vqa_accuracy(row["prediction"], item["answers"])
        assert row["exact_match"] == exact_match(row["prediction"], item["answers"][0])
    m = result.metrics
    assert m["num_questions"] == 6
    assert m["vqa_accuracy"] == pytest.approx(sum(r["vqa_accuracy"] for r in result.rows) / 6)
    for qtype in {r["question_type"] for r in result.rows}:
        rows = [r for r in result.rows if r["question_type"] == qtype]
        assert m[f"vqa_accuracy/{qtype}"] == pytest.approx(sum(r["vqa_accuracy"] for r in rows) / len(rows))
        assert m[f"blank_vqa_accuracy/{qtype}"] == pytest.approx(
            sum(r["blank_vqa_accuracy"] for r in rows) / len(rows))


def test_text_tasks_are_the_language_metrics_on_the_held_out_corpus(read_split):
    model = moezoo.create_model("moe_lm_tiny").eval()
    texts = [s["txt"].decode() for s in list(read_split(TEXT, "val").values())[:3]]
    ppl = TASKS["text_ppl"].run(model, limit=3).metrics
    assert ppl == pytest.approx({k: float(v) for k, v in perplexity(model, texts).items()})
    assert ppl["perplexity"] == pytest.approx(math.exp(ppl["nll_per_token"]))
    items = TASKS["text_mc"].items(limit=5)
    assert items == TASKS["text_mc"].items(limit=5)  # seeded: the same task every run
    for item in items:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        assert len(item["context"].split()) == 12
        assert any(t.split()[:12] == item["context"].split() and " ".join(t.split()[12:20]) ==
                   item["choices"][item["label"]] for t in (s["txt"].decode() for s in read_split(TEXT, "val").values()))
    mc = TASKS["text_mc"].run(model, limit=5).metrics
    assert {k: mc[k] for k in ("acc", "acc_norm")} == pytest.approx(multiple_choice(model, items))


def test_evaluate_report_json_is_the_design_contract(tmp_path):
    model = moezoo.create_model("moe_lm_tiny").eval()
    report = evaluate(model, ["text_mc", "text_ppl"], name="moe_lm_tiny", limit=3)
    path = report.save(tmp_path / "r.json")
    body = json.loads(path.read_text())
    assert body["model"] == "moe_lm_tiny" and set(body["results"]) == {"text_mc", "text_ppl"}
    assert all(isinstance(v, float) for m in body["results"].values() for v in m.values())
    assert "text_ppl" in report.table() and "perplexity" in report.table()


def test_bad_task_requests_say_what_is_known(tmp_path, monkeypatch):
    shipped = "shapes_vqa, digits_vqa, tones_qa, shapes_vqa_typed, digits_vqa_typed, text_ppl, text_mc"
    with pytest.raises(ValueError, match=f"shipped tasks: {shipped}"):
        split_tasks([" "])
    with pytest.raises(FileNotFoundError, match="no such directory"):
        split_tasks(["text_ppl"], include_path=tmp_path / "missing")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lm_eval" else real(name, *a))
    with pytest.raises(ValueError, match=r"'shapes_vq' \(closest: shapes_vqa.*moezoo\[eval\]"):
        split_tasks(["shapes_vq"])
    text_model = moezoo.create_model("moe_lm_tiny").eval()
    with pytest.raises(ValueError, match="no image encoder"):
        evaluate(text_model, ["shapes_vqa"], limit=2)


def test_local_task_names_reads_lm_eval_yamls(tmp_path):
    (tmp_path / "a.yaml").write_text("task: my_mc\ndataset_path: json\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yaml").write_text("# a comment\ntask: 'my_gen'\n")
    (tmp_path / "c.yaml").write_text("group: nothing\n")
    assert local_task_names(tmp_path) == ["my_mc", "my_gen"]


def test_report_table_lines_up():
    table = EvalReport("m", {"shapes_vqa": {"vqa_accuracy": 0.25}, "text_ppl": {"perplexity": 12.5}}).table()
    assert table.splitlines()[1:] == ["shapes_vqa  vqa_accuracy  0.2500", "text_ppl    perplexity    12.5000"]


def test_audio_task_asks_with_the_clip_and_blanks_it_with_silence(read_split):
    model = moezoo.create_model("uni_moe_tiny_image_audio").eval()
    task = TASKS["tones_qa"]
    items = task.items(limit=4)
    first = json.loads(next(iter(read_split(shipped_dataset("tones-qa"), "test").values()))["json"])
    assert first["conversations"][0]["value"] == f"<audio>\n{items[0]['question']}{SHORT}"
    wave, rate = items[0]["audio"]
    assert wave.ndim == 1 and rate == 8000
    result = task.run(model, limit=4, batch_size=2, blank_images=True)
    prompts = [f"<audio>\n{it['question']}{SHORT}" for it in items]
    clips = [[it["audio"]] for it in items]
    assert [r["prediction"] for r in result.rows] == generate_answers(model, prompts, audios=clips)
    silent = [[(wave * 0, rate)] for (wave, rate), in clips]
    assert [r["blank_prediction"] for r in result.rows] == generate_answers(model, prompts, audios=silent)
    assert set(result.metrics) >= {"vqa_accuracy", "blank_vqa_accuracy", "majority_baseline"}
