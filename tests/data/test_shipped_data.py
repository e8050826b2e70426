"""The data shipped under data/ loads: every dataset, every split, with the zoo tokenizer shipped in the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from moezoo.data.shards import DatasetIndex
from moezoo.processing.processor import Processor
from moezoo.processing.tokenizer import zoo_tokenizer
from moezoo.processing.tokens import SPECIAL_TOKENS
from moezoo.train.datamodule import ShardDataModule

DATA = Path(__file__).resolve().parents[2] / "data"


def test_size_budget():
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 8 * 2**20, f"data/ is {total / 2**20:.1f} MiB; keep the shipped data under 8 MiB"
    assert (DATA / "build.sh").is_file() and (DATA / "README.md").is_file()


@pytest.fixture(scope="module")
def tokenizer():
    tok = zoo_tokenizer()
    assert len(tok) == 4096 and all(tok.convert_tokens_to_ids(t) == i for i, t in enumerate(SPECIAL_TOKENS))
    return tok


@pytest.mark.parametrize("name", ["shapes-vqa", "digits-vqa", "text"])
def test_every_split_loads(name, tokenizer):
    index = DatasetIndex.load(DATA / name)
    for split, info in index.splits.items():
        assert all((DATA / name / s).is_file() for s in info.shards)
        processor = Processor(tokenizer, {"image": 1}, image={"kind": "simple", "size": [32, 32], "mean": [0.0] * 3,
                                                              "std": [1.0] * 3})  # fmt: skip
        dm = ShardDataModule(DATA / name, processor=processor, batch_size=8, max_length=128, train_split=split,
                             val_split=None, test_split=None, resampled=False, shuffle_buffer=0)  # fmt: skip
        batch = next(iter(dm.train_dataloader()))
        assert batch["input_ids"].shape[0] == 8 and ("pixel_values" in batch) == (name != "text")
        assert sum(dm.skipped().values()) == 0
    if name != "text":
        assert (DATA / name / "test_questions.json").is_file() and (DATA / name / "test_annotations.json").is_file()
        assert (DATA / name / "test_typed_questions.json").is_file()  # the typed test (shapes_vqa_typed, ...)
