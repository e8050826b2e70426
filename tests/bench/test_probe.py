"""``moezoo bench probe``: a design trained on one question type, scored among that type's answers."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import moezoo
from moezoo.bench import probe
from moezoo.cli import main


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = moezoo.create_model("film_cnn_moe_small")
    return model, probe.probe_data(model, "position", n_train=48, n_eval=12)


def test_the_probe_words_training_and_held_out_questions_as_the_builder_does(model_and_data):
    model, data = model_and_data
    assert {k: len(v) for k, v in data.items()} == {"train": 48, "template": 12, "typed": 12}
    prompts = {k: [model.processor.decode(s.input_ids) for s in v] for k, v in data.items()}
    # The same held-out scenes, asked two ways: the template (with its instruction), then held-out phrasings.
    assert all("Where is the" in p and "relative to the" in p for p in prompts["template"])
    assert prompts["typed"] != prompts["template"]
    answers = {k: [s.labels[probe._first_label(s):] for s in data[k]] for k in ("template", "typed")}
    assert answers["typed"] == answers["template"]  # the same scenes' answers
    assert len(set(prompts["train"])) > 40  # scenes and wordings vary


class _AlwaysFirst(nn.Module):
    """Logits that put the first candidate on top everywhere."""

    def __init__(self, candidates: torch.Tensor, vocab: int):
        super().__init__()
        self.candidates, self.vocab = candidates, vocab

    def forward(self, input_ids, attention_mask=None, pixel_values=None):
        logits = torch.zeros(*input_ids.shape, self.vocab)
        logits[..., self.candidates[0]] = 1.0
        return type("Out", (), {"logits": logits})()


def test_closed_accuracy_scores_the_chosen_answer_against_the_label(model_and_data):
    model, data = model_and_data
    ids = {model.processor.decode([s.labels[probe._first_label(s)]]).strip(): s.labels[probe._first_label(s)]
           for s in data["train"]}
    candidates = torch.tensor([ids[a] for a in probe.answers_of("position") if a in ids])
    samples = data["train"]
    share = sum(s.labels[probe._first_label(s)] == int(candidates[0]) for s in samples) / len(samples)
    fake = _AlwaysFirst(candidates, vocab=model.config.llm.vocab_size)
    assert probe.closed_accuracy(fake, samples, candidates, batch_size=7) == pytest.approx(share)
    assert 0 < share < 1


def test_the_command_trains_and_reports_each_evaluation(tmp_path, capsys):
    out = tmp_path / "probe.json"
    assert main(["bench", "probe", "--question-type", "exists", "--n-train", "32", "--n-eval", "8", "--steps", "4",
                 "--batch-size", "4", "--eval-every", "2", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [row["step"] for row in report["history"]] == [2, 4]
    assert all(0 <= row[k] <= 1 for row in report["history"] for k in ("template", "typed", "train"))
    assert "exists questions only" in capsys.readouterr().out
    with pytest.raises(ValueError, match="closed-answer types"):
        probe.answers_of("color")


def test_a_probe_can_start_from_a_trained_model(tmp_path, capsys):
    torch.manual_seed(1)
    saved = moezoo.create_model("film_cnn_moe_small", vision={"coord_channels": True})
    saved.save_pretrained(tmp_path / "model")
    out = tmp_path / "probe.json"
    assert main(["bench", "probe", "--init", str(tmp_path / "model"), "--n-train", "32", "--n-eval", "4",
                 "--steps", "1", "--batch-size", "4", "--eval-every", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["init"] == str(tmp_path / "model")
    assert f"from {tmp_path / 'model'}" in capsys.readouterr().out
    assert main(["bench", "probe", "--init", str(tmp_path / "model"), "--vision", '{"coord_channels": true}']) != 0
    assert "drop --vision" in capsys.readouterr().err


def test_centre_questions_place_one_object_against_the_middle_and_only_in_training():
    from moezoo.data.scenes import relative_position

    questions = probe._questions("position", 200, seed=0, centre_share=0.5)
    centre = [(scene, posed) for scene, posed in questions if posed.slots["b"] == probe.MIDDLE]
    assert 70 < len(centre) < 130
    for scene, posed in centre:
        (obj,) = [o for o in scene["objects"] if f"{o['color']} {o['shape']}" == posed.slots["a"]]
        assert posed.answer == relative_position(obj, {"x": 32, "y": 32})
    assert not [p for _, p in probe._questions("position", 200, seed=0) if p.slots["b"] == probe.MIDDLE]
