"""Functions of the ``moezoo_tiny_vqa`` lmms-eval task: a local, offline image VQA task.

It is written the way lmms-eval's own VQA tasks are (``lmms_eval/tasks/vqav2/utils.py``):
``doc_to_visual`` returns the doc's images (here opened from files beside this module),
``doc_to_text`` wraps the question in the task's pre/post prompt, and ``process_results``
scores the answer with moezoo's VQAv2 accuracy and exact match.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent


def doc_to_visual(doc: dict) -> list:
    """The doc's image (``doc["image"]`` is a path relative to this folder; ``""``: no image)."""
    from PIL import Image

    if not doc["image"]:
        return []
    with Image.open(HERE / doc["image"]) as image:
        return [image.convert("RGB")]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The question between the task's ``pre_prompt`` and ``post_prompt``."""
    kwargs = lmms_eval_specific_kwargs or {}
    return f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """VQAv2 accuracy against the ten human answers, and exact match against the main answer."""
    from moezoo.eval.metrics import exact_match, vqa_accuracy

    prediction = results[0]
    return {"vqa_accuracy": vqa_accuracy(prediction, doc["answers"]),
            "exact_match": exact_match(prediction, doc["answer"])}
