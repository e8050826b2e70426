"""``moezoo analyze``: report.json through the model on hand-set routers, a shipped model's report, the
self-contained page, --ablate and --compare, and clear errors."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest
import torch

import moezoo
from moezoo.cli import main
from moezoo.convert.testing import tiny_hf_model, tiny_tokenizer

SHIPPED, OTHER = "film_cnn_moe_small.flagship", "film_cnn_moe_small.router_sigmoid"
LIMIT = 6


def _mixtral(path, router: str, expert: int = 2):
    """A tiny Mixtral checkpoint (4 experts, top-2, 2 layers) whose routers are set by hand.

    ``router="zero"``: every router weight 0, so every token's probabilities are uniform (gate entropy 1).
    ``router="one"``: every router's only weight is ``W[expert, 0] = 1e4``. Dimension 0 of the residual
    stream is made 1 for every token (embedding column 0 is 1; no attention output or expert writes to
    it) and the norm before the router keeps it positive, so ``expert``'s logit is about 1e4 * 5.6 and
    every other is 0: the softmax is one-hot (gate entropy 0) and ``expert`` is every token's first choice.
    """
    hf = tiny_hf_model("mixtral")
    with torch.no_grad():
        for layer in hf.model.layers:
            layer.mlp.gate.weight.zero_()
            if router == "one":
                layer.mlp.gate.weight[expert, 0] = 1e4
                layer.self_attn.o_proj.weight[0].zero_()
                layer.mlp.experts.down_proj[:, 0].zero_()
                layer.post_attention_layernorm.weight[0] = 1.0
        if router == "one":
            hf.model.embed_tokens.weight[:, 0] = 1.0
    hf.save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path


def _report(out) -> dict:
    return json.loads((out / "report.json").read_text())


@pytest.mark.parametrize("task", ["text_ppl", "text_mc"])
def test_zero_router_gives_gate_entropy_one(tmp_path, task, capsys):
    ckpt = _mixtral(tmp_path / "ckpt", "zero")
    out = tmp_path / "out"
    assert main(["analyze", str(ckpt), "--task", task, "--limit", "3", "--out", str(out), "--quiet"]) == 0
    report = _report(out)
    assert report["model"] == str(ckpt) and report["task"] == task
    assert report["position"] == ("all" if task == "text_ppl" else "answer")  # perplexity: every position
    assert [entry["layer"] for entry in report["layers"]] == [0, 1]
    for entry in report["layers"]:
        assert entry["num_experts"] == 4 and entry["top_k"] == 2
        assert entry["gate_entropy"] == pytest.approx(1.0, abs=1e-6)  # uniform p: H = ln 4
        assert entry["topk_entropy"] == pytest.approx(1.0, abs=1e-6)  # two equal kept weights
        assert entry["margin"] == pytest.approx(0.0, abs=1e-6)
        assert sum(entry["topk_frequency"]) == pytest.approx(1.0)
    if task == "text_mc":  # one answer position per item
        assert all(entry["num_tokens"] == 3 for entry in report["layers"])


def test_router_scaled_toward_one_expert(tmp_path):
    ckpt = _mixtral(tmp_path / "ckpt", "one", expert=2)
    out = tmp_path / "out"
    assert main(["analyze", str(ckpt), "--task", "text_ppl", "--limit", "2", "--out", str(out), "--quiet"]) == 0
    for entry in _report(out)["layers"]:
        assert entry["gate_entropy"] == pytest.approx(0.0, abs=1e-6)
        assert entry["expert_frequency"] == [0.0, 0.0, 1.0, 0.0]  # expert 2 is every token's top-1
        assert entry["top1_counts"][2] == entry["num_tokens"] > 0
        assert entry["activation_rate"][2] == 1.0
        assert entry["margin"] == pytest.approx(1.0, abs=1e-6)  # renormalised (1, 0)


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("analyze")
    code = main(["analyze", SHIPPED, "--task", "shapes_vqa", "--limit", str(LIMIT), "--out", str(out), "--ablate",
                 "--compare", OTHER, "--batch-size", "4", "--quiet"])
    assert code == 0
    return out


def test_shipped_model_report_json(shipped_run):
    report = _report(shipped_run)
    assert (report["model"], report["task"], report["position"], report["num_examples"]) == \
        (SHIPPED, "shapes_vqa", "answer", LIMIT)
    model = moezoo.load(SHIPPED)
    assert [e["site"] for e in report["layers"]] == ["llm.0", "llm.1"] == list(report["sites"])
    for entry in report["layers"]:
        E = entry["num_experts"]
        assert E == model.language_model.config.moe.num_experts
        assert entry["num_tokens"] == LIMIT  # one answer position per question
        assert len(entry["expert_frequency"]) == len(entry["topk_frequency"]) == E
        assert sum(entry["expert_frequency"]) == pytest.approx(1.0) == sum(entry["topk_frequency"])
        assert entry["never_activated"] == [e for e in range(E) if entry["topk_counts"][e] == 0]
        assert 0.0 <= entry["gate_entropy"] <= 1.0
        for e in range(E):  # an unused expert's accuracy is null (NaN), a used one's in [0, 1]
            acc = entry["expert_accuracy"][e]
            assert (acc is None) == (entry["topk_counts"][e] == 0) and (acc is None or 0 <= acc <= 1)
        # The modality view counts every position: the 16 image tokens and the text of each prompt.
        assert set(entry["modality_frequency"]) == {"image", "text"}
        assert entry["modality_tokens"]["image"] == 16 * LIMIT
    for key in ("figures", "ablation", "compare", "metric"):
        assert key in report


def test_metric_and_answer_positions_agree_with_eval(shipped_run):
    """The accuracy is moezoo eval's on the same questions, and the answer-position counts are those of a
    plain forward over the prompts (moezoo.analysis.answers), not only of the generate's prefill."""
    from moezoo.analysis.answers import answer_topk_counts
    from moezoo.eval.runner import evaluate

    report = _report(shipped_run)
    model = moezoo.load(SHIPPED)
    expected = evaluate(model, ["shapes_vqa"], limit=LIMIT).results["shapes_vqa"]["vqa_accuracy"]
    assert report["metric"] == {"name": "vqa_accuracy", "value": pytest.approx(expected), "higher_is_better": True}
    counts, _ = answer_topk_counts(model, "shapes_vqa", limit=LIMIT)
    assert [e["topk_counts"] for e in report["layers"]] == [c.tolist() for c in counts]


def test_page_is_self_contained_and_holds_the_figures(shipped_run):
    page = (shipped_run / "report.html").read_text()
    report = _report(shipped_run)
    assert not re.search(r"<(script|link|iframe)\b", page) and "href=" not in page and "url(" not in page
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert set(report["figures"]) >= {"load", "entropy", "expert_accuracy", "modality", "ablation", "compare_load"}
    embedded = {base64.b64decode(s.split(",", 1)[1]) for s in sources}
    for name, file in report["figures"].items():
        assert (shipped_run / file).read_bytes() in embedded, name
    for heading in ("Layers", "Accuracy per expert", "Modalities", "Ablation (drop)", "Comparison", "Experts"):
        assert f"<h2>{heading}</h2>" in page


def test_ablation_is_every_expert_sorted_by_effect(shipped_run):
    from moezoo.analysis import ablate
    from moezoo.analysis.records import probe_for

    ablation = _report(shipped_run)["ablation"]
    assert ablation["mode"] == "drop" and ablation["metric"] == "vqa_accuracy"
    rows = ablation["experts"]
    assert sorted((r["site"], r["expert"]) for r in rows) == [(s, e) for s in ("llm.0", "llm.1") for e in range(8)]
    deltas = [r["delta"] for r in rows]
    assert deltas == sorted(deltas)  # accuracy: the largest fall first
    for r in rows:
        assert r["delta"] == pytest.approx(r["value"] - ablation["baseline"])
    model = moezoo.load(SHIPPED)  # the worst one, ablated by hand through the full model
    probe = probe_for(model, "shapes_vqa", limit=LIMIT, batch_size=4)
    with ablate(model, rows[0]["site"], rows[0]["expert"], "drop"):
        assert probe.score(model) == pytest.approx(rows[0]["value"])


def test_compare_puts_model_b_beside(shipped_run):
    report = _report(shipped_run)
    other = report["compare"]
    assert other["model"] == OTHER and other["task"] == "shapes_vqa" and other["num_examples"] == LIMIT
    assert [e["layer"] for e in other["layers"]] == [0, 1] and "ablation" in other
    page = (shipped_run / "report.html").read_text()
    assert f"B: <b>{OTHER}</b>" in page and "gate entropy (B)" in page


def test_reused_embeddings_score_as_the_full_model(tmp_path):
    """Scoring with an LLM site named (the prompt embeddings reused) gives the metric of the records' run."""
    from moezoo.analysis.records import probe_for

    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_cnn").eval()
    probe = probe_for(model, "shapes_vqa", limit=5, batch_size=2)
    records = probe.collect(model)
    assert probe.score(model, "llm.1") == records.value == probe.score(model)


def test_errors(tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["analyze", SHIPPED, "--task", "shapes_vq", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "unknown task 'shapes_vq'" in err and "closest: shapes_vqa" in err and "text_ppl" in err
    assert main(["analyze", "film_cnn_moe_small.flagshp", "--task", "shapes_vqa", "--out", out]) == 2
    assert "film_cnn_moe_small.flagship" in capsys.readouterr().err  # the closest name
    assert main(["analyze", "moe_lm_tiny.text", "--task", "shapes_vqa", "--out", out, "--limit", "2"]) == 2
    assert "no image encoder" in capsys.readouterr().err
    assert main(["analyze", SHIPPED, "--task", "text_mc", "--out", out, "--limit", "0"]) == 2
    assert "--limit 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["analyze", SHIPPED, "--task", "text_mc", "--out", out, "--ablate", "remove"])
    assert "invalid choice: 'remove'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_choices_are_the_library_s():
    from moezoo.analysis.ablation import ABLATION_MODES
    from moezoo.analysis.records import POSITIONS
    from moezoo.cli import analyze

    assert analyze.ABLATION_MODES == ABLATION_MODES and analyze.POSITIONS == POSITIONS


def test_nan_is_written_as_null():
    from moezoo.analysis.report import to_json

    body = json.dumps(to_json({"x": torch.tensor([math.nan, 1.0])}), allow_nan=False)
    assert body == '{"x": [null, 1.0]}'


def test_sites_outside_the_llm_are_reported_and_ablated(tmp_path):
    """An MoE connector routes the image tokens: its entry counts all of them (media positions), with the
    image modality only, and --ablate takes its experts out too (the prompt embeddings recomputed)."""
    from moezoo.analysis.report import analyze

    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_cnn", image_connector={"kind": "moe", "num_experts": 4}).eval()
    report = analyze(model, "shapes_vqa", name="tiny", limit=3, batch_size=2, ablate_mode="zero")
    connector = report["sites"]["connector"]
    assert connector["positions"] == "media" and "connector" not in [e["site"] for e in report["layers"]]
    assert connector["num_tokens"] == 3 * model.num_tokens["image"]
    assert list(connector["modality_frequency"]) == ["image"]
    ablated = {(r["site"], r["expert"]) for r in report["ablation"]["experts"]}
    assert {("connector", e) for e in range(4)} <= ablated and len(ablated) == 4 + 2 * 4
