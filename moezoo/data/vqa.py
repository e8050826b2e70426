"""What the VQA generators share: the build config, the sample record and VQAv2 JSON.

Every sample is a LLaVA-style conversation (``{"from": "human"|"gpt", "value": ...}``
with an ``<image>`` placeholder), so generated data, converted LLaVA data and the
training pipeline speak one format. The test split is also written as the VQAv2
question and annotation files (Antol et al. 2015; Goyal et al. 2017) so the usual
VQA accuracy code runs on it unchanged, and so is the typed test (``test_typed_*.json``:
the test questions worded as people type them, see :mod:`moezoo.data.phrasing`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from moezoo.data.shards import BuildConfig, DatasetIndex, build_dataset, encode_json
from moezoo.processing.tokens import IMAGE
from moezoo.utils.checks import check_min, require
from moezoo.utils.io import atomic_write_text

# VQAv2 has ten human answers per question; ours are exact, so all ten agree and the
# standard min(#matches / 3, 1) accuracy is 1 for the right answer and 0 otherwise.
VQA_ANSWERS_PER_QUESTION = 10
# LLaVA-1.5's prompt for short-answer VQA (its VQAv2 / GQA training mix and evaluation both
# append it): the generated data asks the way the field's models are trained and evaluated.
SHORT_ANSWER_PROMPT = "Answer the question using a single word or phrase."
# The typed test: the test questions asked as people type them (written beside the test shards).
TYPED_SPLIT = "test_typed"
# The training phrasing tables a VQA builder may offer (VQABuildConfig.phrasings): the shipped data's, a wider
# one, and the wider one with phrasings that keep surface cues from telling the question type.
PHRASING_SETS = ("standard", "wide", "broad")
# How a question was worded (moezoo.data.phrasing), kept in its sample JSON and VQAv2 question entry.
WORDING_FIELDS = ("prompt", "phrasing", "instruction", "spelling", "casing")


@dataclass
class VQABuildConfig(BuildConfig):
    """Sizes and seed of a generated VQA dataset (the fields of :class:`~moezoo.data.shards.BuildConfig`, plus):

    Args:
        n_captions: image-caption samples (the alignment stage); 0 writes none.
        image_size: side of the square images, in pixels.
        phrasings: the table train and val are worded from: ``"standard"`` (what ``data/`` ships) or, where the
            dataset has one, ``"wide"`` (the standard phrasings and more) or ``"broad"`` (the wide ones, and
            more that no opener, plural or fragment marks as one question type); see ``PHRASING_TABLES`` in
            its builder.

    Example:
        >>> VQABuildConfig(n_train=10).split_sizes()
        {'train': 10, 'val': 100, 'test': 200, 'captions': 200}
        >>> VQABuildConfig(image_size=4)
        Traceback (most recent call last):
        ...
        ValueError: VQABuildConfig.image_size=4 must be in [16, 512]
    """

    n_captions: int = 200
    image_size: int = 64
    phrasings: str = "standard"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min(self, n_captions=0)
        require(self, "image_size", 16 <= self.image_size <= 512, "must be in [16, 512]")
        require(self, "phrasings", self.phrasings in PHRASING_SETS, f"must be one of {', '.join(PHRASING_SETS)}")

    def split_sizes(self) -> dict[str, int]:
        return {**super().split_sizes(), **({"captions": self.n_captions} if self.n_captions else {})}


def conversation(prompt: str, answer: str) -> list[dict[str, str]]:
    """A one-turn LLaVA conversation with the image placeholder before the prompt.

    Example:
        >>> conversation("What colour is the circle?", "red")[0]["value"]
        '<image>\\nWhat colour is the circle?'
    """
    human = f"{IMAGE}\n{prompt}" if prompt else IMAGE
    return [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]


def vqa_prompt(question: str) -> str:
    """The short-answer VQA prompt of LLaVA-1.5 (without the image placeholder).

    Example:
        >>> vqa_prompt("What colour is the circle?")
        'What colour is the circle?\\nAnswer the question using a single word or phrase.'
    """
    return f"{question}\n{SHORT_ANSWER_PROMPT}"


def vqa_record(
    key: str, png: bytes, question: str, answer: str, question_type: str, image_id: int, prompt: str | None = None,
    **meta: Any,
) -> dict[str, Any]:
    """A shard sample: the PNG plus JSON with the conversation, the QA pair and ``meta``.

    The human turn asks ``prompt`` (default: :func:`vqa_prompt` of ``question``, the template's
    form); ``question`` is the question as asked, without the instruction. ``meta`` holds what
    the image was drawn from (``scene``), so a test can check the answer against it, and how the
    question was worded (:mod:`moezoo.data.phrasing`).
    """
    body = {
        "id": key,
        "conversations": conversation(vqa_prompt(question) if prompt is None else prompt, answer),
        "question": question,
        "answer": answer,
        "question_type": question_type,
        "question_id": image_id,
        "image_id": image_id,
        **meta,
    }
    return {"__key__": key, "png": png, "json": encode_json(body)}


def caption_record(key: str, png: bytes, caption: str, image_id: int, **meta: Any) -> dict[str, Any]:
    """A captions-split sample: ``<image>`` alone as the prompt, the caption as the answer (LLaVA-558K style)."""
    body = {"id": key, "conversations": conversation("", caption), "caption": caption, "image_id": image_id, **meta}
    return {"__key__": key, "png": png, "json": encode_json(body)}


def answer_type(answer: str) -> str:
    """The VQAv2 answer type.

    Example:
        >>> answer_type("yes"), answer_type("3"), answer_type("red")
        ('yes/no', 'number', 'other')
    """
    if answer in ("yes", "no"):
        return "yes/no"
    return "number" if answer.isdigit() else "other"


def write_vqav2_json(out_dir: str | Path, dataset: str, split: str, records: list[dict[str, Any]],
                     annotations_file: bool = True) -> None:
    """Write ``{split}_questions.json`` and (unless ``annotations_file`` is False) ``{split}_annotations.json``
    in the VQAv2 layout.

    A question entry also carries whichever of :data:`WORDING_FIELDS` the sample's JSON has
    (the typed test's prompt and how it was worded); the template's test questions have none.
    """
    questions, annotations = [], []
    for rec in records:
        body = json.loads(rec["json"])
        qid, image_id, answer = body["question_id"], body["image_id"], body["answer"]
        wording = {k: body[k] for k in WORDING_FIELDS if k in body}
        questions.append({"image_id": image_id, "question": body["question"], "question_id": qid, **wording})
        annotations.append(
            {
                "question_id": qid,
                "image_id": image_id,
                "question_type": body["question_type"],
                "answer_type": answer_type(answer),
                "multiple_choice_answer": answer,
                "answers": [
                    {"answer": answer, "answer_confidence": "yes", "answer_id": i + 1}
                    for i in range(VQA_ANSWERS_PER_QUESTION)
                ],
            }
        )
    info = {"description": f"{dataset} {split} (generated by moezoo)", "version": "1.0"}
    common = {"info": info, "data_type": dataset, "data_subtype": split, "license": {"name": "Apache-2.0"}}
    out_dir = Path(out_dir)
    q_body = {**common, "task_type": "Open-Ended", "questions": questions}
    a_body = {**common, "annotations": annotations}
    files = [("questions", q_body)] + ([("annotations", a_body)] if annotations_file else [])
    for name, body in files:  # compact, like the VQAv2 release
        atomic_write_text(out_dir / f"{split}_{name}.json", encode_json(body).decode("utf-8") + "\n")


def build_vqa_dataset(
    out_dir: str | Path,
    name: str,
    cfg: VQABuildConfig,
    make_split: Callable[[str, int], Iterator[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
    typed: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> DatasetIndex:
    """Write every split of ``cfg`` with ``make_split(split, n)``, the VQAv2 test JSON and ``index.json``.

    With ``typed``, ``typed(test_records)`` gives the typed test: the test questions asked with
    held-out phrasings (records with ``json`` only; see :func:`moezoo.data.phrasing.typed_records`).
    They are written as ``test_typed_questions.json`` beside the test shards, whose images they
    ask about; their question ids are the test questions', so ``test_annotations.json`` scores
    both. They are never shards: no tokenizer or training run reads them.
    """

    def vqav2_json(split: str, records: list[dict[str, Any]]) -> None:
        if split == "test":
            write_vqav2_json(out_dir, name, split, records)
            if typed is not None:
                write_vqav2_json(out_dir, name, TYPED_SPLIT, typed(records), annotations_file=False)

    if typed is not None and "test" in cfg.split_sizes():
        typed_test = {"images": "test", "questions": f"{TYPED_SPLIT}_questions.json",
                      "annotations": "test_annotations.json"}
        extra = {**(extra or {}), "typed_test": typed_test}
    return build_dataset(out_dir, name, cfg, make_split, extra, after_split=vqav2_json)
