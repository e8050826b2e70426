"""shapes-vqa: procedurally drawn scenes of 1-4 coloured shapes with exact answers.

In the spirit of CLEVR (Johnson et al. 2017) and Sort-of-CLEVR (Santoro et al. 2017),
shrunk to 64x64 so a model learns it on a CPU in minutes. Each image is drawn with
PIL from a *scene* (shapes, colours, centres, sizes) that is stored in the sample's
JSON, so every answer can be checked against what was drawn. Within a scene every
(colour, shape) pair is unique and objects never overlap, which keeps each question
unambiguous. Question types: ``color``, ``shape``, ``count``, ``position``, ``exists``.

Each question is posed once and worded by :mod:`moezoo.data.phrasing`: the test split asks
the template (the first phrasing of each form in :data:`TRAIN_PHRASINGS`) with the
short-answer instruction, as every figure so far was measured; train and val ask as people
type (:data:`TRAIN_PHRASINGS`, both spellings, with or without the instruction); the typed
test asks the test questions with :data:`TYPED_PHRASINGS`, which training never uses.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator

from moezoo.data.phrasing import (PhrasingTable, Posed, check_tables, keyword_forms, qa_record, render, training_table,
                                  typed_records, widen)
from moezoo.data.shards import DatasetIndex, encode_png
from moezoo.data.vqa import VQABuildConfig, build_vqa_dataset, caption_record

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
# Bumped whenever the same config writes different samples (2: typed questions; 3: the broad table
# gained keyword forms), so cached builds rebuild.
GENERATOR_VERSION = 3

# How each question form is worded in train and val; the first is the template the test split asks.
# Slots: {shape}, {color}, {a} / {b} ("red circle"), {article} ("a" / "an"); {colour} is spelt
# "colour" or "color". The count type has three forms (all objects, of a colour, of a shape).
TRAIN_PHRASINGS: dict[str, tuple[str, ...]] = {
    "color": ("What {colour} is the {shape}?", "Which {colour} is the {shape}?", "The {shape} is what {colour}?",
              "Tell me the {colour} of the {shape}.", "What is the {colour} of the {shape}?",
              "What {colour} is the {shape} in the picture?", "Name the {colour} of the {shape}."),
    "shape": ("What shape is the {color} object?", "Which shape is the {color} object?",
              "The {color} object is what shape?", "Tell me the shape of the {color} object.",
              "What is the shape of the {color} object?", "What shape is the {color} one?",
              "What kind of shape is the {color} thing in the image?"),
    "count_all": ("How many objects are there?", "How many objects are in the image?", "Count the objects.",
                  "How many shapes are there?", "What is the number of objects?", "How many things can you see?"),
    "count_color": ("How many {color} objects are there?", "How many {color} objects are in the image?",
                    "Count the {color} objects.", "How many {color} shapes are there?",
                    "What is the number of {color} objects?", "How many {color} things can you see?"),
    "count_shape": ("How many {shape}s are there?", "How many {shape}s are in the picture?", "Count the {shape}s.",
                    "What is the number of {shape}s?", "How many {shape}s can you see?",
                    "How many {shape}s does the image have?"),
    "position": ("Where is the {a} relative to the {b}?", "Where is the {a} in relation to the {b}?",
                 "Is the {a} left of, right of, above or below the {b}?", "Where's the {a} compared to the {b}?",
                 "What is the position of the {a} relative to the {b}?", "Relative to the {b}, where is the {a}?",
                 "Where is the {a} with respect to the {b}?"),
    # The template keeps "a" before every colour ("a orange"), as the test split has always asked.
    "exists": ("Is there a {color} {shape}?", "Is there {article} {color} {shape} in the image?",
               "Does the image contain {article} {color} {shape}?", "Can you see {article} {color} {shape}?",
               "Is {article} {color} {shape} present?", "Is there any {color} {shape}?",
               "Do you see {article} {color} {shape} in the picture?"),
}
# The typed test's phrasings: never in train or val (checked below, case and punctuation aside).
TYPED_PHRASINGS: dict[str, tuple[str, ...]] = {
    "color": ("What {colour} does the {shape} have?", "Can you tell me what {colour} the {shape} is?",
              "What's the {colour} of the {shape} in the image?", "In what {colour} is the {shape} drawn?",
              "{shape} {colour}?"),
    "shape": ("What shape does the {color} object have?", "Can you tell me what shape the {color} object is?",
              "What's the shape of the {color} thing in the picture?", "Which shape is drawn in {color}?",
              "{color} object shape?"),
    "count_all": ("How many objects do you see?", "Can you count the objects in the picture?",
                  "What's the total number of shapes?", "Number of objects?"),
    "count_color": ("How many {color} objects do you see?", "Can you count the {color} objects in the picture?",
                    "What's the total number of {color} shapes?", "Number of {color} objects?"),
    "count_shape": ("How many {shape}s do you see?", "Can you count the {shape}s in the image?",
                    "What's the total number of {shape}s?", "Number of {shape}s?"),
    "position": ("Where is the {a} located relative to the {b}?",
                 "Is the {a} to the left of, to the right of, above or below the {b}?",
                 "How is the {a} positioned compared to the {b}?", "Compared to the {b}, where is the {a}?",
                 "Where can the {a} be found in relation to the {b}?"),
    "exists": ("Does the picture have {article} {color} {shape} in it?", "Are there any {color} {shape}s?",
               "Is {article} {color} {shape} visible in the image?", "Can {article} {color} {shape} be seen?",
               "Tell me if there is {article} {color} {shape}."),
}
check_tables(TRAIN_PHRASINGS, TYPED_PHRASINGS)
# More ways to ask each form, for the "wide" training table (VQABuildConfig(phrasings="wide")): other
# verbs, short noun phrases, plurals, contractions, sentences that name the thing first. None of them
# reuses a held-out phrasing's frame ("can you count", "total number of", "are there any", "tell me if",
# "can ... be seen", "is ... visible", "drawn in", "can you tell me", "compared to", "positioned",
# "located", "found in relation"), so the typed test still measures wordings never trained on.
MORE_PHRASINGS: dict[str, tuple[str, ...]] = {
    "color": ("{colour} of the {shape}?", "What's the {shape}'s {colour}?", "Say the {colour} of the {shape}.",
              "Identify the {colour} of the {shape}.", "The {shape}: what {colour} is it?",
              "What {colour} has the {shape} got?", "I'd like to know the {colour} of the {shape}.",
              "What {colour} is used for the {shape}?", "Which {colour} was the {shape} given?"),
    "shape": ("Shape of the {color} object?", "What is the {color} object's shape?", "What is the {color} shape?",
              "Identify the shape of the {color} object.", "The {color} one: what shape is it?",
              "Name the shape of the {color} thing.", "What shape has the {color} object got?",
              "Say which shape is {color}.", "I'd like to know the shape of the {color} object."),
    "count_all": ("How many objects can you find?", "Count all the shapes.", "How many shapes are in the picture?",
                  "How many objects does the image contain?", "Give the number of objects.",
                  "How many items are there?", "How many shapes?", "What's the count of objects?"),
    "count_color": ("How many {color} objects can you find?", "Count all the {color} shapes.",
                    "How many {color} shapes are in the picture?", "How many {color} objects does the image contain?",
                    "Give the number of {color} objects.", "How many {color} items are there?",
                    "How many {color} shapes?", "What's the count of {color} objects?"),
    "count_shape": ("How many {shape}s can you find?", "Count all the {shape}s.", "How many {shape}s are in the image?",
                    "How many {shape}s does the picture contain?", "Give the number of {shape}s.",
                    "How many {shape}s?", "What's the count of {shape}s?", "How many {shape}s are shown?"),
    "position": ("Where is the {a} placed relative to the {b}?", "In relation to the {b}, where is the {a}?",
                 "Where does the {a} sit relative to the {b}?", "Is the {a} left, right, above or below the {b}?",
                 "Which side of the {b} is the {a} on?", "Where's the {a} with respect to the {b}?",
                 "The {a} is where relative to the {b}?", "Position of the {a} relative to the {b}?"),
    "exists": ("Is there {article} {color} {shape} in the picture?",
               "Can I see {article} {color} {shape} in the image?", "Is there {article} {color} {shape} anywhere?",
               "Is there {article} {color} {shape} shown?",
               "Does {article} {color} {shape} appear in the image?", "Do you see any {color} {shape}s?",
               "Is there {article} {color} {shape} or not?", "Is one of the objects {article} {color} {shape}?"),
}
# Phrasings that break the surface cues a model trained on the tables above answers from instead of
# reading the question (found by scoring the flagship's typed test per phrasing, 2026-12-05): there,
# a plural noun only ever meant "how many" ("Are there any red circles?" -> "0"), an opener asking
# for yes or no ("Can you", "Do you", "Is there") only ever meant exists ("Can you count the
# objects?" -> "yes" or a wrong count), and a bare noun phrase was rarely a question at all
# ("red object shape?"). Here each of those cues appears in every form it can, so no cue alone
# tells the type. None reuses a held-out frame (the list above MORE_PHRASINGS), so the typed test
# still asks wordings never trained on; tests/data/test_typed_questions.py checks that each cue
# spans several forms. The "broad" table (phrasings="broad") is the wide one, these, and the keyword
# query of each (phrasing.keyword_forms: "What colour is the circle?" -> "colour circle?", as
# people type into a search box), less any that equals a held-out phrasing: two do ("{shape}
# {colour}?" and "{color} object shape?", from "The {shape}, which {colour}?" and "The {color}
# object, which shape?"), so the typed test's keyword questions differ from trained ones only in
# word order.
CROSS_CUE_PHRASINGS: dict[str, tuple[str, ...]] = {
    "color": ("Can you name the {colour} of the {shape}?", "Do you know the {colour} of the {shape}?",
              "Could you say which {colour} the {shape} is?", "The {shape}, which {colour}?",
              "What {colour} do you notice on the {shape}?", "Is there a {colour} you would give the {shape}?",
              "Which {colour} is there on the {shape}?", "{colour} of the {shape} in the image?"),
    "shape": ("Can you name the shape of the {color} object?", "Do you know what shape the {color} object is?",
              "Could you say which shape is {color}?", "The {color} object, which shape?",
              "What shape do you notice in {color}?", "Which shape is there in {color}?",
              "{color} thing, what shape?", "Shape of the {color} thing in the image?"),
    "count_all": ("Can you say how many objects there are?", "Do you know how many shapes there are?",
                  "Could you give the number of objects?", "Objects in the picture, how many?",
                  "Is the number of objects one, two, three or four?", "Are there one, two, three or four objects?",
                  "Shapes in the image, how many?", "Tell me how many objects there are."),
    "count_color": ("Can you say how many {color} objects there are?", "Do you know how many {color} shapes there are?",
                    "Could you give the number of {color} objects?", "{color} objects in the picture, how many?",
                    "How many {color} objects are there, if any?", "Is the number of {color} objects zero or more?",
                    "{color} shapes in the image, how many?", "Tell me how many {color} objects there are."),
    "count_shape": ("Can you say how many {shape}s there are?", "Do you know how many {shape}s there are?",
                    "Could you give the number of {shape}s?", "{shape}s in the picture, how many?",
                    "How many {shape}s are there, if any?", "Is the number of {shape}s zero or more?",
                    "{shape}s in the image, how many?", "Tell me how many {shape}s there are."),
    "position": ("Can you say where the {a} is relative to the {b}?",
                 "Do you know where the {a} is relative to the {b}?",
                 "Could you say where the {a} sits next to the {b}?", "The {a}, where relative to the {b}?",
                 "Which is it: the {a} left of, right of, above or below the {b}?",
                 "Looking at the {b}, where is the {a}?",
                 "Tell me where the {a} is relative to the {b}.", "{a} relative to the {b} in the image?"),
    "exists": ("Can you find {article} {color} {shape}?", "Do you know if there is {article} {color} {shape}?",
               "Could there be {article} {color} {shape} in the image?", "{article} {color} {shape}, yes or no?",
               "Are any {color} {shape}s in the picture?", "Is the number of {color} {shape}s more than zero?",
               "Any {color} {shape}s in the image?", "Is there at least one {color} {shape}?"),
}
# VQABuildConfig.phrasings -> the training table ("standard": what data/ ships and the router recipes train on).
PHRASING_TABLES: dict[str, PhrasingTable] = {"standard": TRAIN_PHRASINGS,
                                             "wide": widen(TRAIN_PHRASINGS, MORE_PHRASINGS)}
_CROSS = widen(PHRASING_TABLES["wide"], CROSS_CUE_PHRASINGS)
PHRASING_TABLES["broad"] = widen(_CROSS, keyword_forms(_CROSS, TYPED_PHRASINGS))
check_tables(PHRASING_TABLES["broad"], TYPED_PHRASINGS)


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


def pose(scene: dict[str, Any], qtype: str, rng: random.Random) -> Posed | None:
    """A question of type ``qtype`` about ``scene`` before it is worded, or None if the scene cannot pose one.

    Example:
        >>> scene = {"objects": [{"color": "orange", "shape": "circle", "x": 10, "y": 10, "size": 5}]}
        >>> pose(scene, "color", random.Random(0))
        Posed(form='color', slots={'shape': 'circle'}, answer='orange')
    """
    objs = scene["objects"]
    if qtype == "color":
        unique = [o for o in objs if sum(p["shape"] == o["shape"] for p in objs) == 1]
        return Posed("color", {"shape": (o := rng.choice(unique))["shape"]}, o["color"]) if unique else None
    if qtype == "shape":
        unique = [o for o in objs if sum(p["color"] == o["color"] for p in objs) == 1]
        return Posed("shape", {"color": (o := rng.choice(unique))["color"]}, o["shape"]) if unique else None
    if qtype == "count":
        form = rng.choice(("all", "color", "shape"))
        if form == "all":
            return Posed("count_all", {}, str(len(objs)))
        if form == "color":
            c = rng.choice(list(COLORS))
            return Posed("count_color", {"color": c}, str(sum(o["color"] == c for o in objs)))
        s = rng.choice(SHAPES)
        return Posed("count_shape", {"shape": s}, str(sum(o["shape"] == s for o in objs)))
    if qtype == "position":
        pairs = [(a, b) for a in objs for b in objs if a is not b and relative_position(a, b)]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        return Posed("position", {"a": _name(a), "b": _name(b)}, relative_position(a, b))
    if qtype == "exists":
        present = {(o["color"], o["shape"]) for o in objs}
        if rng.random() < 0.5:  # balanced yes/no, so the prior alone scores 50%
            color, shape = rng.choice(sorted(present))
        else:
            color, shape = rng.choice(sorted((c, s) for c in COLORS for s in SHAPES if (c, s) not in present))
        article = "an" if color[0] in "aeiou" else "a"
        return Posed("exists", {"color": color, "shape": shape, "article": article},
                     "yes" if (color, shape) in present else "no")
    raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")


def ask(scene: dict[str, Any], qtype: str, rng: random.Random) -> tuple[str, str] | None:
    """A (question, answer) of type ``qtype`` about ``scene`` in the template's words, or None.

    Example:
        >>> scene = {"objects": [{"color": "red", "shape": "circle", "x": 10, "y": 10, "size": 5}]}
        >>> ask(scene, "color", random.Random(0))
        ('What colour is the circle?', 'red')
    """
    posed = pose(scene, qtype, rng)
    return None if posed is None else (render(TRAIN_PHRASINGS[posed.form][0], posed.slots), posed.answer)


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


def posed_split(split: str, n: int, seed: int = 0, size: int = 64) -> Iterator[tuple[dict[str, Any], str, Posed]]:
    """``(scene, question type, posed question)`` of the ``n`` QA samples of ``split``, in order.

    Question types cycle so every split is balanced across them. Each split draws from
    its own RNG (seeded by dataset, seed and split), so growing one split leaves the
    others unchanged; the wording draws from another, so it never moves a scene or an answer.
    """
    rng = random.Random(f"shapes-vqa/{seed}/{split}")
    for i in range(n):
        qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        while (posed := pose(scene := random_scene(rng, size), qtype, rng)) is None:
            pass  # this scene cannot pose the question type (e.g. no unique shape): draw another
        yield scene, qtype, posed


def generate_split(split: str, n: int, seed: int = 0, size: int = 64,
                   table: PhrasingTable = TRAIN_PHRASINGS) -> Iterator[dict[str, Any]]:
    """Yield ``n`` shard samples of ``split``; the captions split holds captions, the others QA.

    The test split asks the template with the short-answer instruction; the other QA splits
    ask as people type, worded from ``table`` (the template is the same in every table), and their
    JSON says how (``phrasing``, ``instruction``, ``spelling``, ``casing``).
    """
    if split == "captions":
        rng = random.Random(f"shapes-vqa/{seed}/{split}")
        for i in range(n):
            scene = random_scene(rng, size)
            yield caption_record(f"{split}-{i:06d}", encode_png(draw_scene(scene)), caption(scene), i, scene=scene)
        return
    wording = random.Random(f"shapes-vqa/{seed}/{split}/wording")
    for i, (scene, qtype, posed) in enumerate(posed_split(split, n, seed, size)):
        yield qa_record(split, f"{split}-{i:06d}", encode_png(draw_scene(scene)), posed, qtype, i, scene,
                        table, wording)


def typed_test(test_records: list[dict[str, Any]], seed: int = 0, size: int = 64) -> list[dict[str, Any]]:
    """The typed test: the test split's questions (re-posed from the same RNG) worded with :data:`TYPED_PHRASINGS`."""
    bodies = [json.loads(rec["json"]) for rec in test_records]
    posed = (p for _, _, p in posed_split("test", len(bodies), seed, size))
    return typed_records(zip(bodies, posed), TYPED_PHRASINGS, random.Random(f"shapes-vqa/{seed}/test_typed"))


def build_shapes_vqa(out_dir: str | Path, cfg: VQABuildConfig | None = None) -> DatasetIndex:
    """Build shapes-vqa into ``out_dir``: train/val/test/captions shards, VQAv2 test JSON (templated and typed), index.

    Example:
        >>> import tempfile
        >>> cfg = VQABuildConfig(n_train=5, n_val=0, n_test=2, n_captions=0)
        >>> index = build_shapes_vqa(out := tempfile.mkdtemp(), cfg)
        >>> {k: v.samples for k, v in index.splits.items()}, (Path(out) / "test_typed_questions.json").is_file()
        ({'train': 5, 'test': 2}, True)
    """
    cfg = cfg or DEFAULT_CONFIG
    table = training_table(PHRASING_TABLES, cfg.phrasings, "shapes-vqa")
    return build_vqa_dataset(
        out_dir,
        "shapes-vqa",
        cfg,
        lambda split, n: generate_split(split, n, cfg.seed, cfg.image_size, table),
        {"question_types": list(QUESTION_TYPES), "colors": list(COLORS), "shapes": list(SHAPES)},
        typed=lambda records: typed_test(records, cfg.seed, cfg.image_size),
    )
