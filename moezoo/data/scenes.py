"""shapes-vqa: procedurally drawn scenes of 1-4 coloured shapes with exact answers.

In the spirit of CLEVR (Johnson et al. 2017) and Sort-of-CLEVR (Santoro et al. 2017),
shrunk to 64x64 so a model learns it on a CPU in minutes. Each image is drawn with
PIL from a *scene* (shapes, colours, centres, sizes) that is stored in the sample's
JSON, so every answer can be checked against what was drawn. Within a scene every
(colour, shape) pair is unique and objects never overlap, which keeps each question
unambiguous. Question types: ``color``, ``shape``, ``count``, ``position``, ``exists``.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Iterator

from moezoo.data.shards import DatasetIndex, encode_png
from moezoo.data.vqa import VQABuildConfig, build_vqa_dataset, caption_record, vqa_record

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (140, 60, 180),
    "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
BACKGROUND = (250, 250, 250)
QUESTION_TYPES = ("color", "shape", "count", "position", "exists")
MAX_OBJECTS = 4
DEFAULT_CONFIG = VQABuildConfig()
# A relative-position answer is only asked when the main axis wins by this many pixels,
# so "left" never hinges on a one-pixel difference a downscaled image cannot show.
POSITION_MARGIN = 4


def random_scene(rng: random.Random, size: int = 64) -> dict[str, Any]:
    """Draw a scene description: 1-4 non-overlapping objects with unique (colour, shape).

    Example:
        >>> scene = random_scene(random.Random(0))
        >>> 1 <= len(scene["objects"]) <= 4, sorted(scene["objects"][0])
        (True, ['color', 'shape', 'size', 'x', 'y'])
    """
    n = rng.randint(1, MAX_OBJECTS)
    pairs = rng.sample([(c, s) for c in COLORS for s in SHAPES], n)
    lo, hi = max(4, size // 11), max(5, size // 6)  # radius 5..10 px at 64x64
    objects: list[dict[str, Any]] = []
    for color, shape in pairs:
        for _ in range(200):  # rejection sampling; 4 small objects always fit in 200 tries
            r = rng.randint(lo, hi)
            x, y = rng.randint(r + 1, size - r - 2), rng.randint(r + 1, size - r - 2)
            if all((x - o["x"]) ** 2 + (y - o["y"]) ** 2 >= (r + o["size"] + 2) ** 2 for o in objects):
                objects.append({"color": color, "shape": shape, "x": x, "y": y, "size": r})
                break
    return {"width": size, "height": size, "objects": objects}


def draw_scene(scene: dict[str, Any]):
    """Render a scene to an RGB PIL image; each object's centre pixel has its exact colour.

    Example:
        >>> img = draw_scene({"width": 64, "height": 64, "objects": [
        ...     {"color": "red", "shape": "triangle", "x": 30, "y": 20, "size": 8}]})
        >>> img.getpixel((30, 20)), img.getpixel((0, 0))
        ((220, 40, 40), (250, 250, 250))
    """
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (scene["width"], scene["height"]), BACKGROUND)
    draw = ImageDraw.Draw(img)
    for o in scene["objects"]:
        x, y, r, fill = o["x"], o["y"], o["size"], COLORS[o["color"]]
        if o["shape"] == "circle":
            draw.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif o["shape"] == "square":
            h = round(r * 0.85)  # same visual area class as the circle
            draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
        elif o["shape"] == "triangle":
            draw.polygon([(x, y - r), (x - r, y + r * 0.8), (x + r, y + r * 0.8)], fill=fill)
        elif o["shape"] == "diamond":
            draw.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
        else:
            raise ValueError(f"unknown shape {o['shape']!r}; expected one of {SHAPES}")
    return img


def _name(o: dict[str, Any]) -> str:
    return f"{o['color']} {o['shape']}"


def relative_position(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """Where ``a`` is relative to ``b`` (``left``/``right``/``above``/``below``), or None if unclear.

    Example:
        >>> relative_position({"x": 10, "y": 30}, {"x": 40, "y": 32})
        'left'
        >>> relative_position({"x": 10, "y": 10}, {"x": 12, "y": 11}) is None
        True
    """
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]  # image y grows downwards
    if abs(dx) >= abs(dy) + POSITION_MARGIN:
        return "left" if dx < 0 else "right"
    if abs(dy) >= abs(dx) + POSITION_MARGIN:
        return "above" if dy < 0 else "below"
    return None


def ask(scene: dict[str, Any], qtype: str, rng: random.Random) -> tuple[str, str] | None:
    """A (question, answer) of type ``qtype`` about ``scene``, or None if the scene cannot pose one.

    Example:
        >>> scene = {"objects": [{"color": "red", "shape": "circle", "x": 10, "y": 10, "size": 5}]}
        >>> ask(scene, "color", random.Random(0))
        ('What colour is the circle?', 'red')
    """
    objs = scene["objects"]
    if qtype == "color":
        unique = [o for o in objs if sum(p["shape"] == o["shape"] for p in objs) == 1]
        return (f"What colour is the {(o := rng.choice(unique))['shape']}?", o["color"]) if unique else None
    if qtype == "shape":
        unique = [o for o in objs if sum(p["color"] == o["color"] for p in objs) == 1]
        return (f"What shape is the {(o := rng.choice(unique))['color']} object?", o["shape"]) if unique else None
    if qtype == "count":
        form = rng.choice(("all", "color", "shape"))
        if form == "all":
            return "How many objects are there?", str(len(objs))
        if form == "color":
            c = rng.choice(list(COLORS))
            return f"How many {c} objects are there?", str(sum(o["color"] == c for o in objs))
        s = rng.choice(SHAPES)
        return f"How many {s}s are there?", str(sum(o["shape"] == s for o in objs))
    if qtype == "position":
        pairs = [(a, b) for a in objs for b in objs if a is not b and relative_position(a, b)]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        return f"Where is the {_name(a)} relative to the {_name(b)}?", relative_position(a, b)
    if qtype == "exists":
        present = {(o["color"], o["shape"]) for o in objs}
        if rng.random() < 0.5:  # balanced yes/no, so the prior alone scores 50%
            color, shape = rng.choice(sorted(present))
        else:
            color, shape = rng.choice(sorted((c, s) for c in COLORS for s in SHAPES if (c, s) not in present))
        return f"Is there a {color} {shape}?", "yes" if (color, shape) in present else "no"
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


def caption(scene: dict[str, Any]) -> str:
    """A caption listing the objects from left to right.

    Example:
        >>> caption({"objects": [{"color": "red", "shape": "circle", "x": 40},
        ...                      {"color": "blue", "shape": "square", "x": 10}]})
        'A blue square and a red circle, from left to right.'
    """
    names = [f"a {_name(o)}" for o in sorted(scene["objects"], key=lambda o: o["x"])]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    text = text[0].upper() + text[1:]
    return f"{text}, from left to right." if len(names) > 1 else f"{text}."


def generate_split(split: str, n: int, seed: int = 0, size: int = 64) -> Iterator[dict[str, Any]]:
    """Yield ``n`` shard samples of ``split``; the captions split holds captions, the others QA.

    Question types cycle so every split is balanced across them. Each split draws from
    its own RNG (seeded by dataset, seed and split), so growing one split leaves the
    others unchanged.
    """
    rng = random.Random(f"shapes-vqa/{seed}/{split}")
    for i in range(n):
        key = f"{split}-{i:06d}"
        if split == "captions":
            scene = random_scene(rng, size)
            yield caption_record(key, encode_png(draw_scene(scene)), caption(scene), i, scene=scene)
            continue
        qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        while (qa := ask(scene := random_scene(rng, size), qtype, rng)) is None:
            pass  # this scene cannot pose the question type (e.g. no unique shape): draw another
        yield vqa_record(key, encode_png(draw_scene(scene)), qa[0], qa[1], qtype, i, scene=scene)


def build_shapes_vqa(out_dir: str | Path, cfg: VQABuildConfig | None = None) -> DatasetIndex:
    """Build shapes-vqa into ``out_dir``: train/val/test/captions shards, VQAv2 test JSON, index.

    Example:
        >>> import tempfile
        >>> cfg = VQABuildConfig(n_train=5, n_val=0, n_test=2, n_captions=0)
        >>> index = build_shapes_vqa(tempfile.mkdtemp(), cfg)
        >>> {k: v.samples for k, v in index.splits.items()}
        {'train': 5, 'test': 2}
    """
    cfg = cfg or DEFAULT_CONFIG
    return build_vqa_dataset(
        out_dir,
        "shapes-vqa",
        cfg,
        lambda split, n: generate_split(split, n, cfg.seed, cfg.image_size),
        {"question_types": list(QUESTION_TYPES), "colors": list(COLORS), "shapes": list(SHAPES)},
    )
