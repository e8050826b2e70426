"""Questions as people type them: one question, worded many ways, in the data builder.

A model trained on one template answers only that template: the quickstart model got 0.71
exact match on "What colour is the circle?" with LLaVA-1.5's short-answer instruction and
0.33 without it (DESIGN.md, "Typed questions"). So the VQA builders first *pose* a question
(:class:`Posed`: its form, the words that fill it, its exact answer) and then *word* it:

- the ``test`` split asks the template (the first entry of the training table) with the
  instruction after it, exactly as before, so ``shapes_vqa`` figures stay comparable;
- ``train`` and ``val`` draw a phrasing from the training table, a British or American
  spelling, a casing variant (lower-case start, no final mark) and where the instruction goes
  (after the question, before it, on the same line, or left out);
- the typed test (``test_typed_questions.json`` beside the test shards) asks every test
  question with a phrasing from a *held-out* table that training never uses, with and without
  the instruction, in both spellings.

The text is varied here, never normalised at inference. Templates are ``str.format`` strings
over the posed slots plus the spelling words (``{colour}``).

Example:
    >>> import random
    >>> posed = Posed("color", {"shape": "circle"}, "red")
    >>> table = {"color": ("What {colour} is the {shape}?", "Which {colour} is the {shape}?")}
    >>> template_wording(posed, table).prompt
    'What colour is the circle?\\nAnswer the question using a single word or phrase.'
    >>> w = typed_wording(posed, table, random.Random(1), instruction="none", spelling="american")
    >>> w.prompt, w.phrasing
    ('What color is the circle?', 'color/0')
"""

from __future__ import annotations

import random
import re
import string
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from moezoo.data.shards import encode_json
from moezoo.data.vqa import SHORT_ANSWER_PROMPT, vqa_record

# The words people spell two ways. A template names them as slots ({colour}).
SPELLINGS: dict[str, dict[str, str]] = {
    "british": {"colour": "colour", "grey": "grey", "centre": "centre"},
    "american": {"colour": "color", "grey": "gray", "centre": "center"},
}
# Where the short-answer instruction goes: after the question (LLaVA-1.5's prompt), before it,
# on the question's line, or nowhere (as most people type).
INSTRUCTIONS = ("after", "before", "inline", "none")
# Training draws half of its questions with the instruction after the question (the test
# split's form), the rest without it or placed elsewhere.
TRAIN_INSTRUCTION_WEIGHTS = (0.45, 0.1, 0.1, 0.35)
# Casing variants of a typed question.
CASINGS = ("as_written", "lower_start", "no_mark", "lower_no_mark")
CASING_WEIGHTS = (0.55, 0.15, 0.15, 0.15)
# The share of training questions worded by the template itself; the rest draw evenly from the
# other training phrasings of their form.
TEMPLATE_SHARE = 0.25

PhrasingTable = Mapping[str, Sequence[str]]


@dataclass(frozen=True)
class Posed:
    """A question before it is worded: its phrasing-table ``form``, the ``slots`` that fill it, its ``answer``."""

    form: str
    slots: Mapping[str, str]
    answer: str


@dataclass(frozen=True)
class Worded:
    """A posed question as asked.

    Attributes:
        question: the question as typed, without the instruction.
        prompt: what follows the medium placeholder: the question and the instruction, if any.
        phrasing: ``FORM/INDEX`` in the table it was worded from.
        instruction: one of :data:`INSTRUCTIONS`.
        spelling: ``british`` / ``american``, or None when the phrasing has no word spelt two ways.
        casing: one of :data:`CASINGS`.
    """

    question: str
    prompt: str
    phrasing: str
    instruction: str
    spelling: str | None
    casing: str

    def meta(self) -> dict[str, str | None]:
        """The fields a sample's JSON keeps to say how it was asked."""
        return {"phrasing": self.phrasing, "instruction": self.instruction, "spelling": self.spelling,
                "casing": self.casing}


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def render(template: str, slots: Mapping[str, str], spelling: str = "british") -> str:
    """Fill ``template`` with ``slots`` and the ``spelling``'s words; the first letter upper-case.

    Example:
        >>> render("the {shape} is what {colour}?", {"shape": "circle"}, "american")
        'The circle is what color?'
    """
    values = {**SPELLINGS[spelling], **slots}
    missing = _fields(template) - set(values)
    if missing:
        raise ValueError(f"phrasing {template!r} uses {sorted(missing)}, which neither the question's slots "
                         f"({sorted(slots)}) nor the spelling words ({sorted(SPELLINGS[spelling])}) give")
    text = template.format(**values)
    return text[:1].upper() + text[1:]


def recase(question: str, casing: str) -> str:
    """``question`` as typed with ``casing``.

    Example:
        >>> [recase("Is it red?", c) for c in CASINGS]
        ['Is it red?', 'is it red?', 'Is it red', 'is it red']
    """
    if casing not in CASINGS:
        raise ValueError(f"unknown casing {casing!r}; expected one of {CASINGS}")
    if casing in ("lower_start", "lower_no_mark"):
        question = question[:1].lower() + question[1:]
    if casing in ("no_mark", "lower_no_mark"):
        question = question.rstrip("?.")
    return question


def with_instruction(question: str, instruction: str) -> str:
    """The prompt: ``question`` with the short-answer instruction placed as ``instruction`` says.

    Example:
        >>> with_instruction("How many objects are there?", "before")
        'Answer the question using a single word or phrase.\\nHow many objects are there?'
    """
    forms = {"after": f"{question}\n{SHORT_ANSWER_PROMPT}", "before": f"{SHORT_ANSWER_PROMPT}\n{question}",
             "inline": f"{question} {SHORT_ANSWER_PROMPT}", "none": question}
    if instruction not in forms:
        raise ValueError(f"unknown instruction placement {instruction!r}; expected one of {INSTRUCTIONS}")
    return forms[instruction]


def _phrasings(table: PhrasingTable, form: str) -> Sequence[str]:
    if form not in table:
        raise ValueError(f"no phrasing for question form {form!r}; the table has: {', '.join(table)}")
    return table[form]


def template_wording(posed: Posed, table: PhrasingTable) -> Worded:
    """The template (the form's first phrasing), British spelling, the instruction after it: the test split's form."""
    template = _phrasings(table, posed.form)[0]
    question = render(template, posed.slots)
    spelt = "british" if _fields(template) & set(SPELLINGS["british"]) else None
    return Worded(question, with_instruction(question, "after"), f"{posed.form}/0", "after", spelt, "as_written")


def typed_wording(posed: Posed, table: PhrasingTable, rng: random.Random, instruction: str | None = None,
                  spelling: str | None = None, template_share: float = 0.0) -> Worded:
    """``posed`` worded as someone might type it, from ``table``; the choices come from ``rng``.

    Args:
        posed: the question.
        table: form -> phrasings (the training table, or the held-out typed one).
        rng: the draws (a generator of its own, so wording never moves the scenes or answers).
        instruction: where the instruction goes (default: drawn with :data:`TRAIN_INSTRUCTION_WEIGHTS`).
        spelling: ``british`` / ``american`` (default: drawn evenly).
        template_share: the chance of the form's first phrasing; otherwise one of the others, evenly.
    """
    phrasings = _phrasings(table, posed.form)
    if template_share > 0:
        first = rng.random() < template_share
        index = 0 if first or len(phrasings) == 1 else rng.randrange(1, len(phrasings))
    else:
        index = rng.randrange(len(phrasings))
    # Spelling and instruction are drawn even when given, so fixing one leaves the other draws as they were.
    drawn_spelling = rng.choice(tuple(SPELLINGS))
    casing = rng.choices(CASINGS, CASING_WEIGHTS)[0]
    drawn_instruction = rng.choices(INSTRUCTIONS, TRAIN_INSTRUCTION_WEIGHTS)[0]
    spelling, instruction = spelling or drawn_spelling, instruction or drawn_instruction
    template = phrasings[index]
    question = recase(render(template, posed.slots, spelling), casing)
    spelt = spelling if _fields(template) & set(SPELLINGS[spelling]) else None
    return Worded(question, with_instruction(question, instruction), f"{posed.form}/{index}", instruction, spelt,
                  casing)


def normalise(text: str) -> str:
    """Lower case, punctuation dropped, spaces collapsed: how two phrasings are compared.

    Example:
        >>> normalise("  The {shape} is what {colour}? ")
        'the shape is what colour'
    """
    return " ".join(re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split())


def widen(table: PhrasingTable, more: PhrasingTable) -> dict[str, tuple[str, ...]]:
    """``table`` with ``more`` phrasings appended per form (the template stays first).

    Example:
        >>> widen({"a": ("What is it?",)}, {"a": ("What's this?",)})
        {'a': ('What is it?', "What's this?")}
    """
    if set(more) - set(table):
        raise ValueError(f"forms {sorted(set(more) - set(table))} are not in the table ({', '.join(table)})")
    return {form: (*phrasings, *more.get(form, ())) for form, phrasings in table.items()}


# The words a keyword query drops (:func:`keyword_forms`): question words, articles, auxiliaries, the
# polite frame ("can you tell me", "I'd like to know") and words naming the image itself. "How many",
# "where", "number", "count", "shape", "colour", "relative", "left" ... stay: they say what is asked.
KEYWORD_STOPWORDS = frozenset({
    "what", "what's", "which", "is", "are", "was", "the", "a", "an", "of", "in", "on", "at", "there", "does", "do",
    "did", "you", "can", "could", "would", "i", "i'd", "like", "know", "me", "tell", "say", "give", "see", "notice",
    "find", "name", "identify", "please", "it", "its", "this", "that", "has", "have", "got", "given", "used", "for",
    "if", "any", "thing", "one", "with", "to", "be", "image", "picture", "contain", "kind", "least"})
_WORDS = re.compile(r"\{\w+\}(?:'s|s)?|[A-Za-z']+")


def keyword_forms(table: PhrasingTable, held_out: PhrasingTable) -> dict[str, tuple[str, ...]]:
    """Each phrasing of ``table`` cut to its content words, as people type a query into a search box:
    ``"What {colour} is the {shape}?"`` becomes ``"{colour} {shape}?"``, ``"How many objects are
    there?"`` becomes ``"How many objects?"``. The word order is kept, and the first letter as
    written (:func:`render` upper-cases it). A form that the table already
    has, or that equals a ``held_out`` phrasing (once normalised), is left out, so a typed test stays unseen.

    Example:
        >>> keyword_forms({"color": ("What {colour} is the {shape}?", "The {shape} is what {colour}?")},
        ...               {"color": ("{shape} {colour}?",)})
        {'color': ('{colour} {shape}?',)}
    """
    taken = {normalise(p) for phrasings in (*table.values(), *held_out.values()) for p in phrasings}
    out = {}
    for form, phrasings in table.items():
        kept: dict[str, str] = {}
        for phrasing in phrasings:
            words = [w for w in _WORDS.findall(phrasing) if w.lower() not in KEYWORD_STOPWORDS]
            short = " ".join(words) + "?"
            key = normalise(short)
            if words and key not in taken:
                kept.setdefault(key, short)  # render() upper-cases the first letter
        out[form] = tuple(kept.values())
    return out


def training_table(tables: Mapping[str, PhrasingTable], name: str, dataset: str) -> PhrasingTable:
    """The training table called ``name`` (``VQABuildConfig.phrasings``) of ``dataset``'s ``tables``.

    Example:
        >>> training_table({"standard": {"a": ("What is it?",)}}, "wide", "digits-vqa")
        Traceback (most recent call last):
        ...
        ValueError: digits-vqa has no 'wide' phrasing table; it has: standard
    """
    if name not in tables:
        raise ValueError(f"{dataset} has no {name!r} phrasing table; it has: {', '.join(tables)}")
    return tables[name]


def check_tables(train: PhrasingTable, typed: PhrasingTable) -> None:
    """Raise ``ValueError`` unless both tables word the same forms and share no phrasing (once normalised).

    Example:
        >>> check_tables({"a": ["What is it?"]}, {"a": ["what is it"]})
        Traceback (most recent call last):
        ...
        ValueError: held-out phrasing 'what is it' (form 'a') is also a training phrasing: the typed test must be unseen
    """
    if set(train) != set(typed):
        raise ValueError(f"the training and held-out tables word different forms: {sorted(train)} vs {sorted(typed)}")
    seen = {normalise(p) for phrasings in train.values() for p in phrasings}
    for form, phrasings in typed.items():
        if not phrasings or not train[form]:
            raise ValueError(f"form {form!r} needs at least one training and one held-out phrasing")
        for phrasing in phrasings:
            if normalise(phrasing) in seen:
                raise ValueError(f"held-out phrasing {phrasing!r} (form {form!r}) is also a training phrasing: "
                                 "the typed test must be unseen")


# The typed test asks half of its questions with the instruction after them (the template's
# placement) and half without; the spelling alternates in pairs, so every question type gets each
# combination when the types cycle with an odd period (5 for shapes-vqa, 3 for digits-vqa).
TYPED_INSTRUCTIONS = ("after", "none")


def typed_records(tests: Iterable[tuple[dict[str, Any], Posed]], table: PhrasingTable,
                  rng: random.Random) -> list[dict[str, Any]]:
    """The typed test: each test question (its sample JSON body, and the :class:`Posed` behind it) asked
    with a phrasing from the held-out ``table``.

    The ``i``-th question gets the instruction ``TYPED_INSTRUCTIONS[i % 2]`` and the spelling
    ``("british", "american")[i // 2 % 2]``; the phrasing and casing come from ``rng``. Each record
    keeps the test question's ``question_id``, ``image_id``, type and answer, so the two tests pair up.

    Example:
        >>> body = {"question_id": 7, "image_id": 7, "question_type": "color", "answer": "red"}
        >>> (rec,) = typed_records([(body, Posed("color", {"shape": "circle"}, "red"))],
        ...                        {"color": ["Which {colour} is the {shape}?"]}, random.Random(0))
        >>> import json; typed = json.loads(rec["json"])
        >>> typed["question_id"], typed["instruction"], typed["spelling"], typed["prompt"].endswith("phrase.")
        (7, 'after', 'british', True)
    """
    spellings = tuple(SPELLINGS)
    out = []
    for i, (body, posed) in enumerate(tests):
        if posed.answer != body["answer"]:
            raise ValueError(f"typed test question {i} (id {body['question_id']}) answers {posed.answer!r}, but the "
                             f"test sample answers {body['answer']!r}: the typed test must re-pose the same questions")
        worded = typed_wording(posed, table, rng, instruction=TYPED_INSTRUCTIONS[i % 2],
                               spelling=spellings[i // 2 % 2])
        same = {k: body[k] for k in ("question_id", "image_id", "question_type", "answer")}
        out.append({"json": encode_json({**same, "question": worded.question, "prompt": worded.prompt,
                                         **worded.meta()})})
    return out


def qa_record(split: str, key: str, png: bytes, posed: Posed, qtype: str, index: int, scene: dict[str, Any],
              table: PhrasingTable, rng: random.Random) -> dict[str, Any]:
    """A builder's sample for ``posed``: the ``test`` split asks the template (so its figures stay
    comparable with all measured before), ``train`` and ``val`` word it as people type, drawing from ``rng``.

    Example:
        >>> posed = Posed("color", {"shape": "circle"}, "red")
        >>> record = qa_record("test", "test-000000", b"png", posed, "color", 0, {}, {"color": ("What {colour} is "
        ...                    "the {shape}?",)}, random.Random(0))
        >>> import json
        >>> body = json.loads(record["json"])
        >>> body["conversations"][0]["value"], body["answer"]
        ('<image>\\nWhat colour is the circle?\\nAnswer the question using a single word or phrase.', 'red')
    """
    if split == "test":
        return vqa_record(key, png, template_wording(posed, table).question, posed.answer, qtype, index, scene=scene)
    worded = typed_wording(posed, table, rng, template_share=TEMPLATE_SHARE)
    return vqa_record(key, png, worded.question, posed.answer, qtype, index, prompt=worded.prompt, scene=scene,
                      **worded.meta())
