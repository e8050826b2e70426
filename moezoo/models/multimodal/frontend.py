"""The multimodal model's front end, from its config alone: encoders, connectors, token counts.

The model builds its encoders and connectors here, and the family's processor factory
(:func:`processor_for_config`, the ``processor`` of its :class:`~moezoo.models.spec.ArchitectureSpec`)
builds them on the meta device to learn how many tokens each input becomes and how each
encoder wants its input preprocessed, without building the language model: a datamodule
gets its processor from the config it trains.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moezoo.models.connectors import build_connector
from moezoo.models.encoders import VideoEncoder, build_encoder
from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.processing.processor import Processor


def build_parts(config: MultimodalConfig) -> tuple[nn.Module | None, nn.Module | None, nn.ModuleDict]:
    """``(vision, audio, connectors)``: the encoders (``None`` when absent) and one connector per modality
    (videos share the image connector unless ``video_connector`` is set)."""
    dim = config.llm.dim
    vision = build_encoder(config.vision) if config.vision is not None else None
    audio = build_encoder(config.audio) if config.audio is not None else None
    connectors = nn.ModuleDict()
    for modality, encoder in (("image", vision), ("audio", audio)):
        if encoder is not None:
            connectors[modality] = build_connector(getattr(config, f"{modality}_connector"), encoder.out_dim, dim, dim)
    if config.video_connector is not None:
        connectors["video"] = build_connector(config.video_connector, vision.out_dim, dim, dim)
    return vision, audio, connectors


def encoder_for(config: MultimodalConfig, vision: nn.Module | None, audio: nn.Module | None,
                modality: str) -> nn.Module:
    """The encoder of ``modality``; videos run the image tower frame by frame (a view, not a second copy)."""
    if modality == "video":
        return VideoEncoder(config.video, vision)
    return vision if modality == "image" else audio


def connector_for(connectors: nn.ModuleDict, modality: str) -> nn.Module:
    """The connector of ``modality`` (videos share the image connector unless they have their own)."""
    return connectors[modality if modality in connectors else "image"]


def token_counts(config: MultimodalConfig, vision: nn.Module | None, audio: nn.Module | None,
                 connectors: nn.ModuleDict) -> dict[str, int]:
    """Modality -> how many LLM tokens one input of it becomes (the placeholder's expansion)."""
    return {m: connector_for(connectors, m).num_output_tokens(encoder_for(config, vision, audio, m).num_tokens)
            for m in config.modalities}


def preprocess_specs(vision: nn.Module | None, audio: nn.Module | None) -> dict[str, dict]:
    """Modality -> the preprocessing spec of its encoder (what the processor applies)."""
    return {m: e.preprocess_spec() for m, e in (("image", vision), ("audio", audio)) if e is not None}


def processor_for_config(config: MultimodalConfig, tokenizer: Any, **kwargs: Any) -> Processor:
    """The :class:`~moezoo.processing.processor.Processor` that feeds a model of ``config``.

    The encoders and connectors are built on the meta device (no memory, no weights) for their
    token counts and preprocessing; the language model is not built at all.

    Example:
        >>> from moezoo.registry import model_config
        >>> from moezoo.processing.tokenizer import zoo_tokenizer
        >>> processor_for_config(model_config("mm_tiny_cnn"), zoo_tokenizer()).num_tokens
        {'image': 4}
    """
    with torch.device("meta"):
        vision, audio, connectors = build_parts(config)
    specs = preprocess_specs(vision, audio)
    num_tokens = token_counts(config, vision, audio, connectors)
    placeholders = {m: tokenizer.convert_ids_to_tokens(getattr(config, f"{m}_token_id")) for m in num_tokens}
    return Processor(tokenizer, num_tokens, image=specs.get("image"), audio=specs.get("audio"),
                     video_frames=config.video.num_frames if config.video is not None else None,
                     placeholders=placeholders, **kwargs)
