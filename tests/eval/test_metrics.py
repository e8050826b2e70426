"""Tests for moezoo.eval.answers and moezoo.eval.metrics.

Worked examples for every normalisation rule of the VQA answer processor, hand-computed VQA /
POPE / multiple-choice scores, and parity tests against lmms-eval's own processor and VQAv2
scoring on generated strings (skipped when lmms-eval is not installed).
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

from moezoo.eval.answers import (
    normalize_answer,
    process_digits_articles,
    process_punctuation,
)
from moezoo.eval.metrics import (
    exact_match,
    extract_choice,
    multiple_choice_accuracy,
    pope_metrics,
    pope_says_yes,
    vqa_accuracy,
)

# --------------------------------------------------------------------------- normalisation


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # contractions, one of each kind (the apostrophe is restored)
        ("isnt", "isn't"),  # n't
        ("Dont", "don't"),  # lower-cased first
        ("shouldve", "should've"),  # 've
        ("itll", "it'll"),  # 'll
        ("theyre", "they're"),  # 're
        ("whod", "who'd"),  # 'd
        ("whats", "what's"),  # 's without an apostrophe in the input
        ("wouldnt've", "wouldn't've"),  # double contraction, one apostrophe missing
        ("youd've", "you'd've"),
        ("y'allll", "y'all'll"),  # misplaced apostrophe
        ("twas", "'twas"),  # leading apostrophe
        ("oclock", "o'clock"),
        ("maam", "ma'am"),
        ("Im", "im"),  # upstream's capitalised keys never match after lower-casing
        ("dont know", "don't know"),  # per word
        ("dontknow", "dontknow"),  # whole words only
        # EvalAI tokenisation: lower-case, ',' and '?' deleted, "'s" split off
        ("YES", "yes"),
        ("yes?", "yes"),
        ("what's", "what 's"),
        ("man's hat", "man 's hat"),
        # number words (vqaEval's manual map): whole words zero..ten and "none"
        ("Two", "2"),
        ("none", "0"),
        ("zero", "0"),
        ("ten", "10"),
        ("eleven", "eleven"),
        ("twenty two", "twenty 2"),
        ("two-three", "2 3"),  # punctuation splits first, then each word is mapped
        # articles
        ("the cat", "cat"),
        ("An apple", "apple"),
        ("a", ""),
        ("theater", "theater"),
        ("the two dogs", "2 dogs"),
        # punctuation: becomes a space unless it touches a space (then deleted)
        ("red-white", "red white"),
        ("t-shirt", "t shirt"),
        ("up/down", "up down"),
        ("(left)", "left"),
        ('"quoted" [x] {y} <z>', "quoted x y z"),
        ("e=f g+h i\\j k;l q_r @home `b`", "e f g h i j k l q r home b"),
        ("yes!", "yes"),
        # any '-' touching a space puts '-' in delete mode everywhere: "x-y - z" -> "xy  z"
        ("x-y - z", "xy z"),
        # characters outside vqaEval's list survive
        ("50%", "50%"),
        ("a:b", "a:b"),
        # commas between digits: deleted by the tokeniser already
        ("1,000", "1000"),
        ("10,000,000", "10000000"),
        ("red, white", "red white"),
        # periods: removed unless followed by a digit
        ("3.5", "3.5"),
        ("yes.", "yes"),
        ("5.", "5"),
        ("a.b", "ab"),
        (".5", ".5"),
        ("1.5.", "1.5"),
        ("Yes.", "yes"),
        ("Two.", "2"),
        # newlines and tabs
        ("red\ncar", "red car"),
        ("\tyes\n", "yes"),
        ("  many   spaces ", "many spaces"),
    ],
)
def test_normalize_answer_rules(text, expected):
    assert normalize_answer(text) == expected


def test_period_strip_count_quirk():
    # vqaEval passes re.UNICODE (32) as the *count* of re.sub: only 32 periods are removed.
    assert normalize_answer("." * 40) == "." * 8
    assert process_punctuation("." * 32) == ""


def test_process_punctuation_comma_between_digits_deletes_every_mark():
    # Without a digit-comma-digit, '-' between letters becomes a space ...
    assert process_punctuation("1-2") == "1 2"
    # ... with one anywhere, every mark is deleted: "1,000-2" -> "10002".
    assert process_punctuation("1,000-2") == "10002"
    assert process_punctuation("a-b 1,5") == "ab 15"
    # ',' touching a space is deleted, '-' not touching one becomes a space.
    assert process_punctuation("a, b-c") == "a b c"


def test_process_digits_articles_keeps_upstream_typo():
    # "somebody'd" -> "somebodyd" is in vqaEval's table; kept for parity.
    assert process_digits_articles("somebody'd") == "somebodyd"
    assert process_digits_articles("The  Two dogs DONT bark") == "2 dogs don't bark"


# --------------------------------------------------------------------------- VQA accuracy


def test_vqa_accuracy_required_examples():
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0
    assert abs(vqa_accuracy("blue", ["blue"] * 2 + ["red"] * 8) - 0.6) < 1e-9
    assert vqa_accuracy("cat", ["dog"] * 10) == 0.0


@pytest.mark.parametrize("convention", ["official", "lmms_eval"])
@pytest.mark.parametrize(
    ("matches", "others", "expected"),
    [
        # 1 of 10 match: leaving it out -> 0/3 (1 subset); leaving out another -> 1/3 (9 subsets)
        # (0 + 9 * 1/3) / 10 = 0.3
        (1, 9, 0.3),
        # 2 of 10: (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10 = 0.6
        (2, 8, 0.6),
        # 3 of 10: (3 * 2/3 + 7 * 3/3) / 10 = (2 + 7) / 10 = 0.9
        (3, 7, 0.9),
        # 4 of 10: every subset keeps >= 3 matches -> 1.0
        (4, 6, 1.0),
        # 2 of 5: (2 * 1/3 + 3 * 2/3) / 5 = (2/3 + 2) / 5 = 8/15
        (2, 3, 8 / 15),
        # 3 of 4: (3 * 2/3 + 1 * 3/3) / 4 = 3/4
        (3, 1, 0.75),
    ],
)
def test_vqa_accuracy_leave_one_out(convention, matches, others, expected):
    answers = ["yes"] * matches + ["no"] * others
    assert vqa_accuracy("Yes", answers, convention=convention) == pytest.approx(expected, abs=1e-12)
    # the order of the answers does not matter
    assert vqa_accuracy("Yes", answers[::-1], convention=convention) == pytest.approx(expected)


def test_vqa_accuracy_single_answer_is_exact_match():
    assert vqa_accuracy("The Two", ["2"]) == 1.0
    assert vqa_accuracy("3", ["2"]) == 0.0


def test_vqa_accuracy_humans_normalised_only_when_they_disagree():
    # Prediction "red-white" -> "red white". Ten identical human answers "red-white" are used
    # as given: 0 matches in every subset -> 0.0.
    assert vqa_accuracy("red-white", ["red-white"] * 10) == 0.0
    # One dissenting "blue" makes vqaEval run its punctuation rule on the humans: 9 x "red white".
    # Leaving out a "red white" keeps 8 matches -> 1; leaving out "blue" keeps 9 -> 1. Mean 1.0.
    assert vqa_accuracy("red-white", ["red-white"] * 9 + ["blue"]) == 1.0
    # lmms-eval normalises the humans always: 1.0 in both cases.
    assert vqa_accuracy("red-white", ["red-white"] * 10, convention="lmms_eval") == 1.0


def test_vqa_accuracy_official_applies_only_punctuation_to_humans():
    # Prediction "the cat" -> "cat"; disagreeing humans get processPunctuation only, so
    # "the cat" keeps its article: 0 matches -> 0.0. lmms-eval drops it: 9 x "cat" -> 1.0.
    answers = ["the cat"] * 9 + ["dog"]
    assert vqa_accuracy("the cat", answers) == 0.0
    assert vqa_accuracy("the cat", answers, convention="lmms_eval") == 1.0


def test_vqa_accuracy_official_splits_possessive_of_prediction():
    # The EvalAI processor turns "man's" into "man 's"; the humans' "man's" is left as given.
    assert vqa_accuracy("man's", ["man's"] * 10) == 0.0
    assert vqa_accuracy("man's", ["man's"] * 10, convention="lmms_eval") == 1.0


def test_vqa_accuracy_errors():
    with pytest.raises(ValueError, match="non-empty"):
        vqa_accuracy("yes", [])
    with pytest.raises(ValueError, match="non-empty"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(ValueError, match="convention"):
        vqa_accuracy("yes", ["yes"], convention="vqav1")


# --------------------------------------------------------------------------- exact match


@pytest.mark.parametrize(
    ("prediction", "answer", "expected"),
    [
        (" Yes. ", "yes", 1.0),
        ("Table!", "table", 1.0),
        ("T-shirt", "tshirt", 1.0),  # punctuation deleted, not replaced by a space
        ("left\n", "left", 1.0),
        ("two", "2", 0.0),  # no number-word mapping in GQA
        ("the table", "table", 0.0),  # no article removal in GQA
        ("red car", "redcar", 0.0),
    ],
)
def test_exact_match(prediction, answer, expected):
    assert exact_match(prediction, answer) == expected


# --------------------------------------------------------------------------- multiple choice


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("b", "B"),
        ("(B)", "B"),
        ("B.", "B"),
        ("C)", "C"),
        (" D: ", "D"),
        ("The answer is B", "B"),
        ("The answer is (B).", "B"),
        ("Answer: C) foo", "C"),
        ("The correct option is D because ...", "D"),
        ("answer: a", None),  # lower-case letters are words, except as the whole answer
        ("The answer is a cat", None),
        ("(B) cat", "B"),
        ("B. A cat", "B"),
        ("C) foo", "C"),
        ("B is correct", "B"),
        ("I think B", "B"),  # "I" is not one of 4 options
        ("A cat", None),  # the article
        ("A or B", None),  # ambiguous
        ("B or C", None),
        ("The answer is B. No, the answer is C", None),  # conflicting answer phrases
        ("E", None),  # out of range for 4 options
        ("The answer is E", None),
        ("", None),
        ("Blue", None),
    ],
)
def test_extract_choice(text, expected):
    assert extract_choice(text, 4) == expected


def test_extract_choice_range_follows_num_options():
    assert extract_choice("E", 5) == "E"
    assert extract_choice("C", 2) is None
    with pytest.raises(ValueError, match="num_options"):
        extract_choice("A", 0)
    with pytest.raises(ValueError, match="num_options"):
        extract_choice("A", 27)


def test_multiple_choice_accuracy():
    predictions = ["B.", "The answer is C", "no idea", "(A)"]
    # answers as letters or 0-based indices; item 3 has only 2 options
    answers = ["B", 2, "A", 0]
    # correct: B==B, C==C, None!=A, A==A -> 3/4
    assert multiple_choice_accuracy(predictions, answers, 4) == 0.75
    assert multiple_choice_accuracy(predictions, answers, [4, 3, 2, 2]) == 0.75
    with pytest.raises(ValueError, match="equally many"):
        multiple_choice_accuracy(["A"], ["A", "B"], 4)
    with pytest.raises(ValueError, match="answer letter"):
        multiple_choice_accuracy(["A"], ["E"], 4)
    with pytest.raises(ValueError, match="answer index"):
        multiple_choice_accuracy(["A"], [4], 4)
    with pytest.raises(ValueError, match="one num_options per answer"):
        multiple_choice_accuracy(["A"], ["A"], [4, 4])


# --------------------------------------------------------------------------- POPE


def test_pope_parsing():
    assert pope_says_yes("Yes, there is a dog.")
    assert not pope_says_yes("No.")
    assert not pope_says_yes("There is not a cat")
    assert not pope_says_yes("No, there is none.")
    assert pope_says_yes("I see a bus. No doubt")  # only the first sentence counts
    assert pope_says_yes("NO")  # only "No", "no", "not" count, as in the official script
    assert pope_says_yes("")


def test_pope_metrics_hand_computed():
    predictions = [
        "Yes, there is a dog.",  # yes | label yes -> TP
        "No.",  # no  | yes -> FN
        "There is not a cat",  # no  | no  -> TN
        "yes",  # yes | no  -> FP
        "NO",  # yes | no  -> FP (upstream quirk)
        "No, there is none.",  # no  | yes -> FN
        "I see a bus. No doubt",  # yes | yes -> TP
        "",  # yes | no  -> FP
    ]
    labels = ["yes", "yes", "no", "no", "No ", "yes", "YES", "no"]
    m = pope_metrics(predictions, labels)
    # TP=2 FN=2 TN=1 FP=3
    assert m["accuracy"] == pytest.approx(3 / 8)  # (TP + TN) / 8
    assert m["precision"] == pytest.approx(2 / 5)  # TP / (TP + FP)
    assert m["recall"] == pytest.approx(2 / 4)  # TP / (TP + FN)
    assert m["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)  # = 4/9
    assert m["yes_ratio"] == pytest.approx(5 / 8)  # (TP + FP) / 8
    assert set(m) == {"accuracy", "precision", "recall", "f1", "yes_ratio"}


def test_pope_metrics_zero_division_is_zero():
    # Never says yes: precision 0/0 -> 0, recall 0/2 -> 0, f1 -> 0.
    m = pope_metrics(["no", "no", "no"], ["yes", "yes", "no"])
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"], m["yes_ratio"]) == (
        1 / 3, 0.0, 0.0, 0.0, 0.0,
    )  # fmt: skip
    # No "yes" label: recall 0/0 -> 0.
    m = pope_metrics(["yes", "no"], ["no", "no"])
    assert (m["accuracy"], m["precision"], m["recall"], m["f1"]) == (0.5, 0.0, 0.0, 0.0)


def test_pope_metrics_errors():
    with pytest.raises(ValueError, match="'yes' or 'no'"):
        pope_metrics(["yes"], ["maybe"])
    with pytest.raises(ValueError, match="equally many"):
        pope_metrics(["yes"], [])


# --------------------------------------------------------------------------- parity with lmms-eval

_PIECES = [
    "Two", "two", "none", "None", "ten", "eleven", "the", "The", "a", "an", "A", "cat",
    "dog's", "dont", "Dont", "isnt", "youd've", "whats", "let's", "y'allll", "Im", "oclock",
    "somebody'd", "yes", "no", "Yes.", "3.5", "1,000", "10,000", "1,,2", "5.", ".5", "a.b",
    "...", "red-white", "t-shirt", "(left)", "up/down", "?", "!", "x - y", "q_r", "@home",
    "`a`", '"q"', "[b]", "{c}", "<d>", "e=f", "g+h", "i\\j", "k;l", "m,n", "50%", "a:b",
    "\n", "\t", "  ", ",", "-", "YES",
]  # fmt: skip


def _random_answer(rng: random.Random) -> str:
    pieces = rng.choices(_PIECES, k=rng.randint(1, 4))
    return "".join(piece + rng.choice(["", " ", " ", "  "]) for piece in pieces)


def _lmms_eval_file(relative: str) -> Path:
    spec = importlib.util.find_spec("lmms_eval")
    return Path(next(iter(spec.submodule_search_locations))) / relative


def test_normalize_answer_matches_lmms_eval_processor():
    pytest.importorskip("lmms_eval")
    # Load the processor's file on its own: importing it through lmms_eval.tasks builds the whole
    # task index (seconds). The file imports only `re`.
    path = _lmms_eval_file("tasks/_task_utils/vqa_eval_metric.py")
    spec = importlib.util.spec_from_file_location("_lmms_vqa_eval_metric", path)
    reference = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(reference)
    processor = reference.EvalAIAnswerProcessor()

    rng = random.Random(0)
    texts = [_random_answer(rng) for _ in range(300)]
    texts += ["." * 40, "1,000-2", "x-y - z", "Im", "somebody'd"]
    for text in texts:
        assert normalize_answer(text) == processor(text), repr(text)
        # the two vqaEval stages on their own, as lmms-eval's vqav2 task calls them
        assert process_punctuation(text) == processor.process_punctuation(text), repr(text)
        assert process_digits_articles(text) == processor.process_digit_article(text), repr(text)


def test_vqa_accuracy_matches_lmms_eval_vqav2():
    pytest.importorskip("lmms_eval")
    from lmms_eval.tasks.vqav2.utils import vqav2_process_results

    rng = random.Random(1)
    checked_nonzero = 0
    for _ in range(200):
        pool = [_random_answer(rng) for _ in range(rng.randint(1, 3))]
        answers = [rng.choice(pool) for _ in range(rng.choice([10, 10, 10, 5, 2]))]
        prediction = rng.choice(pool + [_random_answer(rng)])
        # answer_id as in the HF VQAv2 rows: lmms-eval's leave-one-out compares whole dicts
        doc = {
            "question_id": 0,
            "answers": [{"answer": a, "answer_id": i + 1} for i, a in enumerate(answers)],
        }
        expected = vqav2_process_results(doc, [prediction])["exact_match"]
        got = vqa_accuracy(prediction, answers, convention="lmms_eval")
        assert got == pytest.approx(expected, abs=1e-12), (prediction, answers)
        checked_nonzero += expected > 0
    assert checked_nonzero > 50  # the cases exercise partial and full credit, not only zeros
