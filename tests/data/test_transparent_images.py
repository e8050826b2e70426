"""Issue G's acceptance: a transparent PNG gives the same pixels in training and at inference.

The training pipeline (a tar shard through ``SampleProcessor``), ``model.processor`` and ``moezoo chat``
all read images with ``load_image``, which composites transparency onto white; the expected picture is
composited here with numpy, and the old training read (``convert("RGB")``, which keeps the colour under
a transparent pixel) is shown to differ, so the test can fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import moezoo
from moezoo.data.pipeline import SampleProcessor, build_pipeline
from moezoo.data.robust import SkipCounter
from moezoo.data.shards import DatasetIndex, encode_json, encode_png, write_split
from moezoo.eval.chat import build_inputs


def _transparent_rgba(size=48, seed=0) -> np.ndarray:
    """Random colours, half of them fully transparent (alpha 0 or 255, so compositing is exact)."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    alpha = np.where(rng.random((size, size, 1)) < 0.5, 0, 255).astype(np.uint8)
    return np.concatenate([rgb, alpha], -1)


@pytest.mark.parametrize("arch", ["mm_tiny_clip", "mm_tiny_cnn"])
def test_a_transparent_png_has_the_same_pixels_in_training_and_inference(tmp_path, arch):
    rgba = _transparent_rgba()
    png = encode_png(Image.fromarray(rgba, "RGBA"))
    (tmp_path / "image.png").write_bytes(png)
    conv = [{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "red"}]
    root = tmp_path / "shards"
    sample = {"__key__": "clear", "png": png, "json": encode_json({"conversations": conv})}
    DatasetIndex("clear", {"train": write_split(root, "train", [sample])}).save(root)

    model = moezoo.create_model(arch)
    counter = SkipCounter(warn_first=0)
    stage = SampleProcessor(model.processor, counter, max_length=256)
    (trained,) = list(build_pipeline(DatasetIndex.load(root).urls("train"), stage, resampled=False, shuffle=False))
    assert counter.total() == 0
    training = trained.media["pixel_values"]

    inference = model.processor(text="<image>\nWhat colour?", images=[Image.open(tmp_path / "image.png")])
    chat = build_inputs(model, "What colour?", [str(tmp_path / "image.png")], [], [])
    torch.testing.assert_close(training, inference["pixel_values"], rtol=0, atol=0)
    torch.testing.assert_close(training, chat["pixel_values"], rtol=0, atol=0)

    alpha = rgba[..., 3:] / 255
    on_white = (rgba[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
    want = model.processor.image_processor([Image.fromarray(on_white)])
    torch.testing.assert_close(training, want, rtol=0, atol=0)
    dropped_alpha = model.processor.image_processor([Image.open(tmp_path / "image.png").convert("RGB")])
    assert not torch.equal(training, dropped_alpha)
