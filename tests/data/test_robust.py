"""Planted bad samples of every kind: skipped, counted exactly, and every good sample still seen."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import wave
import warnings

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from moezoo.processing.processor import Processor
from moezoo.train.datamodule import ShardDataModule
from moezoo.data.robust import REASONS, SkippedSampleWarning
from moezoo.train.callbacks import SkippedSamplesLogger
from moezoo.data.shards import DatasetIndex, SplitInfo, encode_json, write_shard

EXPECTED = {"corrupt_image": 2, "corrupt_audio": 1, "missing_key": 2, "bad_json": 2, "too_long": 1, "bad_shard": 1}


def _wav(n: int = 160) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000), w.writeframes(b"\x01\x02" * n)
    return buf.getvalue()


@pytest.fixture(scope="module")
def planted(tmp_path_factory, shapes_dir):
    """Three shards mixing the 20 good samples with one bad sample of each kind, plus a non-tar shard."""
    good = []
    for url in DatasetIndex.load(shapes_dir).urls("train")[:1]:
        with tarfile.open(url) as tar:
            files = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        good = [{"__key__": n[:-5], "json": files[n], "png": files[n[:-5] + ".png"]} for n in sorted(files)
                if n.endswith(".json")]  # fmt: skip
    png, conv = good[0]["png"], json.loads(good[0]["json"])
    audio_conv = {"conversations": [{"from": "human", "value": "<audio>\nWhat is this?"}, {"from": "gpt", "value": "a tone"}]}
    long_conv = {"conversations": [{"from": "human", "value": "<image>\n" + "why " * 400}, {"from": "gpt", "value": "ok"}]}
    bad = [
        {"__key__": "bad-garbage-png", "json": encode_json(conv), "png": b"\x89PNG\r\n\x1a\nnot really"},
        {"__key__": "bad-truncated-png", "json": encode_json(conv), "png": png[: len(png) // 2]},
        {"__key__": "bad-no-image", "json": encode_json(conv)},
        {"__key__": "bad-no-json", "png": png},
        {"__key__": "bad-json-bytes", "json": b'{"conversations": [', "png": png},
        {"__key__": "bad-json-schema", "json": encode_json({"question": "no conversations"}), "png": png},
        {"__key__": "bad-too-long", "json": encode_json(long_conv), "png": png},
        {"__key__": "bad-wav", "json": encode_json(audio_conv), "wav": b"RIFF\x00\x00garbage"},
    ]
    good.append({"__key__": "good-audio", "json": encode_json(audio_conv), "wav": _wav()})
    root = tmp_path_factory.mktemp("planted")
    mixed = [s for pair in zip(good, bad + [None] * len(good)) for s in pair if s is not None]
    shards = []
    for i in range(3):
        shards.append(f"train-{i:06d}.tar.gz")
        write_shard(root / shards[-1], mixed[i::3])
    (root / "train-000003.tar.gz").write_bytes(b"this is not a tar file at all")
    shards.append("train-000003.tar.gz")
    DatasetIndex("planted", {"train": SplitInfo(shards, len(mixed))}).save(root)
    return root, {s["__key__"] for s in good}


IMAGE_SPEC = {"kind": "simple", "size": [64, 64], "mean": [0.0] * 3, "std": [1.0] * 3}
AUDIO_SPEC = {"kind": "whisper", "feature_size": 8, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 1,
              "n_fft": 400}


def _datamodule(root, tokenizer, num_workers, processor=None, **kw):
    processor = processor or Processor(tokenizer, {"image": 1, "audio": 1}, image=IMAGE_SPEC, audio=AUDIO_SPEC)
    return ShardDataModule(root, processor=processor, batch_size=4, num_workers=num_workers, max_length=96,
                           resampled=False, val_split=None, test_split=None, **kw)  # fmt: skip


@pytest.mark.parametrize("num_workers", [0, 2])
def test_exact_counts_and_every_good_sample(planted, tokenizer, num_workers):
    root, good_keys = planted
    dm = _datamodule(root, tokenizer, num_workers, warn_first=0)
    seen = [key for batch in dm.train_dataloader() for key in batch["keys"]]
    assert sorted(seen) == sorted(good_keys)
    assert dm.skipped() == {**dict.fromkeys(REASONS, 0), **EXPECTED}


def test_audio_is_decoded_and_transformed(planted, tokenizer):
    root, _ = planted
    received = []

    class Recording(Processor):  # each clip reaches the audio preprocessing decoded, at its own rate
        audio_processor = property(lambda self: lambda clips: received.extend(clips) or torch.zeros(len(clips), 8, 1))

    processor = Recording(tokenizer, {"image": 1, "audio": 1}, image=IMAGE_SPEC, audio=AUDIO_SPEC)
    dm = _datamodule(root, tokenizer, 0, processor, warn_first=0)
    batches = [b for b in dm.train_dataloader() if "input_features" in b]
    assert len(batches) == 1 and batches[0]["input_features"].shape == (1, 8, 1)
    ((wave_, rate),) = [(torch.as_tensor(wav).mean(0), rate) for wav, rate in received]
    assert rate == 16000 and wave_.shape == (160,) and torch.allclose(wave_, torch.full((160,), 513 / 32768))


def test_first_skips_are_named_in_warnings(planted, tokenizer):
    root, _ = planted
    dm = _datamodule(root, tokenizer, 0, warn_first=3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        list(dm.train_dataloader())
    messages = [str(w.message) for w in caught if issubclass(w.category, SkippedSampleWarning)]
    assert len(messages) == 3 and all("skipped sample" in m for m in messages)
    for m in messages:  # each names the bad sample's key (or, for the broken tar, the shard) and the reason
        assert "'bad-" in m or "train-000003.tar.gz" in m
        assert any(f"({reason})" in m for reason in EXPECTED)
    assert "counted without a warning" in messages[-1]


class _Recorder(pl.LightningModule):
    def __init__(self, vocab: int):
        super().__init__()
        self.emb = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, vocab)
        self.keys: list[str] = []

    def training_step(self, batch, batch_idx):
        self.keys += batch["keys"]
        logits = self.head(self.emb(batch["input_ids"]))
        return torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"].flatten(), ignore_index=-100)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader`")
def test_trains_to_the_end_and_logs_data_skipped(planted, tokenizer, tmp_path):
    root, good_keys = planted
    dm = _datamodule(root, tokenizer, 2, warn_first=0)
    model = _Recorder(len(tokenizer))
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", logger=CSVLogger(tmp_path), log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[SkippedSamplesLogger()],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert sorted(model.keys) == sorted(list(good_keys) * 2)  # both epochs saw every good sample once
    metrics = trainer.callback_metrics
    assert metrics["data/skipped"].item() == 2 * sum(EXPECTED.values())  # cumulative over the run
    for reason in REASONS:
        assert metrics[f"data/skipped/{reason}"].item() == 2 * EXPECTED.get(reason, 0)
    with open(trainer.logger.log_dir + "/metrics.csv") as f:  # logged as the run goes, and cumulative
        logged = [float(row["data/skipped"]) for row in csv.DictReader(f) if row.get("data/skipped")]
    assert len(logged) > 4 and logged == sorted(logged) and logged[-1] == 2 * sum(EXPECTED.values())


def test_a_truncated_image_is_corrupt_even_when_pil_is_told_to_load_truncated_images(monkeypatch):
    """lmms-eval sets PIL's global LOAD_TRUNCATED_IMAGES on import; decoding must not change with it."""
    from PIL import Image, ImageFile

    from moezoo.data.media import decode_image
    from moezoo.data.robust import SampleError
    from moezoo.data.shards import encode_png

    png = encode_png(Image.effect_noise((64, 64), 64))
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(SampleError, match="corrupt_image"):
        decode_image(png[: len(png) // 2])
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is left as it was
