"""Answer-level metrics for VQA-style benchmarks: VQAv2, GQA, ScienceQA/MMBench, POPE.

Each function reproduces the scoring of a reference so that numbers are comparable:

- :func:`vqa_accuracy`: the VQAv2 "min(#humans that said it / 3, 1)" accuracy, averaged over the
  leave-one-out subsets of the human answers, as the official ``vqaEval.py``
  (github.com/GT-Vision-Lab/VQA) and lmms-eval's ``vqav2`` task compute it.
- :func:`exact_match`: lmms-eval's ``gqa`` task (``exact_match`` with ``ignore_case`` and
  ``ignore_punctuation``).
- :func:`extract_choice` / :func:`multiple_choice_accuracy`: option-letter parsing for
  ScienceQA-IMG and MMBench-style prompts ("Answer with the option's letter").
- :func:`pope_metrics`: the POPE evaluation script (github.com/RUCAIBox/POPE, also LLaVA's
  ``eval_pope.py``): yes/no parsing of free text, then accuracy/precision/recall/F1 with "yes" as
  the positive class and the share of "yes" predictions.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

from moezoo.eval.answers import (
    clean_whitespace,
    normalize_answer,
    process_digits_articles,
    process_punctuation,
)

__all__ = [
    "VQA_CONVENTIONS",
    "exact_match",
    "extract_choice",
    "multiple_choice_accuracy",
    "pope_metrics",
    "pope_says_yes",
    "vqa_accuracy",
]

VQA_CONVENTIONS = ("official", "lmms_eval")

# Three annotators agreeing with the prediction make it fully correct (VQA paper, Sec. 4).
_HUMANS_FOR_FULL_CREDIT = 3


def _vqa_score(prediction: str, references: list[str]) -> float:
    """Mean over leave-one-out subsets of min(#matches in the subset / 3, 1)."""
    if len(references) == 1:
        # Leave-one-out over a single answer leaves nothing to match, which would score every
        # prediction 0; score the lone answer as the consensus instead.
        return float(references[0] == prediction)
    matches = sum(ref == prediction for ref in references)
    total = 0.0
    for ref in references:
        # Leaving out this annotator removes one match iff they gave the predicted answer.
        others_matching = matches - (ref == prediction)
        total += min(others_matching / _HUMANS_FOR_FULL_CREDIT, 1.0)
    return total / len(references)


def vqa_accuracy(prediction: str, answers: Sequence[str], *, convention: str = "official") -> float:
    """VQAv2 accuracy of one prediction against the human answers (10 for VQAv2).

    For each of the ``n`` subsets that leave one human answer out, the score is
    ``min(#answers in the subset equal to the prediction / 3, 1)``; the result is their mean.
    So with 10 answers: 0 matches -> 0, 1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4 or more -> 1.0.

    Normalisation follows one of two references:

    - ``"official"`` (default): what a VQAv2 submission gets. The prediction goes through the
      full EvalAI processor (:func:`~moezoo.eval.answers.normalize_answer`, as LLaVA/mmf apply
      before submitting) and then vqaEval's own clean-up (whitespace, punctuation, digits and
      articles). The human answers are used *as given* when they all agree, and only when they
      disagree (``len(set(answers)) > 1``) are they passed through vqaEval's punctuation rule
      (vqaEval applies only ``processPunctuation`` to them, not the digit/article step).
      The official annotations are already normalised, so this rarely matters there.
    - ``"lmms_eval"``: lmms-eval's ``vqav2_process_results``: prediction and every human answer
      are whitespace-cleaned, then passed through the punctuation and digit/article steps (no
      EvalAI tokenisation, so ``"man's"`` is not split), whether or not the humans agree.

    With a single answer the leave-one-out average is undefined (every subset is empty, which
    would score 0); it is then 1.0 when the normalised prediction equals the answer, else 0.0.
    With 2 to 3 answers the formula is applied unchanged, so full credit is out of reach.

    Args:
        prediction: the model's free-text answer.
        answers: the human answers (at least one).
        convention: ``"official"`` or ``"lmms_eval"``, see above.

    Returns:
        The accuracy in [0, 1].

    Example:
        >>> vqa_accuracy("Two", ["2"] * 10)
        1.0
        >>> round(vqa_accuracy("blue", ["blue"] * 2 + ["red"] * 8), 9)
        0.6
    """
    if isinstance(answers, str) or len(answers) == 0:
        raise ValueError(f"expected a non-empty sequence of answer strings, got {answers!r}")
    if convention == "official":
        pred = normalize_answer(prediction)
        pred = process_digits_articles(process_punctuation(clean_whitespace(pred)))
        refs = list(answers)
        if len(set(refs)) > 1:
            refs = [process_punctuation(ref) for ref in refs]
    elif convention == "lmms_eval":
        pred = process_digits_articles(process_punctuation(clean_whitespace(prediction)))
        refs = [process_digits_articles(process_punctuation(clean_whitespace(r))) for r in answers]
    else:
        raise ValueError(f"expected convention in {VQA_CONVENTIONS}, got {convention!r}")
    return _vqa_score(pred, refs)


_STRIP_PUNCTUATION = str.maketrans("", "", string.punctuation)


def exact_match(prediction: str, answer: str) -> float:
    """GQA-style exact match: 1.0 if equal after stripping, lower-casing and removing punctuation.

    Follows lmms-eval's ``gqa`` task: the harness strips the generated text, then its
    ``exact_match`` metric (``ignore_case=True, ignore_punctuation=True``) lower-cases both sides
    and deletes every ``string.punctuation`` character (so ``"t-shirt"`` == ``"tshirt"``). We also
    strip the reference, which changes nothing on GQA (its answers carry no outer whitespace).
    No article or number-word normalisation is applied: ``"two"`` != ``"2"``.

    Example:
        >>> exact_match(" Yes. ", "yes")
        1.0
        >>> exact_match("the table", "table")
        0.0
    """
    pred = prediction.strip().lower().translate(_STRIP_PUNCTUATION)
    ref = answer.strip().lower().translate(_STRIP_PUNCTUATION)
    return float(pred == ref)


# The phrase is matched in any case, the letter only as a capital ("the answer is a cat").
_ANSWER_PHRASE = re.compile(
    r"(?i:\b(?:answer|option|choice)\b(?:\s+(?:is|would\s+be|should\s+be))?)"
    r"\s*[:\-]?\s*\(?([A-Z])\b"
)
# A lone letter, maybe bracketed or followed by '.', ')' or ':' ("B", "(B)", "B.", "b)").
_WHOLE_LETTER = re.compile(r"\(?([A-Za-z])[.):]?")
# A leading option marker: "(B) ...", "B. ...", "B) ...", "B: ...". A bare leading "A " is not
# taken, as it is usually the article.
_LEADING_LETTER = re.compile(r"\(([A-Z])\)|([A-Z])[.):](?!\w)")
# Any standalone capital letter ("I think B", "(C)"), not part of a word or a contraction.
_STANDALONE_LETTER = re.compile(r"(?<![\w'])([A-Z])(?![\w'])")
# "A" before a lower-case word may be the article ("A cat"), the worry MMBench's can_infer_option
# also has; rule 4 then cannot tell which letters are meant.
_ARTICLE_A = re.compile(r"(?<![\w'])A\s+[a-z]")


def _letters(num_options: int) -> str:
    if not 1 <= num_options <= 26:
        raise ValueError(f"expected num_options in 1..26, got {num_options}")
    return string.ascii_uppercase[:num_options]


def _unique(letters: list[str], valid: str) -> str | None:
    found = {letter.upper() for letter in letters} & set(valid)
    return found.pop() if len(found) == 1 else None


def extract_choice(text: str, num_options: int) -> str | None:
    """The option letter a free-text answer picks, or None when there is none or it is ambiguous.

    Rules, tried in order; the first that finds a valid letter (``A`` up to the
    ``num_options``-th letter) decides:

    1. the whole answer is a letter, maybe as ``(B)``, ``B.``, ``B)``, ``B:``; lower case is
       accepted only here (``"b"``);
    2. an answer phrase: ``answer``/``option``/``choice``, optionally ``is``, ``would be``,
       ``should be`` and a ``:``, then the letter (``"The answer is B"``, ``"Answer: C) foo"``);
       if phrases name different letters, the answer is ambiguous (None);
    3. a leading option marker: ``"(B) cat"``, ``"B. cat"``, ``"C) foo"``, ``"B: cat"``;
    4. otherwise, the standalone capital letters in the text, if they are all the same valid
       letter (``"I think B"`` with 4 options, since ``I`` is not an option); a text with an
       ``A`` before a lower-case word (``"A cat"``, ``"A or B"``) is ambiguous, as that ``A``
       may be the article.

    Example:
        >>> extract_choice("(B)", 4), extract_choice("Answer: C) foo", 4)
        ('B', 'C')
        >>> extract_choice("A or B", 4) is None
        True
    """
    valid = _letters(num_options)
    text = text.strip()
    whole = _WHOLE_LETTER.fullmatch(text)
    if whole:
        letter = whole.group(1).upper()
        return letter if letter in valid else None
    phrased = _ANSWER_PHRASE.findall(text)
    if phrased:
        choice = _unique(phrased, valid)
        # A phrase naming several different options is ambiguous; do not fall through.
        if choice is not None or len({p.upper() for p in phrased} & set(valid)) > 1:
            return choice
    leading = _LEADING_LETTER.match(text)
    if leading:
        letter = leading.group(1) or leading.group(2)
        if letter in valid:
            return letter
    if _ARTICLE_A.search(text):
        return None
    return _unique(_STANDALONE_LETTER.findall(text), valid)


def _as_letter(answer: str | int, num_options: int) -> str:
    valid = _letters(num_options)
    if isinstance(answer, int):
        if not 0 <= answer < num_options:
            raise ValueError(f"expected an answer index in 0..{num_options - 1}, got {answer}")
        return valid[answer]
    letter = answer.strip().upper()
    if len(letter) != 1 or letter not in valid:
        raise ValueError(f"expected an answer letter in {valid[0]}..{valid[-1]}, got {answer!r}")
    return letter


def multiple_choice_accuracy(
    predictions: Sequence[str],
    answers: Sequence[str | int],
    num_options: int | Sequence[int],
) -> float:
    """Share of predictions whose :func:`extract_choice` letter is the correct one.

    An unparseable or ambiguous prediction counts as wrong.

    Args:
        predictions: the model's free-text answers.
        answers: the correct options, as letters (``"B"``) or 0-based indices.
        num_options: the number of options, for all items or one per item (ScienceQA varies).

    Example:
        >>> multiple_choice_accuracy(["B.", "The answer is C", "?"], ["B", 1, "A"], 4)
        0.3333333333333333
    """
    if len(predictions) != len(answers) or len(predictions) == 0:
        raise ValueError(
            f"expected equally many predictions and answers (at least one), "
            f"got {len(predictions)} and {len(answers)}"
        )
    counts = [num_options] * len(answers) if isinstance(num_options, int) else list(num_options)
    if len(counts) != len(answers):
        raise ValueError(f"expected one num_options per answer ({len(answers)}), got {len(counts)}")
    correct = sum(
        extract_choice(pred, n) == _as_letter(ans, n)
        for pred, ans, n in zip(predictions, answers, counts)
    )
    return correct / len(answers)


def pope_says_yes(text: str) -> bool:
    """POPE's parsing: the answer is "no" iff its first sentence has the word No, no or not.

    Exactly the official rule: keep the text before the first ``.``, delete commas, split on
    single spaces, and look for the exact words ``No``, ``no`` or ``not``. Anything else
    (including ``"NO"``, ``"nope"`` or an empty answer) counts as "yes", as upstream.

    Example:
        >>> [pope_says_yes(t) for t in ("Yes, there is a dog.", "No.", "There is not one")]
        [True, False, False]
    """
    words = text.split(".", 1)[0].replace(",", "").split(" ")
    return not any(word in ("No", "no", "not") for word in words)


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float]:
    """POPE accuracy, precision, recall, F1 (positive class "yes") and the share of "yes" answers.

    Predictions are parsed with :func:`pope_says_yes` (the official POPE script). Labels must be
    ``"yes"`` or ``"no"`` (any case, outer whitespace ignored). ``yes_ratio`` is the fraction of
    *predictions* parsed as "yes", as in the POPE paper and script (lmms-eval's
    ``pope_yes_ratio`` instead reports the share of "yes" labels). Where the script would divide
    by zero, the value is 0.0: precision with no "yes" prediction, recall with no "yes" label,
    F1 when precision + recall is 0.

    Example:
        >>> m = pope_metrics(["Yes", "No", "yes", "no"], ["yes", "yes", "no", "no"])
        >>> m["accuracy"], m["precision"], m["recall"], m["f1"], m["yes_ratio"]
        (0.5, 0.5, 0.5, 0.5, 0.5)
    """
    if len(predictions) != len(labels) or len(predictions) == 0:
        raise ValueError(
            f"expected equally many predictions and labels (at least one), "
            f"got {len(predictions)} and {len(labels)}"
        )
    tp = fp = tn = fn = 0
    for pred, label in zip(predictions, labels):
        gold = label.strip().lower()
        if gold not in ("yes", "no"):
            raise ValueError(f"expected POPE labels 'yes' or 'no', got {label!r}")
        says_yes = pope_says_yes(pred)
        if gold == "yes":
            tp, fn = tp + says_yes, fn + (not says_yes)
        else:
            fp, tn = fp + says_yes, tn + (not says_yes)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "accuracy": (tp + tn) / len(labels),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "yes_ratio": (tp + fp) / len(labels),
    }
