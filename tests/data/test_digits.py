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


# The test split's questions, as always.
TEMPLATES = r"Which digit is this\?|Is the digit odd or even\?|Is the digit greater than \d\?"


def oracle(question: str, label: int) -> tuple[str, str]:
    """(question type, answer) from the question's content words and the true label, whatever the wording."""
    text = question.lower()
    if m := re.search(r"\b(\d)\b", text):
        assert re.search(r"greater|bigger|larger|more", text), question
        return "greater", "yes" if label > int(m[1]) else "no"
    if "odd" in text and "even" in text:
        return "parity", "odd" if label % 2 else "even"
    assert re.search(r"\b(digit|number)\b", text), question
    return "digit", str(label)


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
            assert oracle(body["question"], label) == (body["question_type"], body["answer"]), body["question"]
            if split == "test":  # the template, as every digits_vqa figure so far was measured on
                assert re.fullmatch(TEMPLATES, body["question"]) and "instruction" not in body
    assert not (seen["train"] & seen["test"]) and not (seen["val"] & seen["test"]) and not (seen["train"] & seen["val"])
    assert seen["captions"] <= seen["train"]


def test_too_many_images_is_a_clear_error():
    with pytest.raises(ValueError, match="1797 images"):
        split_indices(0, {"train": 1700, "val": 100, "test": 100})


def test_typed_test_asks_the_test_questions_in_other_words(digits_dir, read_split):
    digits = load_digits()
    test = {b["question_id"]: b for b in (json.loads(f["json"]) for f in read_split(digits_dir, "test").values())}
    questions = json.loads((digits_dir / "test_typed_questions.json").read_text())["questions"]
    annotations = json.loads((digits_dir / "test_annotations.json").read_text())["annotations"]  # same ids
    assert [q["question_id"] for q in questions] == [a["question_id"] for a in annotations] == sorted(test)
    for q, a in zip(questions, annotations):
        t = test[q["question_id"]]
        label = int(digits.target[t["scene"]["source_index"]])
        assert oracle(q["question"], label) == (t["question_type"], t["answer"]) == (a["question_type"],
                                                                                       a["multiple_choice_answer"])
        assert not re.fullmatch(TEMPLATES, q["question"])
        short = "\nAnswer the question using a single word or phrase."
        expected = {"after": q["question"] + short, "none": q["question"]}
        assert q["prompt"] == expected[q["instruction"]]
    assert [q["instruction"] for q in questions] == ["after", "none"] * 4 + ["after"]  # 9 test questions
