"""digits-vqa: questions about the real handwritten digits bundled with scikit-learn.

The images are the UCI optical-recognition digits (Alpaydin & Kaynak 1998) that
``sklearn.datasets.load_digits`` ships (1,797 8x8 images, 17 grey levels; no
download). Each is upscaled to a square greyscale PNG. The train/val/test splits
partition a seeded permutation of the images, so no test image is seen in training.
Question types: ``digit`` (which digit), ``parity`` (odd/even), ``greater`` (> N).

As in :mod:`moezoo.data.scenes`, the test split asks the template (the first phrasing of
each form in :data:`TRAIN_PHRASINGS`), train and val ask as people type, and the typed test
asks the test questions with :data:`TYPED_PHRASINGS` (see :mod:`moezoo.data.phrasing`).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from moezoo.data.phrasing import Posed, check_tables, qa_record, render, training_table, typed_records
from moezoo.data.shards import DatasetIndex, encode_png
from moezoo.data.vqa import VQABuildConfig, build_vqa_dataset, caption_record

QUESTION_TYPES = ("digit", "parity", "greater")
# The source digits are 8x8 pixels: 32x32 keeps them sharp without wasting pixels.
DEFAULT_CONFIG = VQABuildConfig(image_size=32)
# Splits draw disjoint images in this order; captions reuse the training images.
_SPLIT_ORDER = ("train", "val", "test")
# Bumped whenever the same config writes different samples (2: typed questions), so cached builds rebuild.
GENERATOR_VERSION = 2

# How each question type is worded in train and val; the first is the template the test split asks.
TRAIN_PHRASINGS: dict[str, tuple[str, ...]] = {
    "digit": ("Which digit is this?", "What digit is this?", "What number is shown?", "Which digit is written here?",
              "What digit does the image show?", "Name the digit.", "Tell me which digit this is."),
    "parity": ("Is the digit odd or even?", "Is this digit even or odd?", "Is the number odd or even?", "Odd or even?",
               "Tell me whether the digit is odd or even.", "Is the digit in the image odd or even?"),
    "greater": ("Is the digit greater than {n}?", "Is the digit bigger than {n}?", "Is this number larger than {n}?",
                "Is the digit more than {n}?", "Is the number greater than {n}?",
                "Is the digit in the picture greater than {n}?"),
}
# The typed test's phrasings: never in train or val (checked below, case and punctuation aside).
TYPED_PHRASINGS: dict[str, tuple[str, ...]] = {
    "digit": ("Which digit do you see?", "What's the handwritten digit?", "What number is written in the picture?",
              "Read the digit for me."),
    "parity": ("Would you say the digit is odd or even?", "Is the number shown even or odd?",
               "Is it an odd or an even digit?", "Even or odd: which is this number?"),
    "greater": ("Would you say the digit is bigger than {n}?", "Is the number shown larger than {n}?",
                "Is it more than {n}?", "Is this digit greater than {n} or not?"),
}
check_tables(TRAIN_PHRASINGS, TYPED_PHRASINGS)
# VQABuildConfig.phrasings -> the training table (digits-vqa has one).
PHRASING_TABLES = {"standard": TRAIN_PHRASINGS}
@lru_cache(maxsize=1)
def _digits():
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images, data.target


def digit_image(index: int, size: int = 32):
    """The ``index``-th scikit-learn digit as a ``size`` x ``size`` greyscale PIL image (white ink on black).

    Example:
        >>> digit_image(0).size, digit_image(0).mode
        ((32, 32), 'L')
    """
    from PIL import Image

    images, _ = _digits()
    pixels = (images[index] * (255 / 16)).round().astype("uint8")  # 0..16 grey levels -> 0..255
    # Bilinear keeps the strokes smooth; the 8x8 source stays the ground truth in the JSON.
    return Image.fromarray(pixels, mode="L").resize((size, size), Image.BILINEAR)


def pose(label: int, qtype: str, rng: random.Random) -> Posed:
    """A question about a digit with true ``label``, before it is worded.

    Example:
        >>> pose(7, "parity", random.Random(0))
        Posed(form='parity', slots={}, answer='odd')
    """
    if qtype == "digit":
        return Posed("digit", {}, str(label))
    if qtype == "parity":
        return Posed("parity", {}, "odd" if label % 2 else "even")
    if qtype == "greater":
        n = rng.randint(0, 8)
        return Posed("greater", {"n": str(n)}, "yes" if label > n else "no")
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


def ask(label: int, qtype: str, rng: random.Random) -> tuple[str, str]:
    """A (question, answer) about a digit with true ``label``, in the template's words.

    Example:
        >>> ask(7, "parity", random.Random(0))
        ('Is the digit odd or even?', 'odd')
    """
    posed = pose(label, qtype, rng)
    return render(TRAIN_PHRASINGS[posed.form][0], posed.slots), posed.answer


def split_indices(seed: int, sizes: dict[str, int]) -> dict[str, list[int]]:
    """Disjoint image indices for train/val/test from a seeded permutation; captions reuse train.

    Example:
        >>> parts = split_indices(0, {"train": 5, "val": 2, "test": 2})
        >>> [len(v) for v in parts.values()], len(set(sum(parts.values(), [])))
        ([5, 2, 2], 9)
    """
    total = len(_digits()[1])
    wanted = sum(sizes.get(s, 0) for s in _SPLIT_ORDER)
    if wanted > total:
        raise ValueError(
            f"digits-vqa has {total} images; n_train + n_val + n_test = {wanted} is too many "
            "(the splits never share an image)"
        )
    order = list(range(total))
    random.Random(f"digits-vqa/{seed}/permutation").shuffle(order)
    parts, start = {}, 0
    for split in _SPLIT_ORDER:
        n = sizes.get(split, 0)
        parts[split], start = order[start : start + n], start + n
    if sizes.get("captions", 0):
        parts["captions"] = [parts["train"][i % max(1, len(parts["train"]))] for i in range(sizes["captions"])]
        if not parts["train"]:
            raise ValueError("digits-vqa captions reuse training images: set n_train > 0 or n_captions = 0")
    return parts


def posed_split(split: str, indices: list[int], seed: int = 0) -> Iterator[tuple[int, str, Posed]]:
    """``(image index, question type, posed question)`` of ``split``'s QA samples, types in turn."""
    rng = random.Random(f"digits-vqa/{seed}/{split}")
    _, labels = _digits()
    for i, index in enumerate(indices):
        qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        yield index, qtype, pose(int(labels[index]), qtype, rng)


def generate_split(split: str, indices: list[int], seed: int = 0, size: int = 32) -> Iterator[dict[str, Any]]:
    """Yield the shard samples of ``split`` over the given scikit-learn image indices.

    The test split asks the template with the short-answer instruction; train and val ask as
    people type (their JSON says how), from a wording RNG of their own.
    """
    _, labels = _digits()
    if split == "captions":
        for i, index in enumerate(indices):
            label = int(labels[index])
            yield caption_record(f"{split}-{i:06d}", encode_png(digit_image(index, size)),
                                 f"A handwritten digit {label}.", i, scene=_scene(index, label, size))
        return
    wording = random.Random(f"digits-vqa/{seed}/{split}/wording")
    for i, (index, qtype, posed) in enumerate(posed_split(split, indices, seed)):
        yield qa_record(split, f"{split}-{i:06d}", encode_png(digit_image(index, size)), posed, qtype, i,
                        _scene(index, labels[index], size), TRAIN_PHRASINGS, wording)


def _scene(index: int, label: int, size: int) -> dict[str, Any]:
    return {"digit": int(label), "source_index": int(index), "width": size, "height": size}


def typed_test(test_records: list[dict[str, Any]], indices: list[int], seed: int = 0) -> list[dict[str, Any]]:
    """The typed test: the test split's questions (re-posed from the same RNG) worded with :data:`TYPED_PHRASINGS`."""
    bodies = [json.loads(rec["json"]) for rec in test_records]
    posed = (p for _, _, p in posed_split("test", indices, seed))
    return typed_records(zip(bodies, posed), TYPED_PHRASINGS, random.Random(f"digits-vqa/{seed}/test_typed"))


def build_digits_vqa(out_dir: str | Path, cfg: VQABuildConfig | None = None) -> DatasetIndex:
    """Build digits-vqa into ``out_dir`` (shards, VQAv2 test JSON templated and typed, index).

    Example:
        >>> import tempfile
        >>> cfg = VQABuildConfig(n_train=4, n_val=0, n_test=2, n_captions=0, image_size=32)
        >>> build_digits_vqa(tempfile.mkdtemp(), cfg).splits["test"].samples
        2
    """
    cfg = cfg or DEFAULT_CONFIG
    training_table(PHRASING_TABLES, cfg.phrasings, "digits-vqa")
    parts = split_indices(cfg.seed, cfg.split_sizes())
    return build_vqa_dataset(
        out_dir,
        "digits-vqa",
        cfg,
        lambda split, n: generate_split(split, parts[split], cfg.seed, cfg.image_size),
        {"question_types": list(QUESTION_TYPES), "source": "sklearn.datasets.load_digits"},
        typed=lambda records: typed_test(records, parts["test"], cfg.seed),
    )
