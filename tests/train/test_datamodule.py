"""The shard DataModule: batches, determinism for a seed, epoch lengths, pluggable preprocessing."""

from __future__ import annotations

import importlib.util
import io
import wave

import numpy as np
import pytest
import torch
from PIL import Image

import moezoo
from moezoo.data import pipeline
from moezoo.data.robust import REASONS
from moezoo.data.shards import DatasetIndex, encode_json, encode_png, write_split
from moezoo.processing.chat import IGNORE_INDEX
from moezoo.processing.processor import INPUT_KEYS, Processor
from moezoo.train.datamodule import ShardDataModule, resolve_processor


def unit_processor(tokenizer, image_tokens: int = 1, size: int = 64) -> Processor:
    """A processor giving ``image_tokens`` slots per image and pixels in [0, 1] at ``size``."""
    spec = {"kind": "simple", "size": [size, size], "mean": [0.0] * 3, "std": [1.0] * 3}
    return Processor(tokenizer, {"image": image_tokens}, image=spec)


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["keys"]]


def test_batch_layout(shapes_dir, tokenizer):
    dm = ShardDataModule(shapes_dir, processor=unit_processor(tokenizer, 3), batch_size=6, epoch_length=12)
    batch = next(iter(dm.train_dataloader()))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape and ids.shape[0] == 6
    pixels = batch["pixel_values"]
    assert pixels.shape == (6, 3, 64, 64) and 0 <= pixels.min() <= pixels.max() <= 1
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert ((ids == image_id).sum(1) == 3).all()
    assert (labels[ids == image_id] == IGNORE_INDEX).all() and (labels[mask == 0] == IGNORE_INDEX).all()
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    for row, meta in zip(range(6), batch["meta"]):  # the answer is exactly what carries loss
        answer = tokenizer.decode(labels[row][labels[row] != IGNORE_INDEX])
        assert answer == meta["answer"] + "<|end|>"


def test_resampled_training_is_deterministic_for_a_seed(shapes_dir, tokenizer):
    def run(seed, workers):
        dm = ShardDataModule(shapes_dir, processor=unit_processor(tokenizer), batch_size=5, num_workers=workers,
                             epoch_length=40, seed=seed)
        loader = dm.train_dataloader()
        return _keys(loader), _keys(loader)  # two epochs

    a1, a2 = run(0, 0)
    assert len(a1) == len(a2) == 40 and a1 != a2  # a new shuffle each epoch
    assert run(0, 0) == (a1, a2)
    assert run(1, 0)[0] != a1
    w1, w2 = run(0, 2)
    assert len(w1) == 40 and run(0, 2) == (w1, w2) and w1 != w2


def test_non_resampled_epoch_reads_each_sample_once(shapes_dir, tokenizer):
    dm = ShardDataModule(shapes_dir, processor=unit_processor(tokenizer), batch_size=7, num_workers=2, resampled=False)
    train = _keys(dm.train_dataloader())
    assert sorted(train) == [f"train-{i:06d}" for i in range(60)] and train != sorted(train)
    assert sorted(_keys(dm.val_dataloader())) == [f"val-{i:06d}" for i in range(10)]
    assert len(_keys(dm.test_dataloader())) == 15


@pytest.mark.parametrize("workers", [0, 2])
def test_a_one_shard_split_is_shared_by_sample_between_ranks(shapes_dir, tokenizer, monkeypatch, workers):
    """Fewer shards than readers (the shipped val split is one shard): every rank still gets its share,
    else a DDP validation hangs waiting for the rank that has nothing."""
    dm = ShardDataModule(shapes_dir, processor=unit_processor(tokenizer), batch_size=3, num_workers=workers)
    assert len(dm.index.urls("val")) == 1
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        per_rank.append(_keys(dm.val_dataloader()))
    assert all(len(keys) >= 4 for keys in per_rank)  # 10 samples over 2 or 4 readers
    assert sorted(per_rank[0] + per_rank[1]) == [f"val-{i:06d}" for i in range(10)]


def test_pluggable_image_transform_and_captions(shapes_dir, tokenizer):
    seen = []

    def transform(image):  # an encoder's own preprocessing, e.g. open_clip's `preprocess`
        seen.append(image.size)
        return torch.zeros(3, 32, 32)

    class Custom(Processor):
        image_processor = property(lambda self: lambda images: torch.stack([transform(i) for i in images]))

    dm = ShardDataModule(shapes_dir, processor=Custom(tokenizer, {"image": 1}, image={"kind": "custom"}),
                         batch_size=4, train_split="captions", resampled=False)  # fmt: skip
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and seen[0] == (64, 64)
    resized = ShardDataModule(shapes_dir, processor=unit_processor(tokenizer, size=48), batch_size=2, epoch_length=2)
    assert next(iter(resized.train_dataloader()))["pixel_values"].shape == (2, 3, 48, 48)


def test_text_corpus_windows(text_dir, tokenizer_dir):
    dm = ShardDataModule(text_dir, str(tokenizer_dir), batch_size=4, max_length=32, resampled=False, test_split=None)
    batches = list(dm.val_dataloader())
    assert all(b["input_ids"].shape[1] <= 32 and "pixel_values" not in b for b in batches)
    first = batches[0]
    assert (first["labels"][first["attention_mask"] == 1] == first["input_ids"][first["attention_mask"] == 1]).all()
    assert dm.skipped()["too_long"] == 0


def test_a_mix_dir_weighs_as_its_shards_times_its_repeat(shapes_dir, tokenizer):
    """mix_repeat lists a mix dir's shards k times: one pass then reads its samples k times."""
    dm = ShardDataModule(shapes_dir, processor=unit_processor(tokenizer), batch_size=16, resampled=False,
                         mix=[shapes_dir], mix_repeat=[2])
    train = _keys(dm.train_dataloader())
    assert sorted(set(train)) == [f"train-{i:06d}" for i in range(60)] and len(train) == 3 * 60
    with pytest.raises(ValueError, match=r"mix_repeat=\[2, 1\] must give one count >= 1 per mix dir \(1"):
        ShardDataModule(shapes_dir, tokenizer, mix=[shapes_dir], mix_repeat=[2, 1])
    with pytest.raises(ValueError, match=r"mix_repeat=\[0\]"):
        ShardDataModule(shapes_dir, tokenizer, mix=[shapes_dir], mix_repeat=[0])


def test_config_errors(shapes_dir, tokenizer):
    with pytest.raises(KeyError, match="has no split 'dev'"):
        ShardDataModule(shapes_dir, tokenizer, val_split="dev")
    with pytest.raises(ValueError, match="DataConfig.max_length"):
        ShardDataModule(shapes_dir, tokenizer, max_length=1)
    with pytest.raises(FileNotFoundError, match="index.json"):
        ShardDataModule(shapes_dir / "nope", tokenizer)


# -- multimodal samples: several images, audio at its own rate, video frames, through a model's processor --

COLOURS = {"red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255)}


def _png(colour: str, size: int = 40) -> bytes:
    return encode_png(Image.new("RGB", (size, size), COLOURS[colour]))


def _wav(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(rate)
        w.writeframes((np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes())
    return buf.getvalue()


def _chat(key: str, question: str, answer: str = "yes", **members: bytes) -> dict:
    conv = [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]
    return {"__key__": key, "json": encode_json({"conversations": conv}), **members}


FRAMES = ["red", "green", "blue", "red", "green", "blue"]  # 6 frames, sampled to the model's 4
SAMPLES = [
    _chat("img1", "<image>\nWhat colour?", "red", png=_png("red")),
    _chat("img2", "Is <image> the same colour as <image>?", "no", **{"0.png": _png("green"), "1.png": _png("blue")}),
    _chat("aud", "<audio>\nWhat do you hear?", "a tone", wav=_wav(0.5, 8000)),  # 8 kHz, resampled to 16 kHz
    _chat("vid", "<video>\nWhat happens?", "colours", **{f"frames.{i}.png": _png(c) for i, c in enumerate(FRAMES)}),
    _chat("vidimg", "<image> then <video>: which first?", "image", png=_png("blue"),
          **{f"frames.{i}.png": _png(c) for i, c in enumerate(FRAMES[:3])}),
    _chat("bad-mismatch", "<image> and <image>?", "no", png=_png("red")),
    _chat("bad-gap", "<image> and <image>?", "no", **{"0.png": _png("red"), "2.png": _png("red")}),
    _chat("bad-audio", "<audio>\nWhat is it?", "noise", wav=b"RIFF\x00\x00garbage"),
    _chat("bad-long-audio", "<audio>\nWhat is it?", "a tone", wav=_wav(1.5, 16000)),  # tiny Whisper takes 1 s
    _chat("bad-no-audio", "<audio>\nWhat is it?", "a tone"),
    _chat("bad-mp4", "<video>\nWhat happens?", "nothing", mp4=b"not an mp4"),
]
# Video files are decoded with PyAV (the optional `moezoo[video]` extra); without it they are counted as errors.
BAD_MP4 = "corrupt_video" if importlib.util.find_spec("av") else "error"
SAMPLES_BY_KEY = {s["__key__"]: s for s in SAMPLES}
# arch -> (the samples it keeps, in order; what it skips, by reason)
EXPECTED = {
    "mm_tiny_cnn": (["img1", "img2"], {"media_mismatch": 2, "unsupported_modality": 7}),
    "mm_tiny_whisper": (["aud"], {"unsupported_modality": 7, "corrupt_audio": 1, "too_long": 1, "missing_key": 1}),
    "mm_tiny_video": (["img1", "img2", "vid", "vidimg"], {"media_mismatch": 2, "unsupported_modality": 4,
                                                          BAD_MP4: 1}),
}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    DatasetIndex("media", {"val": write_split(root, "val", SAMPLES, samples_per_shard=4)}).save(root)
    return root


@pytest.mark.parametrize("arch", list(EXPECTED))
def test_batches_from_a_models_processor_feed_the_model(arch, media_dir):
    model = moezoo.create_model(arch)
    dm = ShardDataModule(media_dir, processor=model, batch_size=8, train_split=None, test_split=None, warn_first=0)
    (batch,) = list(dm.val_dataloader())
    keys, skipped = EXPECTED[arch]
    assert batch["keys"] == keys and dm.skipped() == {**dict.fromkeys(REASONS, 0), **skipped}
    proc, ids, labels = model.processor, batch["input_ids"], batch["labels"]
    for modality, placeholder in (("image", "<image>"), ("audio", "<audio>"), ("video", "<video>")):
        per_row = [SAMPLES_BY_KEY[k]["json"].decode().count(placeholder) for k in keys]
        slots = ids == model.token_id(modality)
        assert slots.sum(1).tolist() == [n * proc.num_tokens.get(modality, 0) for n in per_row]
        assert (labels[slots] == IGNORE_INDEX).all()
        assert (INPUT_KEYS[modality] in batch) == (sum(per_row) > 0)
    out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    assert torch.isfinite(out.loss) and out.logits.shape[:2] == ids.shape
    if arch == "mm_tiny_cnn":  # images flattened over the batch in placeholder order
        assert batch["pixel_values"][:, :, 0, 0].tolist() == [[1, -1, -1], [-1, 1, -1], [-1, -1, 1]]
    if arch == "mm_tiny_whisper":  # the processor's own features of the clip at its own rate
        pcm = np.frombuffer(_wav(0.5, 8000)[44:], "<i2").astype(np.float32) / 32768
        torch.testing.assert_close(batch["input_features"], proc.audio_processor([(pcm, 8000)]))
    if arch == "mm_tiny_video":
        frames = [Image.open(io.BytesIO(_png(c))) for c in FRAMES]
        assert batch["pixel_values_videos"].shape == (2, 4, 3, 32, 32)
        torch.testing.assert_close(batch["pixel_values_videos"][0], proc.video_processor([frames])[0])


def test_processor_sources(tmp_path, shapes_dir, tokenizer):
    model = moezoo.create_model("mm_tiny_cnn")
    model.save_pretrained(tmp_path / "ckpt")
    for source in ("mm_tiny_cnn", tmp_path / "ckpt", str(tmp_path / "ckpt"), model, model.processor):
        assert resolve_processor(source).to_dict() == model.processor.to_dict()
    assert resolve_processor(tokenizer=tokenizer).modalities == []
    with pytest.raises(ValueError, match="exactly one of `processor`"):
        ShardDataModule(shapes_dir, tokenizer, processor=model)
    with pytest.raises(ValueError, match="exactly one of `processor`"):
        ShardDataModule(shapes_dir)


def test_image_data_for_a_text_model_stops_with_a_clear_error(shapes_dir, tokenizer, monkeypatch):
    monkeypatch.setattr(pipeline, "MAX_SKIP_STREAK", 20)
    dm = ShardDataModule(shapes_dir, tokenizer, batch_size=4, epoch_length=8, warn_first=0)
    with pytest.raises(RuntimeError, match="the last 20 samples were all skipped .*unsupported_modality"):
        next(iter(dm.train_dataloader()))


def test_data_placeholders_become_the_models_placeholder_token(shapes_dir):
    tok = moezoo.create_model("moe_lm_tiny").tokenizer  # a model whose image token is not spelled <image>
    spec = {"kind": "simple", "size": [16, 16], "mean": [0.5] * 3, "std": [0.5] * 3}
    processor = Processor(tok, {"image": 2}, image=spec, placeholders={"image": "<|system|>"})
    dm = ShardDataModule(shapes_dir, processor=processor, batch_size=3, resampled=False, shuffle_buffer=0)
    batch = next(iter(dm.val_dataloader()))
    system, image = tok.convert_tokens_to_ids("<|system|>"), tok.convert_tokens_to_ids("<image>")
    assert ((batch["input_ids"] == system).sum(1) == 2).all() and not (batch["input_ids"] == image).any()
    assert (batch["labels"][batch["input_ids"] == system] == IGNORE_INDEX).all()
