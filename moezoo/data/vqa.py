"""What the VQA generators share: the build config, the sample record and VQAv2 JSON.

Every sample is a LLaVA-style conversation (``{"from": "human"|"gpt", "value": ...}``
with an ``<image>`` placeholder), so generated data, converted LLaVA data and the
training pipeline speak one format. The test split is also written as the VQAv2
question and annotation files (Antol et al. 2015; Goyal et al. 2017) so the usual
VQA accuracy code runs on it unchanged.
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


@dataclass
class VQABuildConfig(BuildConfig):
    """Sizes and seed of a generated VQA dataset (the fields of :class:`~moezoo.data.shards.BuildConfig`, plus):

    Args:
        n_captions: image-caption samples (the alignment stage); 0 writes none.
        image_size: side of the square images, in pixels.

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

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min(self, n_captions=0)
        require(self, "image_size", 16 <= self.image_size <= 512, "must be in [16, 512]")

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
    key: str, png: bytes, question: str, answer: str, question_type: str, image_id: int, **meta: Any
) -> dict[str, Any]:
    """A shard sample: the PNG plus JSON with the conversation, the QA pair and ``meta``.

    ``meta`` holds what the image was drawn from (``scene``), so a test can check the
    answer against it.
    """
    body = {
        "id": key,
        "conversations": conversation(vqa_prompt(question), answer),
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


def write_vqav2_json(out_dir: str | Path, dataset: str, split: str, records: list[dict[str, Any]]) -> None:
    """Write ``{split}_questions.json`` and ``{split}_annotations.json`` in the VQAv2 layout."""
    questions, annotations = [], []
    for rec in records:
        body = json.loads(rec["json"])
        qid, image_id, answer = body["question_id"], body["image_id"], body["answer"]
        questions.append({"image_id": image_id, "question": body["question"], "question_id": qid})
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
    for name, body in (("questions", q_body), ("annotations", a_body)):  # compact, like the VQAv2 release
        atomic_write_text(out_dir / f"{split}_{name}.json", encode_json(body).decode("utf-8") + "\n")


def build_vqa_dataset(
    out_dir: str | Path,
    name: str,
    cfg: VQABuildConfig,
    make_split: Callable[[str, int], Iterator[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
) -> DatasetIndex:
    """Write every split of ``cfg`` with ``make_split(split, n)``, the VQAv2 test JSON and ``index.json``."""

    def vqav2_json(split: str, records: list[dict[str, Any]]) -> None:
        if split == "test":
            write_vqav2_json(out_dir, name, split, records)

    return build_dataset(out_dir, name, cfg, make_split, extra, after_split=vqav2_json)
