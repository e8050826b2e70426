"""A model's expert load at the answer positions of a VQA test split: the ``load_entropy`` a router card reports.

The answer position of a question is the position that predicts the first answer token (issue J's
"answer" position; the OLMoE paper attributes an answer to experts there): the last position of the
prompt as ``moezoo eval`` asks it (chat template, generation prompt). Each question is asked exactly
as :class:`~moezoo.eval.tasks.VQATask` asks it, left-padded so that the position is the last column
of every row, and one forward (the prefill ``generate`` runs) records each LLM MoE layer's routing.
The top-k assignments of the answer positions are counted per layer
(:func:`selected_topk_counts`; MH-MoE's sub-tokens count for their token), and the load entropy is
DESIGN.md's, ``H(topk_frequency) / ln E`` (:mod:`moezoo.analysis.stats`), per layer and averaged
over the layers.

MoE sites outside the LLM (an MoE connector, an upcycled encoder) route media tokens, which have
no answer position: they are not counted here.

Example:
    >>> import moezoo, torch
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> report = answer_load_entropy(moezoo.create_model("mm_tiny_cnn"), "shapes_vqa", limit=4)
    >>> report["num_positions"], len(report["per_layer"]), 0.0 <= report["load_entropy"] <= 1.0
    (4, 2, True)
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from moezoo.analysis.stats import normalized_load_entropy


def selected_topk_counts(routing: Any, token_mask_BT: torch.Tensor) -> torch.Tensor:
    """``(E,)`` the assignments of one layer's ``routing`` whose token is selected by ``token_mask_BT``.

    ``routing`` is a :class:`~moezoo.moe.Routing` over the ``B*T`` tokens of a batch in row-major order
    (``token_idx`` / ``expert_idx`` per assignment); with MH-MoE it routes ``h`` sub-tokens per token,
    token ``t``'s being ``t*h .. t*h + h - 1``, and they all count for ``t``.

    Example:
        >>> from moezoo.moe import Routing
        >>> r = Routing(token_idx=torch.tensor([0, 1, 2, 0, 1, 2]), expert_idx=torch.tensor([0, 1, 2, 3, 3, 3]),
        ...             weight=torch.ones(6), logits=torch.zeros(3, 4), probs=torch.full((3, 4), 0.25))
        >>> selected_topk_counts(r, torch.tensor([[False, True, True]])).tolist()  # tokens 1 and 2
        [0, 1, 1, 2]
    """
    mask = token_mask_BT.reshape(-1).to(routing.token_idx.device)
    sub_tokens = routing.probs.shape[0] // max(mask.numel(), 1)
    if sub_tokens < 1 or sub_tokens * mask.numel() != routing.probs.shape[0]:
        raise ValueError(f"the routing covers {routing.probs.shape[0]} (sub-)tokens, not a multiple of the "
                         f"{mask.numel()} tokens of the mask")
    keep = mask[routing.token_idx // sub_tokens]
    num_experts = routing.probs.shape[-1]
    return torch.bincount(routing.expert_idx[keep].long().cpu(), minlength=num_experts)


def _task(task: str | Any) -> Any:
    from moezoo.eval.tasks import TASKS, VQATask

    if isinstance(task, str):
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; the VQA tasks are "
                             f"{sorted(n for n, t in TASKS.items() if isinstance(t, VQATask))}")
        task = TASKS[task]
    if not isinstance(task, VQATask):
        raise ValueError(f"task {task.name!r} has no answer positions to count (a VQA or audio QA task has: "
                         "shapes_vqa, digits_vqa, tones_qa, ...)")
    return task


@torch.inference_mode()
def answer_topk_counts(model: nn.Module, task: str | Any = "shapes_vqa", limit: int | None = None,
                       batch_size: int = 32) -> tuple[list[torch.Tensor], int]:
    """Per LLM MoE layer, ``(E,)`` top-k assignments at the answer positions of ``task``'s questions.

    Args:
        model: a multimodal moezoo model with MoE layers in its LLM.
        task: a VQA (or audio QA) task name or object: ``shapes_vqa``, ``digits_vqa``, ``tones_qa``, ...
        limit: the first N questions.
        batch_size: questions per forward.

    Returns:
        ``(counts per layer, the number of answer positions)``.

    Raises:
        ValueError: not a VQA task, the model does not read its medium, or its LLM has no MoE layer.
    """
    from moezoo.eval import batching
    from moezoo.eval.prompts import encode_prompts, render_prompts
    from moezoo.eval.tasks import model_modalities

    task = _task(task)
    if task.modality not in model_modalities(model):
        raise ValueError(f"task {task.name!r} asks about {task.modality}; this model reads "
                         f"{model_modalities(model) or 'text only'}")
    if getattr(model.language_model.config, "moe", None) is None:
        raise ValueError("this model's LLM has no MoE layer: there is no expert load to measure")
    items = task.items(limit)
    placeholder = model.processor.placeholders[task.modality]
    texts, rendered = render_prompts(model, [f"{placeholder}\n{task.prompt(it)}" for it in items])
    encoded = encode_prompts(model, texts, rendered)
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    totals: list[torch.Tensor] | None = None
    with batching.eval_mode(model):
        for batch in batching.chunks(list(range(len(items))), batch_size):
            media = {f"{task.modality}s": [[items[i][task.modality]] for i in batch]}
            inputs = model.processor.media_inputs([texts[i] for i in batch], **media)
            inputs = batching.to_device(inputs | batching.pad([encoded[i] for i in batch], pad_id, side="left"),
                                        model)
            out = model(**inputs)
            answer_BT = torch.zeros_like(inputs["input_ids"], dtype=torch.bool)
            answer_BT[:, -1] = True  # left padding: every prompt's last token is the last column
            counts = [selected_topk_counts(r, answer_BT) for r in out.routings]
            totals = counts if totals is None else [a + b for a, b in zip(totals, counts)]
    return totals or [], len(items)


def answer_load_entropy(model: nn.Module, task: str | Any = "shapes_vqa", limit: int | None = None,
                        batch_size: int = 32) -> dict[str, Any]:
    """The load entropy of each LLM MoE layer at ``task``'s answer positions, and their mean.

    Arguments as :func:`answer_topk_counts`.

    Returns:
        ``{"task", "num_positions", "per_layer": [H(topk_frequency) / ln E per layer], "load_entropy": their
        mean, "topk_counts": [[E ints] per layer]}``.

    Example:
        >>> import moezoo
        >>> report = answer_load_entropy(moezoo.create_model("mm_tiny_cnn"), "shapes_vqa", limit=2)
        >>> sorted(report), sum(report["topk_counts"][0]) == 2 * 2  # 2 questions, top-2
        (['load_entropy', 'num_positions', 'per_layer', 'task', 'topk_counts'], True)
    """
    name = task if isinstance(task, str) else task.name
    counts, n = answer_topk_counts(model, task, limit, batch_size)
    per_layer = [normalized_load_entropy(c) for c in counts]
    finite = [v for v in per_layer if not math.isnan(v)]
    return {"task": name, "num_positions": n, "per_layer": per_layer,
            "load_entropy": sum(finite) / len(finite) if finite else math.nan,
            "topk_counts": [c.tolist() for c in counts]}
