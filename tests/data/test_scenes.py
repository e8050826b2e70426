"""shapes-vqa: every answer in the shards agrees with the scene the image was drawn from.

The checks here re-derive each answer from the stored scene with their own parsing of
the question text (not the generator's code or its phrasing tables), and check the image
against the scene. The parser reads a question the way a person would, by its content
words, so it handles every wording: the test split's template, the varied train and val
questions, and the typed test's held-out phrasings.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter

import pytest
from PIL import Image

from moezoo.data.scenes import COLORS, QUESTION_TYPES, SHAPES

INSTRUCTION = "Answer the question using a single word or phrase."
# The test split's questions, exactly as every shapes_vqa figure so far was measured on.
TEMPLATES = [r"What colour is the (\w+)\?", r"What shape is the (\w+) object\?", r"How many objects are there\?",
             r"How many (\w+) objects are there\?", r"How many (\w+)s are there\?", r"Is there a (\w+) (\w+)\?",
             r"Where is the (\w+) (\w+) relative to the (\w+) (\w+)\?"]


def _find(objs, color, shape):
    (obj,) = [o for o in objs if o["color"] == color and o["shape"] == shape]
    return obj


def _position(a: dict, b: dict) -> str:
    dx, dy = a["x"] - b["x"], a["y"] - b["y"]
    if abs(dx) > abs(dy):
        assert abs(dx) - abs(dy) >= 4, "ambiguous position question"
        return "left" if dx < 0 else "right"
    assert abs(dy) - abs(dx) >= 4, "ambiguous position question"
    return "above" if dy < 0 else "below"


def oracle(question: str, objs: list[dict]) -> tuple[str, str]:
    """(question type, answer) from first principles: the question's content words and the scene."""
    words = re.findall(r"[a-z']+", question.lower())
    text = " ".join(words)
    colors = [w for w in words if w in COLORS]
    shapes = [w[:-1] if w[:-1] in SHAPES else w for w in words if w in SHAPES or w[:-1] in SHAPES]
    if "how many" in text or "count" in words or "number of" in text:
        assert len(colors) + len(shapes) <= 1, question
        if colors:
            return "count", str(sum(o["color"] == colors[0] for o in objs))
        if shapes:
            return "count", str(sum(o["shape"] == shapes[0] for o in objs))
        assert re.search(r"\b(objects|shapes|things)\b", text), question
        return "count", str(len(objs))
    if len(colors) == 2:  # two objects: where is one relative to the other
        assert len(shapes) == 2 and re.search(r"where|left|position|relative|compared", text), question
        first, second = _find(objs, colors[0], shapes[0]), _find(objs, colors[1], shapes[1])
        # "Relative to the B, where is the A?" names the reference object first.
        a, b = (second, first) if re.match(r"(relative|compared) to", text) else (first, second)
        return "position", _position(a, b)
    if "colour" in words or "color" in words:
        assert len(shapes) == 1 and not colors, question
        (o,) = [o for o in objs if o["shape"] == shapes[0]]  # must be unique
        return "color", o["color"]
    if "shape" in words:
        assert len(colors) == 1 and not shapes, question
        (o,) = [o for o in objs if o["color"] == colors[0]]
        return "shape", o["shape"]
    assert len(colors) == 1 and len(shapes) == 1, question
    return "exists", "yes" if any(o["color"] == colors[0] and o["shape"] == shapes[0] for o in objs) else "no"


def prompt(question: str, instruction: str) -> str:
    """The human turn after the image, with the instruction where the sample says it is."""
    return {"after": f"{question}\n{INSTRUCTION}", "before": f"{INSTRUCTION}\n{question}",
            "inline": f"{question} {INSTRUCTION}", "none": question}[instruction]


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_answers_match_scene_and_image(shapes_dir, read_split, split):
    types = Counter()
    for key, files in read_split(shapes_dir, split).items():
        body, png = json.loads(files["json"]), files["png"]
        objs = body["scene"]["objects"]
        assert 1 <= len(objs) <= 4
        assert len({(o["color"], o["shape"]) for o in objs}) == len(objs)
        assert oracle(body["question"], objs) == (body["question_type"], body["answer"]), key
        if split == "test":  # the template with the instruction after it, as always
            assert any(re.fullmatch(t, body["question"]) for t in TEMPLATES), body["question"]
            assert "instruction" not in body
        asked = prompt(body["question"], body.get("instruction", "after"))
        assert body["conversations"] == [
            {"from": "human", "value": "<image>\n" + asked},
            {"from": "gpt", "value": body["answer"]},
        ]
        image = Image.open(io.BytesIO(png)).convert("RGB")
        assert image.size == (64, 64)
        for o in objs:  # the image was drawn from this scene: each centre has its object's colour
            assert image.getpixel((o["x"], o["y"])) == COLORS[o["color"]], (key, o)
        drawn = {c for c in image.getdata()} - {(250, 250, 250)}
        assert drawn == {COLORS[o["color"]] for o in objs}  # and nothing else was drawn
        types[body["question_type"]] += 1
    assert set(types) == set(QUESTION_TYPES) and max(types.values()) - min(types.values()) <= 1


def test_captions_and_vqav2_json(shapes_dir, read_split):
    for key, files in read_split(shapes_dir, "captions").items():
        body = json.loads(files["json"])
        objs = sorted(body["scene"]["objects"], key=lambda o: o["x"])
        for o in objs:
            assert f"{o['color']} {o['shape']}" in body["caption"]
        positions = [body["caption"].index(f"{o['color']} {o['shape']}") for o in objs]
        assert positions == sorted(positions), key
        assert body["conversations"][0]["value"] == "<image>"
    test = {b["question_id"]: b for b in (json.loads(f["json"]) for f in read_split(shapes_dir, "test").values())}
    questions = json.loads((shapes_dir / "test_questions.json").read_text())["questions"]
    annotations = json.loads((shapes_dir / "test_annotations.json").read_text())["annotations"]
    assert len(questions) == len(annotations) == len(test) == 15
    for q, a in zip(questions, annotations):
        assert q["question"] == test[q["question_id"]]["question"]
        assert {x["answer"] for x in a["answers"]} == {a["multiple_choice_answer"]} == {test[a["question_id"]]["answer"]}
        assert len(a["answers"]) == 10


def test_vocabulary_is_closed():
    assert len(set(COLORS.values())) == len(COLORS) and len(SHAPES) == 4


def test_typed_test_asks_the_test_questions_in_other_words(shapes_dir, read_split):
    test = {b["question_id"]: b for b in (json.loads(f["json"]) for f in read_split(shapes_dir, "test").values())}
    questions = json.loads((shapes_dir / "test_typed_questions.json").read_text())["questions"]
    annotations = json.loads((shapes_dir / "test_annotations.json").read_text())["annotations"]  # same ids
    assert [q["question_id"] for q in questions] == [a["question_id"] for a in annotations] == sorted(test)
    assert not (shapes_dir / "test_typed_annotations.json").exists()
    spelt = Counter()
    for q, a in zip(questions, annotations):
        t = test[q["question_id"]]
        assert q["image_id"] == t["image_id"] and a["question_type"] == t["question_type"]
        assert {x["answer"] for x in a["answers"]} == {a["multiple_choice_answer"]} == {t["answer"]}
        assert oracle(q["question"], t["scene"]["objects"]) == (t["question_type"], t["answer"]), q
        assert q["question"].lower().rstrip("?.") != t["question"].lower().rstrip("?")  # asked another way
        assert q["prompt"] == prompt(q["question"], q["instruction"])
        spelt.update(w for w in ("colour", "color") if re.search(rf"\b{w}\b", q["question"].lower()))
    # The 15 questions alternate with and without the instruction; the three colour ones use both spellings.
    assert Counter(q["instruction"] for q in questions) == {"after": 8, "none": 7}
    assert set(spelt) == {"colour", "color"}
