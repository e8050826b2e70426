"""digits-vqa: answers agree with scikit-learn's labels and the images are the real digits."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

from moezoo.data.digits import build_digits_vqa, split_indices
from moezoo.data.vqa import VQABuildConfig


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("digits")
    build_digits_vqa(out, VQABuildConfig(seed=5, n_train=30, n_val=6, n_test=9, n_captions=4, image_size=32))
    return out


def test_answers_match_the_real_labels(digits_dir, read_split):
    digits = load_digits()
    seen: dict[str, set[int]] = {}
    for split in ("train", "val", "test", "captions"):
        for files in read_split(digits_dir, split).values():
            body, png = json.loads(files["json"]), files["png"]
            index, label = body["scene"]["source_index"], int(digits.target[body["scene"]["source_index"]])
            assert body["scene"]["digit"] == label
            seen.setdefault(split, set()).add(index)
            image = np.asarray(Image.open(io.BytesIO(png)))
            assert image.shape == (32, 32)
            # The PNG is the sklearn digit upscaled: averaging back to 8x8 recovers its strokes.
            small = image.reshape(8, 4, 8, 4).mean(axis=(1, 3)) / 255 * 16
            assert np.corrcoef(small.ravel(), digits.images[index].ravel())[0, 1] > 0.9
            if split == "captions":
                assert body["caption"] == f"A handwritten digit {label}."
                continue
            q, a = body["question"], body["answer"]
            if q == "Which digit is this?":
                assert a == str(label)
            elif q == "Is the digit odd or even?":
                assert a == ("odd" if label % 2 else "even")
            else:
                n = int(re.fullmatch(r"Is the digit greater than (\d)\?", q)[1])
                assert a == ("yes" if label > n else "no")
    assert not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"]) and not (seen["train"] & seen["val"])
    assert seen["captions"] <= seen["train"]


def test_too_many_images_is_a_clear_error():
    with pytest.raises(ValueError, match="1797 images"):
        split_indices(0, {"train": 1700, "val": 100, "test": 100})
