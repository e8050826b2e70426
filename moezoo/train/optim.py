"""The optimiser and learning-rate schedule of a training run: AdamW with linear warm-up and cosine decay.

Weight decay spares biases, norms and embeddings, as GPT-2 / minGPT's ``configure_optimizers``
and timm's ``param_groups_weight_decay`` do; the schedule is the warm-up + cosine of
LLaVA and LibMoE's recipes (transformers' ``get_cosine_schedule_with_warmup``, with a floor).

Example:
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Embedding(5, 4), nn.Linear(4, 4))
    >>> [len(g["params"]) for g in param_groups(model, weight_decay=0.1)]  # the weight; the table and bias
    [1, 2]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn


class WarmupCosine:
    """The LR multiplier of step ``s``: linear warm-up, then cosine decay to ``min_lr_ratio``.

    ``(s + 1) / warmup_steps`` for ``s < warmup_steps`` (the first step already moves), then
    ``m + (1 - m) * (1 + cos(pi * p)) / 2`` with ``p = (s - warmup_steps) / (total_steps - warmup_steps)``
    capped at 1. A plain callable class, so ``LambdaLR.state_dict()`` holds only numbers.

    Example:
        >>> f = WarmupCosine(warmup_steps=2, total_steps=10, min_lr_ratio=0.1)
        >>> [round(f(s), 3) for s in (0, 1, 2, 6, 10, 20)]
        [0.5, 1.0, 1.0, 0.55, 0.1, 0.1]
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_lr_ratio: float):
        self.warmup_steps, self.total_steps, self.min_lr_ratio = warmup_steps, total_steps, min_lr_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, self.total_steps - self.warmup_steps))
        return self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def no_weight_decay(module: nn.Module, name: str, param: nn.Parameter) -> bool:
    """Whether ``module``'s own parameter ``name`` is exempt from weight decay: biases, norms
    (every 1-d parameter), embedding tables, and learned position / class tokens.

    Example:
        >>> linear, table = nn.Linear(2, 2), nn.Embedding(3, 2)
        >>> [no_weight_decay(m, n, p) for m in (linear, table) for n, p in m.named_parameters()]
        [False, True, True]
    """
    if param.ndim < 2 or name.endswith("bias") or isinstance(module, nn.Embedding):
        return True
    # Parameters held directly (not a layer's weight) named like ViT's pos_embed / cls_token / CLIP's class_embedding.
    return not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)) and ("embed" in name or "token" in name)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW parameter groups of the trainable parameters: with and without weight decay (empty ones dropped)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            (no_decay if no_weight_decay(module, name, param) else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def adamw_warmup_cosine(model: nn.Module, total_steps: float, lr: float, weight_decay: float = 0.0,
                        betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, warmup_steps: int = 0,
                        min_lr_ratio: float = 0.1) -> dict[str, Any]:
    """AdamW over ``model``'s trainable parameters with :class:`WarmupCosine` stepped every optimiser
    step, as Lightning's ``configure_optimizers`` returns them.

    Args:
        model: the model whose trainable parameters (``requires_grad``) the optimiser steps.
        total_steps: the run's optimiser steps (``trainer.estimated_stepping_batches``): the cosine's length.
        lr / weight_decay / betas / eps: AdamW's.
        warmup_steps / min_lr_ratio: :class:`WarmupCosine`'s.

    Raises:
        ValueError: ``total_steps`` is infinite (a resampled dataset without ``max_steps``).

    Example:
        >>> out = adamw_warmup_cosine(nn.Linear(2, 2), total_steps=10, lr=1e-3, warmup_steps=2)
        >>> type(out["optimizer"]).__name__, out["lr_scheduler"]["interval"], out["optimizer"].param_groups[0]["lr"]
        ('AdamW', 'step', 0.0005)
    """
    if not math.isfinite(total_steps):
        raise ValueError("the LR schedule needs the run's length: set Trainer(max_steps=...) (a resampled "
                         "dataset has no length)")
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, int(total_steps), min_lr_ratio))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step", "frequency": 1}}
