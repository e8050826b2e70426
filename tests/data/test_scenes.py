"""shapes-vqa: every answer in the shards agrees with the scene the image was drawn from.

The checks here re-derive each answer from the stored scene with their own parsing of
the question text (not the generator's code), and check the image against the scene.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter

import pytest
from PIL import Image

from moezoo.data.scenes import COLORS, QUESTION_TYPES, SHAPES


def _find(objs, color, shape):
    (obj,) = [o for o in objs if o["color"] == color and o["shape"] == shape]
    return obj


def oracle(question: str, objs: list[dict]) -> str:
    """The answer from first principles."""
    if m := re.fullmatch(r"What colour is the (\w+)\?", question):
        (o,) = [o for o in objs if o["shape"] == m[1]]  # must be unique
        return o["color"]
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        (o,) = [o for o in objs if o["color"] == m[1]]
        return o["shape"]
    if question == "How many objects are there?":
        return str(len(objs))
    if m := re.fullmatch(r"How many (\w+) objects are there\?", question):
        return str(sum(o["color"] == m[1] for o in objs))
    if m := re.fullmatch(r"How many (\w+)s are there\?", question):
        return str(sum(o["shape"] == m[1] for o in objs))
    if m := re.fullmatch(r"Is there a (\w+) (\w+)\?", question):
        return "yes" if any(o["color"] == m[1] and o["shape"] == m[2] for o in objs) else "no"
    if m := re.fullmatch(r"Where is the (\w+) (\w+) relative to the (\w+) (\w+)\?", question):
        a, b = _find(objs, m[1], m[2]), _find(objs, m[3], m[4])
        dx, dy = a["x"] - b["x"], a["y"] - b["y"]
        if abs(dx) > abs(dy):
            assert abs(dx) - abs(dy) >= 4, "ambiguous position question"
            return "left" if dx < 0 else "right"
        assert abs(dy) - abs(dx) >= 4, "ambiguous position question"
        return "above" if dy < 0 else "below"
    raise AssertionError(f"unknown question form: {question!r}")


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_answers_match_scene_and_image(shapes_dir, read_split, split):
    types = Counter()
    for key, files in read_split(shapes_dir, split).items():
        body, png = json.loads(files["json"]), files["png"]
        objs = body["scene"]["objects"]
        assert 1 <= len(objs) <= 4
        assert len({(o["color"], o["shape"]) for o in objs}) == len(objs)
        assert body["answer"] == oracle(body["question"], objs), key
        assert body["conversations"] == [
            {"from": "human", "value": "<image>\n" + body["question"] + "\nAnswer the question using a single word or phrase."},
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
