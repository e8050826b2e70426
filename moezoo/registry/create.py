"""``create_model``: an untrained model of a registered architecture, ready to run.

The model comes with what a user needs to feed it: the zoo tokenizer for
architectures built on it, and for multimodal ones the processor that matches the
encoders and connectors (placeholder token counts, image / audio / video
preprocessing).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moezoo.checkpoint.reader import load as read_checkpoint
from moezoo.models.spec import spec_for
from moezoo.processing.tokenizer import ZOO_VOCAB_SIZE, zoo_tokenizer
from moezoo.registry.core import model_config, split_name
from moezoo.registry.entry import PretrainedCfg
from moezoo.registry.pretrained import pretrained_cfg, pretrained_entries
from moezoo.registry.shipped import verify_shipped


def create_model(name: str, pretrained: bool = False, device: str | torch.device | None = None,
                 dtype: torch.dtype | None = None, **overrides: Any) -> nn.Module:
    """Build architecture ``name`` with random weights (timm's ``create_model``).

    Args:
        name: a registered architecture (``moezoo.list_models()``), or an ``arch.tag`` with weights.
        pretrained: load the weights of ``name`` (an ``arch.tag``, or an architecture with one tag) instead;
            a shipped model is checked (sha256) and computes in fp32 unless ``dtype`` says otherwise.
            Downloaded models load with ``moezoo.load(name)``.
        device: where to build it; ``"meta"`` builds the shape only (no memory), which is
            how the real-size reference architectures are checked without weights.
        dtype: floating dtype of the weights.
        **overrides: config fields to change; nested configs take dicts, e.g.
            ``llm={"num_layers": 4}`` or ``image_connector={"kind": "moe", "num_experts": 4}``.

    Example:
        >>> model = create_model("moe_lm_tiny", num_layers=1)
        >>> model.config.num_layers, model.tokenizer.convert_tokens_to_ids("<image>")
        (1, 4)
    """
    arch, tag = split_name(name)
    if pretrained or tag:
        if overrides:
            raise ValueError(f"overrides {sorted(overrides)} cannot change a pretrained model's architecture")
        cfg = default_pretrained(name)
        if cfg.source != "shipped":
            raise ValueError(f"{cfg.name} is downloaded ({cfg.source}: {cfg.location}): load it with "
                             f"`moezoo.load({cfg.name!r})`")
        return load_shipped(cfg, device=device, dtype=dtype)
    config = model_config(arch, **overrides)
    with torch.device(device or "cpu"):
        model = spec_for(config).model_class(config)
    if dtype is not None:
        model = model.to(dtype)
    attach_processing(model)
    return model


def default_pretrained(name: str) -> PretrainedCfg:
    """The entry of ``arch.tag``, or of a bare architecture that has exactly one pretrained tag (timm's default).

    Raises:
        ValueError: an unknown name (the closest are named), or an architecture with several tags (listed).
    """
    if split_name(name)[1] is None:
        tags = sorted(n for n, cfg in pretrained_entries().items() if cfg.arch == name)
        if len(tags) > 1:
            raise ValueError(f"{name} has several pretrained tags: {tags}; name one")
        if tags:
            return pretrained_cfg(tags[0])
    return pretrained_cfg(name)


def load_shipped(cfg: PretrainedCfg, device: str | torch.device | None = None,
                 dtype: torch.dtype | str | None = None, root: Any = None) -> nn.Module:
    """Shipped model ``cfg`` in eval mode: every file checked (size, sha256) before its weights are read,
    computed in fp32 unless ``dtype`` is given (weights stored in bf16 are upcast).

    Args:
        cfg: a shipped entry.
        device: where to put the weights.
        dtype: floating dtype of the weights (default ``torch.float32``).
        root: the checkpoints folder (default :func:`moezoo.shipped.checkpoints_root`).
    """
    model_dir = verify_shipped(cfg, root)
    return read_checkpoint(model_dir, device=device or "cpu", dtype=dtype or torch.float32).eval()


def attach_processing(model: nn.Module) -> nn.Module:
    """Give a freshly built model the zoo tokenizer when its vocabulary is the zoo tokenizer's, and the
    processor its family's spec builds for its config (multimodal models), with that tokenizer.

    Reference architectures with another vocabulary get their tokenizer with their weights.
    """
    spec = spec_for(model)
    if spec.language_config(model.config).vocab_size != ZOO_VOCAB_SIZE:
        return model
    if spec.processor is not None:
        model.processor = spec.processor(model.config, zoo_tokenizer())
    else:
        model.tokenizer = zoo_tokenizer()
    return model
