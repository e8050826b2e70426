"""Questions as people type them: the builders' variety, and a typed test that training never sees.

The counts are taken from the built shards' text, with this file's own normalising and
pattern matching, not from the phrasing module's helpers.
"""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from moezoo.data import digits, scenes
from moezoo.data.digits import build_digits_vqa
from moezoo.data.phrasing import Posed, keyword_forms, typed_wording
from moezoo.data.scenes import build_shapes_vqa
from moezoo.data.vqa import VQABuildConfig

INSTRUCTION = "Answer the question using a single word or phrase."
MODULES = {"shapes-vqa": scenes, "digits-vqa": digits}


def norm(text: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9{}' ]+", " ", text.lower()).split())


# What may fill each slot (the closed vocabulary); {colour} is either spelling.
SLOTS = {"colour": "colou?r", "color": "|".join(scenes.COLORS), "shape": "|".join(scenes.SHAPES), "article": "an?",
         "n": r"\d"}
SLOTS["a"] = SLOTS["b"] = f"(?:{SLOTS['color']}) (?:{SLOTS['shape']})"


def pattern(template: str) -> re.Pattern:
    """A phrasing as a regex over normalised questions: each slot matches the words that may fill it."""
    parts = re.split(r"\{(\w+)\}", norm(template))  # odd parts are slot names
    return re.compile("".join(f"(?:{SLOTS[p]})" if i % 2 else re.escape(p) for i, p in enumerate(parts)))


def split_bodies(root, split, read_split) -> list[dict]:
    return [json.loads(files["json"]) for files in read_split(root, split).values()]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """shapes-vqa with 1,000 training questions and digits-vqa with 600: enough to meet every phrasing."""
    root = tmp_path_factory.mktemp("typed")
    build_shapes_vqa(root / "shapes-vqa", VQABuildConfig(seed=0, n_train=1000, n_val=100, n_test=40, n_captions=0))
    build_digits_vqa(root / "digits-vqa", VQABuildConfig(seed=0, n_train=600, n_val=60, n_test=30, n_captions=0,
                                                         image_size=32))
    return root


@pytest.mark.parametrize("name", MODULES)
def test_tables_are_disjoint_once_case_and_punctuation_go(name):
    module = MODULES[name]
    assert set(module.TRAIN_PHRASINGS) == set(module.TYPED_PHRASINGS)
    train = {norm(p) for ps in module.TRAIN_PHRASINGS.values() for p in ps}
    typed = {norm(p) for ps in module.TYPED_PHRASINGS.values() for p in ps}
    assert not train & typed
    assert all(len(ps) >= 6 for ps in module.TRAIN_PHRASINGS.values())  # several phrasings per form
    assert all(len(ps) >= 4 for ps in module.TYPED_PHRASINGS.values())


@pytest.mark.parametrize("name", MODULES)
def test_held_out_phrasings_never_appear_in_train_or_val(built, read_split, name):
    module = MODULES[name]
    asked = [norm(b["question"]) for split in ("train", "val") for b in split_bodies(built / name, split, read_split)]
    for form, phrasings in module.TYPED_PHRASINGS.items():
        for phrasing in phrasings:
            regex = pattern(phrasing)
            assert not [q for q in asked if regex.fullmatch(q)], (form, phrasing)
    # ...while the patterns do recognise the typed test's own questions, so the check above can fail.
    typed = json.loads((built / name / "test_typed_questions.json").read_text())["questions"]
    patterns = [pattern(p) for ps in module.TYPED_PHRASINGS.values() for p in ps]
    assert all(any(r.fullmatch(norm(q["question"])) for r in patterns) for q in typed)


@pytest.mark.parametrize("name", MODULES)
def test_training_questions_come_in_every_phrasing_spelling_and_placement(built, read_split, name):
    module = MODULES[name]
    bodies = split_bodies(built / name, "train", read_split)
    used: Counter = Counter()
    for body in bodies:
        question = norm(body["question"])
        (match,) = [(form, i) for form, ps in module.TRAIN_PHRASINGS.items() for i, p in enumerate(ps)
                    if pattern(p).fullmatch(question)]  # exactly one phrasing says it
        used[match] += 1
    every = {(form, i) for form, ps in module.TRAIN_PHRASINGS.items() for i in range(len(ps))}
    assert set(used) == every, every - set(used)
    # A quarter of the questions ask the template (the test split's wording), the rest the other phrasings.
    assert 0.2 < sum(used[form, 0] for form in module.TRAIN_PHRASINGS) / len(bodies) < 0.3
    human = [b["conversations"][0]["value"].removeprefix("<image>\n") for b in bodies]
    placements = Counter("after" if h.endswith("\n" + INSTRUCTION) else "before" if h.startswith(INSTRUCTION + "\n")
                         else "inline" if h.endswith(" " + INSTRUCTION) else "none" for h in human)
    assert set(placements) == {"after", "before", "inline", "none"}
    assert 0.3 < placements["none"] / len(bodies) < 0.45 and 0.35 < placements["after"] / len(bodies) < 0.55
    questions = [b["question"] for b in bodies]
    assert any(q[0].islower() for q in questions) and any(q[0].isupper() for q in questions)
    assert any(q.endswith("?") for q in questions) and any(q[-1].isalnum() for q in questions)
    if name == "shapes-vqa":
        words = Counter(w for q in questions for w in re.findall(r"\bcolou?r\b", q.lower()))
        assert words["colour"] > 50 and words["color"] > 50


def test_the_test_split_keeps_the_template_and_the_wording_moves_no_scene(built, read_split, tmp_path):
    """The test split asks the template with the instruction after it, and its samples hold nothing new; growing a
    split re-words nothing already in it."""
    root = built / "shapes-vqa"
    for body in split_bodies(root, "test", read_split):
        assert body["conversations"][0]["value"] == f"<image>\n{body['question']}\n{INSTRUCTION}"
        assert set(body) == {"id", "conversations", "question", "answer", "question_type", "question_id",
                             "image_id", "scene"}  # no wording fields: the shipped test bytes stay as they were
    # Growing val re-draws nothing already there, wording included.
    build_shapes_vqa(tmp_path, VQABuildConfig(seed=0, n_train=0, n_val=150, n_test=0, n_captions=0))
    assert split_bodies(tmp_path, "val", read_split)[:100] == split_bodies(root, "val", read_split)


def test_typed_wording_takes_the_instruction_and_spelling_it_is_given():
    import random

    posed = Posed("color", {"shape": "square"}, "blue")
    seen = Counter()
    rng = random.Random(0)
    for _ in range(200):
        w = typed_wording(posed, scenes.TYPED_PHRASINGS, rng, instruction="none", spelling="american")
        assert w.prompt == w.question and "colour" not in w.question.lower() and "color" in w.question.lower()
        seen[w.phrasing] += 1
    assert len(seen) == len(scenes.TYPED_PHRASINGS["color"])  # all held-out phrasings, evenly drawn


@pytest.mark.parametrize("name, base, n_train", [("wide", "standard", 1000), ("broad", "wide", 8000)])
def test_a_wider_table_adds_phrasings_and_changes_no_test_question(built, read_split, tmp_path, name, base, n_train):
    """phrasings="wide" / "broad" word train from more phrasings (never a held-out one), each a superset of
    the last; the test split and the typed test stay byte for byte."""
    wider = tmp_path / name
    build_shapes_vqa(wider, VQABuildConfig(seed=0, n_train=n_train, n_val=0, n_test=40, n_captions=0, phrasings=name))
    table, smaller = scenes.PHRASING_TABLES[name], scenes.PHRASING_TABLES[base]
    assert {f: ps[:len(smaller[f])] for f, ps in table.items()} == dict(smaller)
    questions = [norm(b["question"]) for b in split_bodies(wider, "train", read_split)]
    held_out = [pattern(p) for ps in scenes.TYPED_PHRASINGS.values() for p in ps]
    assert not [q for q in questions if any(r.fullmatch(q) for r in held_out)]
    added = [pattern(p) for f, ps in table.items() for p in ps[len(smaller[f]):]]
    assert all(any(r.fullmatch(q) for q in questions) for r in added)  # every new phrasing is asked
    assert split_bodies(wider, "test", read_split) == split_bodies(built / "shapes-vqa", "test", read_split)
    for file in ("test_questions.json", "test_typed_questions.json", "test_annotations.json"):
        assert (wider / file).read_bytes() == (built / "shapes-vqa" / file).read_bytes()


# The cues scenes.CROSS_CUE_PHRASINGS spreads over the forms: a regex on a lower-cased phrasing, and the
# least number of forms the broad table must use it in.
CUES: dict[str, tuple[str, int]] = {
    "opens with can you": (r"^can you .*", 7), "opens with do you": (r"^do you .*", 7),
    "opens with could": (r"^could .*", 7), "opens with is or are": (r"^(is|are) .*", 5),
    "a plural shape": (r".*\{shape\}s.*", 2), "no verb before a comma": (r"^[^ ]+( [^ ]+)?( [^ ]+)?, .*", 5),
}


@pytest.mark.parametrize("cue", CUES)
def test_the_broad_table_spreads_each_cue_over_the_forms(cue):
    """No opener, plural or fragment tells the question type in the broad table: each spans several forms
    (in the standard table, a yes/no opener only ever asked exists, and a plural only ever counted)."""
    regex, least = CUES[cue]
    forms = {form for form, ps in scenes.PHRASING_TABLES["broad"].items() for p in ps if re.fullmatch(regex, p.lower())}
    assert len(forms) >= least, (cue, sorted(forms))
    standard = {form for form, ps in scenes.TRAIN_PHRASINGS.items() for p in ps if re.fullmatch(regex, p.lower())}
    assert len(standard) < len(forms)  # the broad table is what spreads it


def test_a_phrasing_table_the_dataset_lacks_is_named():
    with pytest.raises(ValueError, match="digits-vqa has no 'wide' phrasing table; it has: standard"):
        build_digits_vqa("unused", VQABuildConfig(n_train=4, n_val=0, n_test=2, n_captions=0, phrasings="wide"))
    with pytest.raises(ValueError, match="phrasings='many' must be one of standard, wide, broad"):
        VQABuildConfig(phrasings="many")


def test_keyword_forms_leave_out_exactly_the_held_out_phrasings_they_would_make():
    """The broad table's keyword queries would repeat two typed-test phrasings; those two (and only
    those) are left out, as scenes.py's comment says."""
    base = scenes.PHRASING_TABLES["wide"]
    base = {f: (*base[f], *scenes.CROSS_CUE_PHRASINGS[f]) for f in base}
    unfiltered = keyword_forms(base, {f: () for f in base})
    kept = keyword_forms(base, scenes.TYPED_PHRASINGS)
    dropped = {norm(p) for f in base for p in set(unfiltered[f]) - set(kept[f])}
    assert dropped == {"{shape} {colour}", "{color} object shape"}
    broad = scenes.PHRASING_TABLES["broad"]
    assert all(set(kept[f]) <= set(broad[f]) for f in base)
