"""The shard DataModule: batches, determinism for a seed, epoch lengths, pluggable preprocessing."""

from __future__ import annotations

import pytest
import torch

from moezoo.processing.chat import IGNORE_INDEX
from moezoo.train.datamodule import ShardDataModule


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["keys"]]


def test_batch_layout(shapes_dir, tokenizer):
    dm = ShardDataModule(shapes_dir, tokenizer, batch_size=6, image_tokens=3, epoch_length=12)
    batch = next(iter(dm.train_dataloader()))
    ids, labels, mask = batch["input_ids"], batch["labels"], batch["attention_mask"]
    assert ids.shape == labels.shape == mask.shape and ids.shape[0] == 6
    assert batch["images"].shape == (6, 3, 64, 64) and 0 <= batch["images"].min() <= batch["images"].max() <= 1
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert ((ids == image_id).sum(1) == 3).all()
    assert (labels[ids == image_id] == IGNORE_INDEX).all() and (labels[mask == 0] == IGNORE_INDEX).all()
    assert (ids[mask == 0] == tokenizer.pad_token_id).all()
    for row, meta in zip(range(6), batch["meta"]):  # the answer is exactly what carries loss
        answer = tokenizer.decode(labels[row][labels[row] != IGNORE_INDEX])
        assert answer == meta["answer"] + "<|end|>"


def test_resampled_training_is_deterministic_for_a_seed(shapes_dir, tokenizer):
    def run(seed, workers):
        dm = ShardDataModule(shapes_dir, tokenizer, batch_size=5, num_workers=workers, epoch_length=40, seed=seed)
        loader = dm.train_dataloader()
        return _keys(loader), _keys(loader)  # two epochs

    a1, a2 = run(0, 0)
    assert len(a1) == len(a2) == 40 and a1 != a2  # a new shuffle each epoch
    assert run(0, 0) == (a1, a2)
    assert run(1, 0)[0] != a1
    w1, w2 = run(0, 2)
    assert len(w1) == 40 and run(0, 2) == (w1, w2) and w1 != w2


def test_non_resampled_epoch_reads_each_sample_once(shapes_dir, tokenizer):
    dm = ShardDataModule(shapes_dir, tokenizer, batch_size=7, num_workers=2, resampled=False)
    train = _keys(dm.train_dataloader())
    assert sorted(train) == [f"train-{i:06d}" for i in range(60)] and train != sorted(train)
    assert sorted(_keys(dm.val_dataloader())) == [f"val-{i:06d}" for i in range(10)]
    assert len(_keys(dm.test_dataloader())) == 15


def test_pluggable_image_transform_and_captions(shapes_dir, tokenizer):
    seen = []

    def transform(image):  # an encoder's own preprocessing, e.g. open_clip's `preprocess`
        seen.append(image.size)
        return torch.zeros(3, 32, 32)

    dm = ShardDataModule(shapes_dir, tokenizer, batch_size=4, train_split="captions", resampled=False,
                         image_transform=transform)  # fmt: skip
    batch = next(iter(dm.train_dataloader()))
    assert batch["images"].shape == (4, 3, 32, 32) and seen[0] == (64, 64)
    resized = ShardDataModule(shapes_dir, tokenizer, batch_size=2, image_size=48, epoch_length=2)
    assert next(iter(resized.train_dataloader()))["images"].shape == (2, 3, 48, 48)


def test_text_corpus_windows(text_dir, tokenizer_dir):
    dm = ShardDataModule(text_dir, str(tokenizer_dir), batch_size=4, max_length=32, resampled=False, test_split=None)
    batches = list(dm.val_dataloader())
    assert all(b["input_ids"].shape[1] <= 32 and "images" not in b for b in batches)
    first = batches[0]
    assert (first["labels"][first["attention_mask"] == 1] == first["input_ids"][first["attention_mask"] == 1]).all()
    assert dm.skipped()["too_long"] == 0


def test_config_errors(shapes_dir, tokenizer):
    with pytest.raises(KeyError, match="has no split 'dev'"):
        ShardDataModule(shapes_dir, tokenizer, val_split="dev")
    with pytest.raises(ValueError, match="DataConfig.max_length"):
        ShardDataModule(shapes_dir, tokenizer, max_length=1)
    with pytest.raises(FileNotFoundError, match="index.json"):
        ShardDataModule(shapes_dir / "nope", tokenizer)
