"""Where a training run's :class:`~moezoo.processing.processor.Processor` comes from.

The processor is the model's: the data a model trains on is preprocessed and tokenized exactly
as the model is fed at inference (open_clip's ``create_model_and_transforms`` keeps the two
together the same way). It is found without building the model: for an architecture name, its
family's :class:`~moezoo.models.spec.ArchitectureSpec` builds it from the config
(``spec.processor(config, tokenizer)``, or the tokenizer alone when the family has no
processor); for a checkpoint dir, from its saved processor or tokenizer files.

Example:
    >>> architecture_processor("mm_tiny_cnn").num_tokens
    {'image': 4}
    >>> architecture_processor("moe_lm_tiny").modalities
    []
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from moezoo.models.base import ZooModel
from moezoo.models.spec import spec_for
from moezoo.processing.processor import PROCESSOR_NAME, Processor

ONE_SOURCE = ("give exactly one of `processor` (a Processor, a model, a checkpoint dir or an architecture name) "
              "and, for text-only data, `tokenizer` (under `moezoo fit` the data takes the model's processor: "
              "leave data.processor and data.tokenizer out of the config)")


def architecture_processor(name: str, overrides: dict[str, Any] | None = None) -> Processor:
    """The processor of architecture ``name`` (with config ``overrides``), from its spec, without building it.

    An ``arch.tag`` name with weights takes its checkpoint's processor.

    Raises:
        ValueError: an unknown name, or an architecture whose vocabulary is not the zoo tokenizer's
            (its tokenizer comes with its weights: train from a checkpoint dir instead).
    """
    from moezoo.processing.tokenizer import ZOO_VOCAB_SIZE, zoo_tokenizer
    from moezoo.registry.core import model_config, split_name
    from moezoo.registry.pretrained import pretrained_dir

    if split_name(name)[1]:
        return checkpoint_processor(pretrained_dir(name))
    config = model_config(name, **(overrides or {}))
    spec = spec_for(config)
    vocab = spec.language_config(config).vocab_size
    if vocab != ZOO_VOCAB_SIZE:
        raise ValueError(f"{name} has a vocabulary of {vocab}, not the zoo tokenizer's {ZOO_VOCAB_SIZE}: its "
                         "tokenizer comes with its weights; train from a checkpoint dir (model.checkpoint) instead")
    tokenizer = zoo_tokenizer()
    return spec.processor(config, tokenizer) if spec.processor is not None else Processor(tokenizer, {})


def checkpoint_processor(path: str | Path) -> Processor:
    """The processor a checkpoint dir (or a tokenizer dir) saved: its ``moezoo_processor.json``, else its tokenizer."""
    path = Path(path)
    if (path / PROCESSOR_NAME).is_file():
        return Processor.from_pretrained(path)
    return Processor(load_tokenizer_object(path), {})


def model_processor(model: ZooModel) -> Processor:
    """The processor that feeds a built ``model``: its own, or its tokenizer's for a text model.

    Raises:
        ValueError: the model has neither.
    """
    if model.processor is not None:
        return model.processor
    if model.tokenizer is None:
        raise ValueError(f"this {type(model).__name__} has no processor or tokenizer attached; give the data a "
                         "tokenizer, or load the model from a dir that holds one")
    return Processor(model.tokenizer, {})


def resolve_processor(processor: Any = None, tokenizer: Any = None) -> Processor:
    """The :class:`~moezoo.processing.processor.Processor` that ``processor`` or ``tokenizer`` names.

    Args:
        processor: a ``Processor`` (or a family's own processor with ``encode_example``); a moezoo model; a registered architecture name
            (:func:`architecture_processor`: from its spec, the model is not built); a checkpoint
            dir (:func:`checkpoint_processor`); or anything whose ``processor`` attribute is one of
            these (a :class:`~moezoo.train.module.MoEZooModule`, what ``moezoo fit`` links to the data).
        tokenizer: for text-only data, a tokenizer object or dir instead (no media).

    Raises:
        ValueError: both or neither given, or ``processor`` names nothing that has one.

    Example:
        >>> resolve_processor("mm_tiny_cnn").num_tokens
        {'image': 4}
    """
    if (processor is None) == (tokenizer is None):
        raise ValueError(ONE_SOURCE)
    if tokenizer is not None:
        return Processor(load_tokenizer_object(tokenizer), {})
    if isinstance(processor, Processor) or callable(getattr(type(processor), "encode_example", None)):
        return processor  # ours, or a family's own (Qwen3-VL's: moezoo.processing.qwen3_vl)
    if isinstance(processor, ZooModel):
        return model_processor(processor)
    if isinstance(processor, (str, Path)):
        if Path(processor).is_dir() or os.sep in str(processor):  # a checkpoint (or tokenizer) dir
            return checkpoint_processor(processor)
        return architecture_processor(str(processor))
    source = getattr(processor, "processor", None)  # a LightningModule training a model
    if source is not None:
        return resolve_processor(source)
    raise ValueError(f"cannot take a processor from a {type(processor).__name__}; give a Processor, a moezoo model, "
                     "a checkpoint dir, a registered architecture name, or an object whose `processor` is one")


def load_tokenizer_object(tokenizer: Any) -> Any:
    """``tokenizer``, read from its dir when it is a path."""
    if isinstance(tokenizer, (str, Path)):
        from moezoo.processing.tokenizer import load_tokenizer

        return load_tokenizer(tokenizer)
    return tokenizer
