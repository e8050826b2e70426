"""Batching for every evaluation path: padding, media, device moves, eval mode and progress.

The scorer (:mod:`moezoo.eval.scoring`), answer generation (:mod:`moezoo.eval.generation`)
and both harness adapters build their batches here, so a convention is written once:

- :func:`pad`: rows of token ids to ``input_ids`` / ``attention_mask``. Scoring pads on the
  right, as lm-eval's ``HFLM`` does for causal models (causal attention never reads what
  follows a token, so no mask is needed); generation pads on the left, so that every
  prompt's last token is the last position and new tokens line up across the batch.
- :func:`media_inputs`: the raw images / audio clips / videos of a batch through the
  processor's own preprocessing, flattened in placeholder order (the model's input keys).
- :func:`to_device`: a batch onto the model's device, floating tensors in its dtype.
- :func:`eval_mode`: eval mode for a block, the caller's mode restored after (training
  callbacks evaluate a model mid-training).
- :func:`progress`: a tqdm bar, or nothing.
- :func:`longest_first` / :func:`chunks`: the order in which batches pad least.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["check_batch_size", "chunks", "eval_mode", "longest_first", "media_inputs", "model_device", "pad",
           "progress", "to_device"]


def check_batch_size(batch_size: int) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is a positive int.

    Example:
        >>> check_batch_size(0)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=0 must be an int >= 1
    """
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its training flag after, even on error.

    Example:
        >>> model = nn.Linear(2, 2).train()
        >>> with eval_mode(model):
        ...     model.training
        False
        >>> model.training
        True
    """
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's (first) parameters."""
    return next(model.parameters()).device


def pad(rows: Sequence[Sequence[int]], pad_id: int = 0, side: str = "right") -> dict[str, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` (1 on tokens, 0 on padding) of ``rows``, padded on ``side``.

    Example:
        >>> out = pad([[5, 6, 7], [8]], pad_id=0, side="left")
        >>> out["input_ids"].tolist(), out["attention_mask"].tolist()
        ([[5, 6, 7], [0, 0, 8]], [[1, 1, 1], [0, 0, 1]])
        >>> pad([[5, 6, 7], [8]])["input_ids"].tolist()
        [[5, 6, 7], [8, 0, 0]]
    """
    if side not in ("left", "right"):
        raise ValueError(f"side={side!r} must be 'left' or 'right'")
    width = max((len(row) for row in rows), default=0)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            where = slice(width - len(row), width) if side == "left" else slice(0, len(row))
            ids[i, where] = torch.as_tensor(list(row), dtype=torch.long)
            mask[i, where] = 1
    return {"input_ids": ids, "attention_mask": mask}


def media_inputs(processor: Any, media: Sequence[Mapping[str, Sequence]], model_name: str = "this model"
                 ) -> dict[str, torch.Tensor]:
    """The preprocessed media of a batch: per modality, every row's items in order, through the processor.

    Args:
        processor: the model's :class:`~moezoo.processing.processor.Processor` (``None`` for a text model).
        media: per row, modality (``"image"``, ``"audio"``, ``"video"``) -> its raw items in placeholder order.
        model_name: how errors name the model.

    Returns:
        The model's input keys (``pixel_values``, ``input_features``, ``pixel_values_videos``) for the
        modalities present; ``{}`` when no row has media.

    Raises:
        ValueError: a modality is unknown, or the model does not take it.

    Example:
        >>> media_inputs(None, [{}, {"image": []}])
        {}
    """
    from moezoo.processing.processor import INPUT_KEYS  # the processor's own keys (imported on use: it is heavy)

    unknown = sorted({m for row in media for m in row} - set(INPUT_KEYS))
    if unknown:
        raise ValueError(f"unknown media {unknown}; the modalities are {list(INPUT_KEYS)}")
    out = {}
    for modality, key in INPUT_KEYS.items():
        flat = [item for row in media for item in row.get(modality, ())]
        if not flat:
            continue
        modalities = list(getattr(processor, "modalities", None) or [])
        if modality not in modalities:
            plural = {"image": "images", "video": "videos"}.get(modality, modality)
            raise ValueError(f"{model_name} takes no {plural}; its modalities are {modalities or ['text']}")
        out[key] = getattr(processor, f"{modality}_processor")(flat)
    return out


def to_device(inputs: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """``inputs`` on the model's device; floating tensors (pixels, features) in the model's dtype.

    Example:
        >>> batch = to_device({"input_ids": torch.ones(1, 2, dtype=torch.long), "pixel_values": torch.ones(1)},
        ...                   nn.Linear(2, 2).double())
        >>> batch["input_ids"].dtype, batch["pixel_values"].dtype
        (torch.int64, torch.float64)
    """
    param = next(model.parameters())
    return {k: v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device)
            for k, v in inputs.items()}


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices by length, longest first (ties in order): batches of similar length pad little,
    and an out-of-memory shows at the first batch.

    Example:
        >>> longest_first([2, 5, 3, 5])
        [1, 3, 2, 0]
    """
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def chunks(items: Sequence, size: int) -> Iterator[list]:
    """Consecutive batches of ``size`` items (the last may be shorter).

    Example:
        >>> list(chunks([1, 2, 3, 4, 5], 2))
        [[1, 2], [3, 4], [5]]
    """
    check_batch_size(size)
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def progress(total: int, enabled: bool, desc: str, unit: str = "it") -> Any:
    """A tqdm bar over ``total`` items when ``enabled``, else one that shows nothing; both have
    ``update`` / ``close`` and are context managers.

    Example:
        >>> with progress(3, enabled=False, desc="Scoring") as bar:
        ...     bar.update(3)
    """
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit)
