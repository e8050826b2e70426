"""tones-qa: answers agree with the audio, builds are reproducible, and the audio path trains on it.

The oracle here hears the clips itself: it decodes each WAV with the standard library's
``wave``, finds the beeps from the energy envelope and their pitch from an FFT peak, and
answers each question from that alone (not from the generator's code or its JSON).
"""

from __future__ import annotations

import io
import json
import random
import re
import wave
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import moezoo
from moezoo.cli import main
from moezoo.data.shards import DatasetIndex, read_split
from moezoo.data.tones import DEFAULT_CONFIG, QUESTION_TYPES, TonesBuildConfig, build_tones_qa, random_clip
from moezoo.registry import model_config
from moezoo.train.datamodule import ShardDataModule

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "tones-qa"
SMALL = TonesBuildConfig(seed=5, n_train=24, n_val=4, n_test=12, samples_per_shard=10)
ARCH = "uni_moe_tiny_image_audio"
FRAME_MS = 4


@pytest.fixture(scope="module")
def tones_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tones-qa")
    build_tones_qa(out, SMALL)
    return out


def decode(data: bytes) -> tuple[np.ndarray, int]:
    with wave.open(io.BytesIO(data)) as w:
        assert w.getnchannels() == 1
        width, rate, raw = w.getsampwidth(), w.getframerate(), w.readframes(w.getnframes())
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float64) - 128) / 127, rate
    return np.frombuffer(raw, "<i2").astype(np.float64) / 32767, rate


def hear(x: np.ndarray, rate: int) -> list[dict[str, float]]:
    """The beeps of a clip: start and duration (ms) from the energy envelope, pitch (Hz) from the FFT peak."""
    hop = rate * FRAME_MS // 1000
    rms = np.sqrt(np.mean(x[: len(x) // hop * hop].reshape(-1, hop) ** 2, axis=1))
    active = np.concatenate([[False], rms > 0.05, [False]])  # beeps are >= 0.25 peak; the noise is ~0.002
    edges = np.flatnonzero(np.diff(active.astype(int)))
    beeps = []
    for start, stop in zip(edges[::2], edges[1::2]):
        segment = x[start * hop: stop * hop]
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=16 * rate))
        beeps.append({"start": start * FRAME_MS, "duration": (stop - start) * FRAME_MS,
                      "freq": float(np.argmax(spectrum)) * rate / (16 * rate)})
    return beeps


def oracle(question: str, beeps: list[dict[str, float]]) -> str:
    if question == "How many beeps are there?":
        return str(len(beeps))
    if question == "Is the second beep higher or lower than the first?":
        return "higher" if beeps[1]["freq"] > beeps[0]["freq"] else "lower"
    if question == "Which beep is longer, the first or the second?":
        return "first" if beeps[0]["duration"] > beeps[1]["duration"] else "second"
    if question == "Is the beep low, middle or high in pitch?":
        (beep,) = beeps
        return "low" if beep["freq"] < 300 else "middle" if beep["freq"] < 1000 else "high"
    raise AssertionError(f"unknown question form: {question!r}")


def test_answers_match_what_the_clips_sound_like(tones_dir):
    for split in ("train", "val", "test"):
        for sample in read_split(tones_dir, split):
            body = json.loads(sample["json"])
            x, rate = decode(sample["wav"])
            beeps, clip = hear(x, rate), body["clip"]
            assert rate == 8000 and len(x) == clip["duration_ms"] * 8 and len(x) <= 8000  # the 1 s window
            assert body["answer"] == oracle(body["question"], beeps), sample["__key__"]
            assert len(beeps) == len(clip["beeps"])  # the stored description is what was rendered
            for heard, meant in zip(beeps, clip["beeps"]):
                assert abs(heard["start"] - meant["start_ms"]) <= 2 * FRAME_MS
                assert abs(heard["duration"] - meant["duration_ms"]) <= 3 * FRAME_MS
                assert heard["freq"] == pytest.approx(meant["freq_hz"], rel=0.02)
            value = body["conversations"][0]["value"]
            assert value == f"<audio>\n{body['question']}\nAnswer the question using a single word or phrase."
            assert body["conversations"][1] == {"from": "gpt", "value": body["answer"]}


def test_shipped_answers_are_balanced_within_each_type():
    answers = {t: Counter() for t in QUESTION_TYPES}
    for sample in read_split(SHIPPED, "train"):
        body = json.loads(sample["json"])
        answers[body["question_type"]][body["answer"]] += 1
    expected = {"count": {"1", "2", "3", "4"}, "pitch": {"higher", "lower"}, "longer": {"first", "second"},
                "pitch_level": {"low", "middle", "high"}}
    for qtype, counts in answers.items():
        assert set(counts) == expected[qtype] and sum(counts.values()) == 500
        assert max(counts.values()) / sum(counts.values()) < 1.3 / len(counts), (qtype, counts)  # prior ~1/k


def test_same_seed_same_bytes(tmp_path, tones_dir):
    build_tones_qa(tmp_path / "again", SMALL)
    build_tones_qa(tmp_path / "other", TonesBuildConfig(**{**vars(SMALL), "seed": 6}))
    files = sorted(p.name for p in tones_dir.iterdir())
    assert files == sorted(p.name for p in (tmp_path / "again").iterdir())
    assert all((tones_dir / f).read_bytes() == (tmp_path / "again" / f).read_bytes() for f in files)
    assert (tones_dir / "train-000000.tar.gz").read_bytes() != (tmp_path / "other" / "train-000000.tar.gz").read_bytes()


def test_vqav2_json_of_the_test_split(tones_dir):
    questions = json.loads((tones_dir / "test_questions.json").read_text())
    annotations = json.loads((tones_dir / "test_annotations.json").read_text())["annotations"]
    samples = [json.loads(s["json"]) for s in read_split(tones_dir, "test")]
    assert questions["task_type"] == "Open-Ended" and questions["data_type"] == "tones-qa"
    assert [q["question_id"] for q in questions["questions"]] == [s["question_id"] for s in samples] == list(range(12))
    for ann, sample in zip(annotations, samples):
        assert ann["multiple_choice_answer"] == sample["answer"] and len(ann["answers"]) == 10
        assert ann["answer_type"] == ("number" if sample["question_type"] == "count" else "other")
        assert {a["answer"] for a in ann["answers"]} == {sample["answer"]}


def test_shipped_data_is_what_the_builder_makes(tmp_path):
    index = DatasetIndex.load(SHIPPED)
    assert index.extra["config"] == vars(DEFAULT_CONFIG)  # data/build.sh builds the defaults
    assert {k: v.samples for k, v in index.splits.items()} == {"train": 2000, "val": 100, "test": 300}
    small = TonesBuildConfig(n_train=3, n_val=2, n_test=3)  # the first samples of each split are the same
    build_tones_qa(tmp_path, small)
    for split in ("train", "val", "test"):
        assert list(read_split(tmp_path, split)) == list(read_split(SHIPPED, split, limit=small.split_sizes()[split]))
    size = sum(p.stat().st_size for p in SHIPPED.iterdir())
    assert size < 3.2e6, f"data/tones-qa is {size / 1e6:.2f} MB"


def test_cli_build_and_its_audio_flags(tmp_path, capsys):
    args = ["data", "build", "tones-qa", "--out", str(tmp_path / "t"), "--n-train", "2", "--n-val", "0", "--n-test",
            "1", "--sample-rate", "16000", "--sample-width", "2", "--noise", "0"]
    assert main(args) == 0 and "wrote tones-qa" in capsys.readouterr().out
    sample = next(read_split(tmp_path / "t", "train"))
    with wave.open(io.BytesIO(sample["wav"])) as w:
        assert (w.getframerate(), w.getsampwidth()) == (16000, 2)
    assert main(["data", "build", "tones-qa", "--out", str(tmp_path / "c"), "--n-captions", "2"]) == 2
    assert "--n-captions does not apply to dataset 'tones-qa'" in capsys.readouterr().err
    assert main(["data", "build", "tones-qa", "--out", str(tmp_path / "c"), "--sample-width", "3"]) == 2
    assert "TonesBuildConfig.sample_width=3 must be 1 (8-bit) or 2 (16-bit)" in capsys.readouterr().err


def test_bad_question_type_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown question type 'loud'; expected one of \('count'"):
        random_clip("loud", random.Random(0))


@pytest.mark.parametrize("arch", [ARCH, "mm_tiny_whisper"])
def test_pipeline_gives_whisper_features(tones_dir, arch):
    dm = ShardDataModule(tones_dir, processor=arch, batch_size=6, epoch_length=6)
    batch = next(iter(dm.train_dataloader()))
    n_tokens, mel_bins = dm.processor.num_tokens["audio"], model_config(arch).audio.whisper_config["num_mel_bins"]
    assert tuple(batch["input_features"].shape) == (6, mel_bins, 100) and "pixel_values" not in batch
    assert ((batch["input_ids"] == 5).sum(1) == n_tokens).all()  # one <audio> expanded per sample
    assert sum(dm.skipped().values()) == 0
    # Only the answer (and the end-of-turn token) is learnt; it decodes to the JSON's answer.
    for labels, meta in zip(batch["labels"], batch["meta"]):
        assert dm.processor.decode(labels[labels != -100]).strip() == meta["answer"]


def _inputs(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if k not in ("keys", "meta")}


def test_image_audio_model_forward_generate_and_trains_on_tones(tones_dir):
    from PIL import Image

    model = moezoo.create_model(ARCH)
    # One model, both media: an image prompt and an audio prompt each run and generate.
    image = model.processor(text=["<image>\nWhat colour is the circle?"], images=[Image.new("RGB", (64, 64), "red")])
    clip = next(read_split(tones_dir, "test"))["wav"]
    audio = model.processor(text=["<audio>\nHow many beeps are there?"], audios=[clip])
    assert tuple(audio["input_features"].shape) == (1, 32, 100)
    for inputs in (image, audio):
        model.eval()
        assert model(**inputs).logits.shape == (*inputs["input_ids"].shape, model.config.llm.vocab_size)
        ids = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        assert ids.shape == (1, inputs["input_ids"].shape[1] + 3) and torch.equal(ids[:, :-3], inputs["input_ids"])

    # A few AdamW steps on one tones-qa batch: gradients reach the audio path, and the loss falls.
    batch = next(iter(ShardDataModule(tones_dir, processor=model, batch_size=8, epoch_length=8).train_dataloader()))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for step in range(8):
        loss = model(**_inputs(batch)).loss
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            grads = {name: p.grad for name, p in model.named_parameters() if p.requires_grad}
            audio = [g for n, g in grads.items() if re.match(r"(audio|connectors\.audio)\.", n)]
            assert audio and all(g is not None and g.abs().sum() > 0 for g in audio)
            assert all(g is None for n, g in grads.items() if n.startswith("vision."))  # no image in the batch
        optimizer.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.75 * losses[0], losses  # 8.3 -> 5.0 when written
