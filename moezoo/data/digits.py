"""digits-vqa: questions about the real handwritten digits bundled with scikit-learn.

The images are the UCI optical-recognition digits (Alpaydin & Kaynak 1998) that
``sklearn.datasets.load_digits`` ships (1,797 8x8 images, 17 grey levels; no
download). Each is upscaled to a square greyscale PNG. The train/val/test splits
partition a seeded permutation of the images, so no test image is seen in training.
Question types: ``digit`` (which digit), ``parity`` (odd/even), ``greater`` (> N).
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

from moezoo.data.shards import DatasetIndex, encode_png
from moezoo.data.vqa import VQABuildConfig, build_vqa_dataset, caption_record, vqa_record

QUESTION_TYPES = ("digit", "parity", "greater")
# The source digits are 8x8 pixels: 32x32 keeps them sharp without wasting pixels.
DEFAULT_CONFIG = VQABuildConfig(image_size=32)
# Splits draw disjoint images in this order; captions reuse the training images.
_SPLIT_ORDER = ("train", "val", "test")


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


def ask(label: int, qtype: str, rng: random.Random) -> tuple[str, str]:
    """A (question, answer) about a digit with true ``label``.

    Example:
        >>> ask(7, "parity", random.Random(0))
        ('Is the digit odd or even?', 'odd')
    """
    if qtype == "digit":
        return "Which digit is this?", str(label)
    if qtype == "parity":
        return "Is the digit odd or even?", "odd" if label % 2 else "even"
    if qtype == "greater":
        n = rng.randint(0, 8)
        return f"Is the digit greater than {n}?", "yes" if label > n else "no"
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


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


def generate_split(split: str, indices: list[int], seed: int = 0, size: int = 32) -> Iterator[dict[str, Any]]:
    """Yield the shard samples of ``split`` over the given scikit-learn image indices."""
    rng = random.Random(f"digits-vqa/{seed}/{split}")
    _, labels = _digits()
    for i, index in enumerate(indices):
        key, label = f"{split}-{i:06d}", int(labels[index])
        png = encode_png(digit_image(index, size))
        scene = {"digit": label, "source_index": int(index), "width": size, "height": size}
        if split == "captions":
            yield caption_record(key, png, f"A handwritten digit {label}.", i, scene=scene)
            continue
        qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        question, answer = ask(label, qtype, rng)
        yield vqa_record(key, png, question, answer, qtype, i, scene=scene)


def build_digits_vqa(out_dir: str | Path, cfg: VQABuildConfig | None = None) -> DatasetIndex:
    """Build digits-vqa into ``out_dir`` (shards, VQAv2 test JSON, index).

    Example:
        >>> import tempfile
        >>> cfg = VQABuildConfig(n_train=4, n_val=0, n_test=2, n_captions=0, image_size=32)
        >>> build_digits_vqa(tempfile.mkdtemp(), cfg).splits["test"].samples
        2
    """
    cfg = cfg or DEFAULT_CONFIG
    parts = split_indices(cfg.seed, cfg.split_sizes())
    return build_vqa_dataset(
        out_dir,
        "digits-vqa",
        cfg,
        lambda split, n: generate_split(split, parts[split], cfg.seed, cfg.image_size),
        {"question_types": list(QUESTION_TYPES), "source": "sklearn.datasets.load_digits"},
    )
