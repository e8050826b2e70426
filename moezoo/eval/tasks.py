"""The evaluation tasks moezoo ships, on the data under ``data/``.

- ``shapes_vqa`` / ``digits_vqa``: generated answers to the held-out VQA test split, asked
  with LLaVA-1.5's short-answer prompt (``"<image>\\n{question}\\nAnswer the question using
  a single word or phrase."``, as in its VQAv2 / GQA evaluation), scored with VQAv2 accuracy
  against the split's VQAv2 annotation file and with exact match, overall and per question
  type. Beside each type: the majority-answer baseline (always answering the training split's
  most frequent answer of that type). With ``blank_images`` every image is also replaced by a
  uniform grey one and the accuracies are reported again (``blank_*``): a model that really
  reads the image loses accuracy.
- ``shapes_vqa_typed`` / ``digits_vqa_typed``: the same test questions (same images, answers and
  question ids) asked as people type them: phrasings that the training data never uses (the
  builders' ``TYPED_PHRASINGS``), British and American spellings, half of them without the
  short-answer instruction, some lower-case or without a question mark. Same metrics, so a
  model's figures on the two sit side by side: how much it loses to the way a question is typed.
- ``tones_qa``: the same on the audio QA test split (beeps: how many, higher or lower,
  which is longer), with silence as the blank input.
- ``text_ppl``: perplexity on the held-out text corpus (``data/text``, split ``val``).
- ``text_mc``: which of four continuations follows a held-out text's opening words (the
  true one, or the same span of three other texts, seeded); log-likelihood accuracy with and
  without length normalisation, as lm-eval scores HellaSwag.

Any other name is an lm-evaluation-harness task (see :mod:`moezoo.eval.runner`).

Example:
    >>> sorted(TASKS)
    ['digits_vqa', 'digits_vqa_typed', 'shapes_vqa', 'shapes_vqa_typed', 'text_mc', 'text_ppl', 'tones_qa']
    >>> TASKS["shapes_vqa"].modality
    'image'
"""

from __future__ import annotations

import abc
import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from torch import nn

from moezoo.data.shards import read_split, shipped_dataset
from moezoo.data.vqa import TYPED_SPLIT, WORDING_FIELDS, vqa_prompt


@dataclass
class TaskResult:
    """What a task measured: ``metrics`` (flat ``name -> float``) and per-sample ``rows`` for tables."""

    metrics: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)


def model_modalities(model: nn.Module) -> list[str]:
    """The media a model reads (``[]`` for a text-only model).

    Example:
        >>> import moezoo
        >>> model_modalities(moezoo.create_model("moe_lm_tiny"))
        []
    """
    processor = getattr(model, "processor", None)
    return list(getattr(processor, "modalities", []) or [])


@dataclass(frozen=True)
class ShippedTask(abc.ABC):
    """A task on a dataset shipped under ``data/``: its name, dataset dir, one-line description, split."""

    name: str
    dataset: str
    description: str
    split: str = "test"
    modality: ClassVar[str] = "text"

    @abc.abstractmethod
    def run(self, model: nn.Module, limit: int | None = None, batch_size: int = 32, progress: bool = False,
            blank_images: bool = False) -> TaskResult:
        """Evaluate ``model`` on the first ``limit`` samples of the split."""


@dataclass(frozen=True)
class VQATask(ShippedTask):
    """Generated short answers on a shipped VQA split, scored as VQAv2 and GQA score them."""

    modality: ClassVar[str] = "image"

    def decode(self, sample: dict[str, Any]) -> Any:
        """The sample's medium as the processor takes it (here a PIL image)."""
        from moezoo.data.media import decode_image

        return decode_image(sample["png"])

    def items(self, limit: int | None = None, root: Path | None = None) -> list[dict[str, Any]]:
        """The questions in split order: ``question_id, question, question_type, answers`` and the medium
        under the task's modality (``image`` / ``audio``)."""
        root = root or shipped_dataset(self.dataset)
        annotations = json.loads((root / f"{self.split}_annotations.json").read_text())["annotations"]
        answers = {a["question_id"]: [x["answer"] for x in a["answers"]] for a in annotations}
        items = []
        for sample in read_split(root, self.split, limit=limit):
            body = json.loads(sample["json"])
            items.append({"question_id": body["question_id"], "question": body["question"],
                          "question_type": body["question_type"], self.modality: self.decode(sample),
                          "answers": answers[body["question_id"]]})
        return items

    def majority_answers(self, root: Path | None = None) -> dict[str, str]:
        """Question type -> the training split's most frequent answer (ties: the first seen)."""
        counts: dict[str, Counter] = defaultdict(Counter)
        for sample in read_split(root or shipped_dataset(self.dataset), "train"):
            body = json.loads(sample["json"])
            counts[body["question_type"]][body["answer"]] += 1
        return {qtype: c.most_common(1)[0][0] for qtype, c in counts.items()}

    def run(self, model: nn.Module, limit: int | None = None, batch_size: int = 32, progress: bool = False,
            blank_images: bool = False) -> TaskResult:
        from moezoo.eval.metrics import vqa_accuracy

        items = self.items(limit)
        majority = self.majority_answers()
        rows = [self.row(it) for it in items]
        prefixes = ["", "blank_"] if blank_images else [""]
        for prefix in prefixes:
            answers = self.answer(model, items, batch_size=batch_size, progress=progress, blank=bool(prefix))
            for row, item, answer in zip(rows, items, answers):
                row.update(self.score(item, answer, prefix))
        for row, item in zip(rows, items):
            row["majority_baseline"] = vqa_accuracy(majority.get(item["question_type"], ""), item["answers"])
        return TaskResult(vqa_metrics(rows, prefixes), rows)

    def answer(self, model: nn.Module, items: list[dict[str, Any]], batch_size: int = 32, max_new_tokens: int = 16,
               progress: bool = False, blank: bool = False, fixed_steps: bool = False) -> list[str]:
        """The model's answers to ``items``, each asked with :meth:`prompt` after the medium (the shared VQA loop)."""
        from moezoo.eval.generation import generate_answers

        if self.modality not in model_modalities(model):
            raise ValueError(f"task {self.name!r} asks about {self.modality}, but this model has no {self.modality} "
                             f"encoder (it reads: {', '.join(model_modalities(model)) or 'text only'}); evaluate it "
                             f"on text tasks (text_ppl, text_mc, lm-eval tasks) instead")
        placeholder = model.processor.placeholders[self.modality]
        prompts = [f"{placeholder}\n{self.prompt(it)}" for it in items]
        media = {f"{self.modality}s": [[it[self.modality]] for it in items]}
        return generate_answers(model, prompts, **media, batch_size=batch_size, max_new_tokens=max_new_tokens,
                                progress=progress, blank_images=blank, fixed_steps=fixed_steps)

    def prompt(self, item: dict[str, Any]) -> str:
        """What follows the medium placeholder: the question with LLaVA-1.5's short-answer instruction."""
        return vqa_prompt(item["question"])

    @staticmethod
    def row(item: dict[str, Any]) -> dict[str, Any]:
        """A result row's identity columns: the question and its main answer."""
        return {k: item[k] for k in ("question_id", "question_type", "question")} | {"answer": item["answers"][0]}

    @staticmethod
    def score(item: dict[str, Any], answer: str, prefix: str = "") -> dict[str, Any]:
        """``answer``'s row entries: the prediction, its VQAv2 accuracy and its exact match."""
        from moezoo.eval.metrics import exact_match, vqa_accuracy

        return {f"{prefix}prediction": answer, f"{prefix}vqa_accuracy": vqa_accuracy(answer, item["answers"]),
                f"{prefix}exact_match": exact_match(answer, item["answers"][0])}


@dataclass(frozen=True)
class AudioQATask(VQATask):
    """Generated short answers about a shipped audio QA split (the audio twin of :class:`VQATask`)."""

    modality: ClassVar[str] = "audio"

    def decode(self, sample: dict[str, Any]) -> Any:
        """``(mono waveform, sample rate)`` of the sample's WAV."""
        from moezoo.processing.audio import load_audio

        wave, rate = load_audio(sample["wav"])
        return wave.mean(axis=0), rate


@dataclass(frozen=True)
class TypedVQATask(VQATask):
    """A VQA test split's questions asked as people type them: the same images, answers and question ids.

    The questions are the typed test the data builder writes beside the test shards
    (``{questions}_questions.json``, VQAv2 layout, scored by the test split's annotations; see
    :mod:`moezoo.data.phrasing`): every test question worded with a phrasing that training never
    uses, in British or American spelling, half with the short-answer instruction and half
    without. Each is asked exactly as its ``prompt`` says (no normalising) and scored as
    :class:`VQATask` scores, so the metrics have the same keys and sit beside the templated
    task's; the rows also say how each question was worded.
    """

    questions: str = TYPED_SPLIT

    def items(self, limit: int | None = None, root: Path | None = None) -> list[dict[str, Any]]:
        """One item per test sample (the first ``limit``): :meth:`VQATask.items`' keys plus ``prompt``, ``phrasing``,
        ``instruction``, ``spelling`` and ``casing``. The answers are the test split's annotations (same ids)."""
        root = root or shipped_dataset(self.dataset)
        path = root / f"{self.questions}_questions.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: task {self.name!r} asks the typed questions that "
                                    f"`moezoo data build {self.dataset}` writes beside the {self.split} shards; "
                                    "rebuild the dataset with it")
        typed = {q["image_id"]: q for q in json.loads(path.read_text())["questions"]}
        annotations = json.loads((root / f"{self.split}_annotations.json").read_text())["annotations"]
        annotations = {a["question_id"]: a for a in annotations}
        items = []
        for sample in read_split(root, self.split, limit=limit):
            body = json.loads(sample["json"])
            if body["image_id"] not in typed:
                raise ValueError(f"{path} has no question about {self.split} image {body['image_id']} "
                                 f"({sample['__key__']}): the typed test must ask every test question; rebuild it")
            q = typed[body["image_id"]]
            a = annotations[q["question_id"]]
            items.append({"question_id": q["question_id"], "question": q["question"],
                          "question_type": a["question_type"], self.modality: self.decode(sample),
                          "answers": [x["answer"] for x in a["answers"]]} | {k: q.get(k) for k in WORDING_FIELDS})
        return items

    def prompt(self, item: dict[str, Any]) -> str:
        """The question exactly as typed, with the instruction only where the typed test put one."""
        return item["prompt"]

    @staticmethod
    def row(item: dict[str, Any]) -> dict[str, Any]:
        """:meth:`VQATask.row` plus how the question was worded (phrasing, instruction, spelling, casing)."""
        return VQATask.row(item) | {k: item[k] for k in WORDING_FIELDS if k != "prompt"}


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def vqa_metrics(rows: list[dict[str, Any]], prefixes: list[str] = ("",)) -> dict[str, float]:
    """Overall and per-type means of the per-question scores in ``rows``.

    Example:
        >>> rows = [{"question_type": "color", "vqa_accuracy": 1.0, "exact_match": 1.0, "majority_baseline": 0.0},
        ...         {"question_type": "count", "vqa_accuracy": 0.0, "exact_match": 0.0, "majority_baseline": 1.0}]
        >>> m = vqa_metrics(rows)
        >>> m["vqa_accuracy"], m["vqa_accuracy/color"], m["majority_baseline/count"], m["num_questions"]
        (0.5, 1.0, 1.0, 2.0)
    """
    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_type[row["question_type"]].append(row)
    names = [f"{p}{m}" for p in prefixes for m in ("vqa_accuracy", "exact_match")] + ["majority_baseline"]
    metrics: dict[str, float] = {"num_questions": float(len(rows))}
    for name in names:
        metrics[name] = _mean([r[name] for r in rows])
        for qtype in sorted(by_type):
            metrics[f"{name}/{qtype}"] = _mean([r[name] for r in by_type[qtype]])
    return metrics


def _texts(dataset: str, split: str, limit: int | None) -> list[str]:
    return [s["txt"].decode("utf-8") for s in read_split(shipped_dataset(dataset), split, limit=limit)]


@dataclass(frozen=True)
class PerplexityTask(ShippedTask):
    """Token-level perplexity of a shipped text split (each text scored as its own sequence)."""

    split: str = "val"

    def run(self, model: nn.Module, limit: int | None = None, batch_size: int = 8, progress: bool = False,
            blank_images: bool = False) -> TaskResult:
        from moezoo.eval.language import perplexity

        return TaskResult({k: float(v) for k, v in perplexity(model, _texts(self.dataset, self.split, limit),
                                                               batch_size=batch_size).items()})


@dataclass(frozen=True)
class ContinuationChoiceTask(ShippedTask):
    """Pick the true continuation of a text's opening words among ``num_choices`` (HellaSwag-style)."""

    split: str = "val"
    context_words: int = 12
    continuation_words: int = 8
    num_choices: int = 4
    seed: int = 0

    def items(self, limit: int | None = None) -> list[dict[str, Any]]:
        """``{"context", "choices", "label"}`` items, the same on every run (seeded, no ``hash()``).

        Example:
            >>> item = TASKS["text_mc"].items(limit=1)[0]
            >>> len(item["choices"]), item["choices"][item["label"]] in TASKS["text_mc"].items()[0]["choices"]
            (4, True)
        """
        n = self.context_words + self.continuation_words
        docs = [t.split() for t in _texts(self.dataset, self.split, None)]
        docs = [words for words in docs if len(words) >= n]
        spans = [" ".join(w[self.context_words:n]) for w in docs]
        rng = random.Random(self.seed)
        items = []
        for i, words in enumerate(docs[:limit]):
            others = rng.sample([j for j in range(len(docs)) if spans[j] != spans[i]], self.num_choices - 1)
            label = rng.randrange(self.num_choices)
            choices = [spans[j] for j in others]
            choices.insert(label, spans[i])
            items.append({"context": " ".join(words[:self.context_words]), "choices": choices, "label": label})
        return items

    def run(self, model: nn.Module, limit: int | None = None, batch_size: int = 16, progress: bool = False,
            blank_images: bool = False) -> TaskResult:
        from moezoo.eval.language import multiple_choice

        items = self.items(limit)
        metrics = {k: float(v) for k, v in multiple_choice(model, items, batch_size=batch_size).items()}
        return TaskResult({**metrics, "num_items": float(len(items))})


TASKS: dict[str, ShippedTask] = {
    t.name: t for t in (
        VQATask("shapes_vqa", "shapes-vqa", "shapes-vqa test (500): colour, shape, count, position, existence"),
        VQATask("digits_vqa", "digits-vqa", "digits-vqa test (400): which digit, odd/even, greater than N"),
        AudioQATask("tones_qa", "tones-qa", "tones-qa test (300): how many beeps, higher or lower, which is longer"),
        TypedVQATask("shapes_vqa_typed", "shapes-vqa", "shapes_vqa's 500 questions as people type them (held-out "
                     "phrasings, colour/color, half without the instruction)"),
        TypedVQATask("digits_vqa_typed", "digits-vqa", "digits_vqa's 400 questions as people type them (held-out "
                     "phrasings, half without the instruction)"),
        PerplexityTask("text_ppl", "text", "perplexity on the held-out text corpus (100 docstrings)"),
        ContinuationChoiceTask("text_mc", "text", "the true 8-word continuation among 4 (acc, acc_norm)"),
    )
}
