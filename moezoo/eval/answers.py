"""The VQAv2 / EvalAI answer processor: how free-text answers are normalised before matching.

Follows the rules of the official VQA evaluation script ``vqaEval.py`` (VQA API by Aishwarya
Agrawal, github.com/GT-Vision-Lab/VQA) and of the ``EvalAIAnswerProcessor`` that pythia/mmf,
LLaVA and lmms-eval (``lmms_eval/tasks/_task_utils/vqa_eval_metric.py``) run on predictions
before a VQAv2 submission. Three stages, each exposed on its own because the scoring conventions
in :mod:`moezoo.eval.metrics` combine them differently:

1. :func:`tokenize_answer` (EvalAI only): lower-case, drop ``,`` and ``?``, split ``'s`` off.
2. :func:`process_punctuation` (vqaEval): delete or blank out punctuation, strip periods.
3. :func:`process_digits_articles` (vqaEval): number words to digits, drop articles, restore
   apostrophes of common contractions.

:func:`normalize_answer` runs all three (plus the newline/tab clean-up between 1 and 2), exactly
as ``EvalAIAnswerProcessor.__call__`` does. Upstream quirks are kept on purpose, because scores
are only comparable when the processing is identical; each is noted where it happens.
"""

from __future__ import annotations

import re

__all__ = [
    "ARTICLES",
    "CONTRACTIONS",
    "NUMBER_WORDS",
    "PUNCTUATION",
    "clean_whitespace",
    "normalize_answer",
    "process_digits_articles",
    "process_punctuation",
    "tokenize_answer",
]

# Data tables reproduced from vqaEval.py. Keys are spellings with the apostrophe missing (or
# misplaced); values the canonical spelling. The capitalised keys ("Im", "Ive", "Id've") can
# never match, since words are lower-cased first; "somebody'd" -> "somebodyd" is upstream's
# typo. Both are kept as-is so that scores match the reference.
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've",
    "couldnt": "couldn't", "couldn'tve": "couldn't've", "couldnt've": "couldn't've",
    "didnt": "didn't", "doesnt": "doesn't", "dont": "don't", "hadnt": "hadn't",
    "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd",
    "howll": "how'll", "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm",
    "Ive": "I've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've",
    "itll": "it'll", "let's": "let's", "maam": "ma'am", "mightnt": "mightn't",
    "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've",
    "oclock": "o'clock", "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at",
    "'ow'sat": "'ow's'at", "shant": "shan't", "shed've": "she'd've", "she'dve": "she'd've",
    "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's",
    "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've",
    "they'dve": "they'd've", "theyll": "they'll", "theyre": "they're", "theyve": "they've",
    "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've", "we'dve": "we'd've",
    "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've",
    "who'dve": "who'd've", "wholl": "who'll", "whos": "who's", "whove": "who've",
    "whyll": "why'll", "whyre": "why're", "whys": "why's", "wont": "won't",
    "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've",
    "youd": "you'd", "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll",
    "youre": "you're", "youve": "you've",
}  # fmt: skip

# vqaEval's "manualMap": only whole words zero..ten (and "none", which counts as 0).
NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip

ARTICLES: frozenset[str] = frozenset({"a", "an", "the"})

# Characters that process_punctuation deletes or replaces by a space. The apostrophe, period,
# colon, '#', '$', '%', '&', '*', '^', '|' and '~' are not in vqaEval's list and survive.
PUNCTUATION: tuple[str, ...] = (
    ";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-",
    ">", "<", "@", "`", ",", "?", "!",
)  # fmt: skip

# A comma between digits ("1,000") switches process_punctuation to delete-mode for *every*
# punctuation mark. EvalAIAnswerProcessor accepts a run of commas (``\d,+\d``); vqaEval.py
# accepts exactly one (``\d,\d``). They differ only on inputs like "1,,000"; we follow the
# EvalAI/lmms-eval form so that normalize_answer matches the processor the harnesses use.
_DIGIT_COMMA_DIGIT = re.compile(r"\d,+\d")

# vqaEval's periodStrip is "(?!<=\d)(\.)(?!\d)": the first group is a (mistyped) look-ahead that
# always passes at a '.', so it removes every period not followed by a digit ("3.5" keeps its
# point, "yes." and "a.b" lose theirs, ".5" keeps its period).
_PERIOD_NOT_BEFORE_DIGIT = re.compile(r"\.(?!\d)")
# vqaEval calls ``periodStrip.sub("", text, re.UNICODE)``, which passes re.UNICODE (== 32) as the
# *count*: only the first 32 such periods are removed. Kept for parity.
_MAX_PERIODS_STRIPPED = 32


def clean_whitespace(text: str) -> str:
    """Replace newlines and tabs by spaces and strip the ends (vqaEval's first step).

    Example:
        >>> clean_whitespace("\\tred\\ncar \\n")
        'red car'
    """
    return text.replace("\n", " ").replace("\t", " ").strip()


def tokenize_answer(text: str) -> str:
    """EvalAI's word tokenisation: lower-case, delete ``,`` and ``?``, split off ``'s``, strip.

    This step exists only in the EvalAI processor, not in vqaEval.py; note that it separates the
    possessive, so ``"man's"`` becomes ``"man 's"``.

    Example:
        >>> tokenize_answer(" The Man's hat? ")
        "the man 's hat"
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's")
    return text.strip()


def process_punctuation(text: str) -> str:
    """vqaEval's punctuation rule, then the period rule.

    Each mark in :data:`PUNCTUATION` is *deleted* if, in the input, it touches a space on
    either side (``"red, white"``) or if the input contains a comma between digits
    (``"1,000"``); otherwise it becomes a space (``"red-white"`` -> ``"red white"``). Then
    periods not followed by a digit are removed (at most 32, as upstream). Case and spacing are
    otherwise left alone; :func:`process_digits_articles` re-splits the words.

    Example:
        >>> process_punctuation("red-white")
        'red white'
        >>> process_punctuation("1,000 - 2,000!")
        '1000  2000'
        >>> process_punctuation("3.5 ft.")
        '3.5 ft'
    """
    delete_all = _DIGIT_COMMA_DIGIT.search(text) is not None
    out = text
    for mark in PUNCTUATION:
        # The test looks at the original text, not at `out`: the decision for one mark never
        # depends on how an earlier mark was handled.
        touches_space = (mark + " ") in text or (" " + mark) in text
        out = out.replace(mark, "" if delete_all or touches_space else " ")
    return _PERIOD_NOT_BEFORE_DIGIT.sub("", out, count=_MAX_PERIODS_STRIPPED)


def process_digits_articles(text: str) -> str:
    """vqaEval's word rule: lower-case, map number words, drop articles, fix contractions.

    Words are split on any whitespace and re-joined with single spaces. Only whole words are
    mapped (``"twenty"`` and ``"2nd"`` stay as they are).

    Example:
        >>> process_digits_articles("The  Two dogs DONT bark")
        "2 dogs don't bark"
    """
    words = [NUMBER_WORDS.get(word, word) for word in text.lower().split()]
    words = [CONTRACTIONS.get(word, word) for word in words if word not in ARTICLES]
    return " ".join(words)


def normalize_answer(text: str) -> str:
    """The full EvalAI answer processing, as ``EvalAIAnswerProcessor()(text)``.

    Tokenise (:func:`tokenize_answer`), clean newlines/tabs (:func:`clean_whitespace`), then
    :func:`process_punctuation` and :func:`process_digits_articles`.

    Args:
        text: a free-text answer (a model prediction or a human answer).

    Returns:
        The normalised answer: lower-case, single-spaced, digits for number words, no articles.

    Example:
        >>> normalize_answer("Two.")
        '2'
        >>> normalize_answer("The answer is: a red-white ball!")
        'answer is: red white ball'
        >>> normalize_answer("1,000")
        '1000'
    """
    text = clean_whitespace(tokenize_answer(text))
    return process_digits_articles(process_punctuation(text))
