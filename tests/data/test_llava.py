"""LLaVA conversion: a tiny LLaVA-format JSON converts and loads back to the same conversations."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from moezoo.processing.processor import Processor
from moezoo.train.datamodule import ShardDataModule
from moezoo.data.llava import convert_llava, read_conversations

RECORDS = [
    {"id": "000000033471", "image": "coco/train2017/000000033471.jpg", "conversations": [
        {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
        {"from": "gpt", "value": "The bus in the image is white and red."},
        {"from": "human", "value": "What feature can be seen on the back of the bus?"},
        {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
    {"id": "text.only/1", "conversations": [
        {"from": "human", "value": "Name a primary colour."}, {"from": "gpt", "value": "Red."}]},
    {"id": "GCC_train_002582585", "image": "gcc/002582585.png", "conversations": [
        {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
        {"from": "gpt", "value": "olive oil is a healthy ingredient used liberally ."}]},
]  # fmt: skip


@pytest.fixture()
def llava(tmp_path):
    (tmp_path / "images/coco/train2017").mkdir(parents=True)
    (tmp_path / "images/gcc").mkdir(parents=True)
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "images/coco/train2017/000000033471.jpg")
    Image.new("RGB", (20, 20), (10, 200, 10)).save(tmp_path / "images/gcc/002582585.png")
    (tmp_path / "conv.json").write_text(json.dumps(RECORDS))
    return tmp_path


def test_round_trip(llava, tokenizer):
    index, report = convert_llava(llava / "conv.json", llava / "images", llava / "out", samples_per_shard=2)
    assert index.splits["train"].samples == 3 and len(index.splits["train"].shards) == 2 and not report.missing_images
    assert list(read_conversations(llava / "out")) == RECORDS
    processor = Processor(tokenizer, {"image": 2}, image={"kind": "simple", "size": [16, 16], "mean": [0.0] * 3,
                                                          "std": [1.0] * 3})  # fmt: skip
    dm = ShardDataModule(llava / "out", processor=processor, batch_size=3, resampled=False,
                         val_split=None, test_split=None)  # fmt: skip
    (batch,) = list(dm.train_dataloader())
    assert sorted(batch["keys"]) == ["000000000", "000000001", "000000002"]
    assert batch["pixel_values"].shape == (2, 3, 16, 16)  # the text-only record has none
    assert dm.skipped()["missing_key"] == 0 and sum(dm.skipped().values()) == 0
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    assert ((batch["input_ids"] == image_id).sum(1).tolist()) == [2 if "image" in r else 0 for r in RECORDS]


def test_missing_images_are_skipped_and_reported(llava):
    (llava / "images/gcc/002582585.png").unlink()
    index, report = convert_llava(llava / "conv.json", llava / "images", llava / "out")
    assert index.splits["train"].samples == 2 and report.missing_images == ["gcc/002582585.png"]
    assert [r["id"] for r in read_conversations(llava / "out")] == ["000000033471", "text.only/1"]


def test_bad_input_is_a_clear_error(llava):
    with pytest.raises(FileNotFoundError, match="image dir"):
        convert_llava(llava / "conv.json", llava / "nope", llava / "out")
    (llava / "bad.json").write_text(json.dumps([{"conversations": [{"from": "human"}]}]))
    with pytest.raises(ValueError, match="record 0: bad turn"):
        convert_llava(llava / "bad.json", llava / "images", llava / "out")
    (llava / "bad.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        convert_llava(llava / "bad.json", llava / "images", llava / "out")
