"""The batching helpers every evaluation path shares: padding, media, device moves, eval mode, order."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from moezoo.eval import batching


def test_pad_left_and_right():
    rows = [[5, 6, 7], [8], []]
    left, right = batching.pad(rows, pad_id=9, side="left"), batching.pad(rows, pad_id=9)
    assert left["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8], [9, 9, 9]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 9, 9], [9, 9, 9]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert left["input_ids"].dtype == right["attention_mask"].dtype == torch.long
    with pytest.raises(ValueError, match="side='middle' must be 'left' or 'right'"):
        batching.pad(rows, side="middle")


def test_eval_mode_restores_the_mode_even_on_error():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    with pytest.raises(RuntimeError, match="boom"), batching.eval_mode(model):
        assert not model.training and not model[1].training
        raise RuntimeError("boom")
    assert model.training and model[1].training
    model.eval()
    with batching.eval_mode(model):
        pass
    assert not model.training


def test_to_device_takes_the_model_dtype_for_floats_only():
    model = nn.Linear(2, 2).to(torch.bfloat16)
    batch = batching.to_device({"input_ids": torch.tensor([[1, 2]]), "pixel_values": torch.ones(1, 3)}, model)
    assert batch["input_ids"].dtype == torch.long and batch["input_ids"].tolist() == [[1, 2]]
    assert batch["pixel_values"].dtype == torch.bfloat16
    assert batching.model_device(model) == batch["pixel_values"].device


def test_media_inputs_flatten_rows_in_order_through_the_processor():
    class Processor:  # the two things media_inputs reads: the modalities, and each one's preprocessing
        modalities = ("image",)

        @staticmethod
        def image_processor(images):
            return torch.tensor(images, dtype=torch.float32)

    out = batching.media_inputs(Processor(), [{"image": [1, 2]}, {}, {"image": [3]}])
    assert list(out) == ["pixel_values"] and out["pixel_values"].tolist() == [1.0, 2.0, 3.0]
    assert batching.media_inputs(Processor(), [{}, {"image": []}]) == {}
    with pytest.raises(ValueError, match=r"model m takes no audio; its modalities are \['image'\]"):
        batching.media_inputs(Processor(), [{"audio": [(0, 1)]}], "model m")
    with pytest.raises(ValueError, match=r"this model takes no images; its modalities are \['text'\]"):
        batching.media_inputs(None, [{"image": [1]}])
    with pytest.raises(ValueError, match=r"unknown media \['picture'\]"):
        batching.media_inputs(Processor(), [{"picture": [1]}])


def test_longest_first_chunks_and_batch_size():
    order = batching.longest_first([3, 9, 1, 9, 4])
    assert order == [1, 3, 4, 0, 2]
    assert list(batching.chunks(order, 2)) == [[1, 3], [4, 0], [2]]
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="must be an int >= 1"):
            batching.check_batch_size(bad)


def test_progress_bar_shows_only_when_enabled(capsys):
    with batching.progress(2, enabled=False, desc="Scoring") as bar:
        bar.update(2)
    assert "Scoring" not in capsys.readouterr().err
    with batching.progress(2, enabled=True, desc="Scoring", unit="request") as bar:
        bar.update(2)
    assert "Scoring" in capsys.readouterr().err
