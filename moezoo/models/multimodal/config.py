"""Typed configuration of the multimodal MoE model.

One config names the LLM, an encoder per modality and a connector per modality, in
the shape of LLaVA (one vision tower, one projector; Liu et al. 2023) extended as
Uni-MoE does (Li et al. 2024, arXiv 2405.11273): audio through Whisper's encoder and a
resampler, video as frames through the image tower. MoE can sit in the LLM's FFNs, in
a connector (kind ``moe``) or in an encoder's MLPs (upcycled), in any mix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from moezoo.models.connectors import CONNECTORS
from moezoo.models.connectors.linear import MLPConfig
from moezoo.models.connectors.resampler import ResamplerConfig
from moezoo.models.encoders import ENCODERS
from moezoo.models.encoders.video import VideoConfig
from moezoo.models.lm.config import LMConfig
from moezoo.processing.processor import MODALITIES
from moezoo.utils.checks import require
from moezoo.utils.config import Config, to_plain

ATTENTION = ("causal", "bidirectional", "prefix")


@dataclass
class MultimodalConfig(Config):
    """Configuration of :class:`~moezoo.models.multimodal.MultimodalMoEForCausalLM`.

    Args:
        llm: the language model (any :class:`~moezoo.models.lm.LMConfig`, MoE or dense).
        vision: the image encoder's config (a registered encoder kind, or a dict with ``kind``);
            ``None``: no images.
        audio: the audio encoder's config; ``None``: no audio.
        video: how videos are encoded (frames through ``vision``); ``None``: no video.
        image_connector / audio_connector: connector configs; default ``mlp2x_gelu`` for images
            (LLaVA-1.5) and a 32-query ``resampler`` for audio (Uni-MoE: Whisper gives 1500 tokens).
        video_connector: ``None`` shares the image connector (Video-LLaVA).
        image_token_id / audio_token_id / video_token_id: the placeholder ids in the LLM's
            vocabulary (the zoo tokenizer's ``<image>``, ``<audio>``, ``<video>`` by default).
        modality_attention: ``"causal"`` (LLaVA: every token attends causally),
            ``"bidirectional"`` (the tokens of one image, clip or video also attend to each other)
            or ``"prefix"`` (PaliGemma's prefix-LM: the whole prompt, media and text, attends both
            ways, so image tokens read the question that follows them; the answer is causal).

    Example:
        >>> cfg = MultimodalConfig(
        ...     llm=LMConfig(vocab_size=64, dim=32, num_layers=1, num_heads=4, ffn_dim=64),
        ...     vision={"kind": "cnn", "channels": [8, 8, 16, 16], "film": False})
        >>> cfg.image_connector.kind, cfg.modalities
        ('mlp2x_gelu', ['image'])
        >>> MultimodalConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    llm: LMConfig
    vision: Any = None
    audio: Any = None
    video: VideoConfig | None = None
    image_connector: Any = None
    audio_connector: Any = None
    video_connector: Any = None
    image_token_id: int = 4
    audio_token_id: int = 5
    video_token_id: int = 6
    modality_attention: str = "causal"

    def __post_init__(self) -> None:
        if isinstance(self.llm, dict):
            self.llm = LMConfig.from_dict(self.llm)
        if isinstance(self.video, dict):
            self.video = VideoConfig.from_dict(self.video)
        self.vision = _kinded(ENCODERS, self.vision)
        self.audio = _kinded(ENCODERS, self.audio)
        if getattr(self.vision, "condition_dim", 0) is None:  # a prompt-conditioned encoder reads LLM embeddings
            self.vision = self.vision.replace(condition_dim=self.llm.dim)
        if self.vision is not None and self.image_connector is None:
            self.image_connector = MLPConfig()
        if self.audio is not None and self.audio_connector is None:
            self.audio_connector = ResamplerConfig()
        for name in ("image_connector", "audio_connector", "video_connector"):
            setattr(self, name, _kinded(CONNECTORS, getattr(self, name)))
        require(self, "modality_attention", self.modality_attention in ATTENTION, f"must be one of {ATTENTION}")
        require(self, "video", self.video is None or self.vision is not None,
                "needs `vision`: video frames go through the image encoder")
        require(self, "video_connector", self.video_connector is None or self.video is not None,
                "is set but `video` is None")
        if self.audio is not None:
            require(self, "audio", ENCODERS.module_class(self.audio.kind).modality == "audio",
                    f"must be an audio encoder kind, got {self.audio.kind!r}")
        if self.vision is not None:
            require(self, "vision", ENCODERS.module_class(self.vision.kind).modality == "image",
                    f"must be an image encoder kind, got {self.vision.kind!r}")
        ids = {m: getattr(self, f"{m}_token_id") for m in self.modalities}
        for modality, token_id in ids.items():
            require(self, f"{modality}_token_id", 0 <= token_id < self.llm.vocab_size,
                    f"must be a token id in [0, llm.vocab_size={self.llm.vocab_size})")
        require(self, "image_token_id", len(set(ids.values())) == len(ids),
                f"the placeholder ids must differ, got {ids}")

    @property
    def modalities(self) -> list[str]:
        """The modalities this model takes, in the order ``image``, ``audio``, ``video``."""
        on = {"image": self.vision is not None, "audio": self.audio is not None, "video": self.video is not None}
        return [m for m in MODALITIES if on[m]]

    def to_dict(self) -> dict[str, Any]:
        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def for_checkpoint(self) -> MultimodalConfig:
        """This config without the encoders' ``pretrained`` sources: a checkpoint holds their
        weights, so loading it must not read (or download) them again."""
        return self.replace(**{name: _without_pretrained(getattr(self, name)) for name in ("vision", "audio")})


def _without_pretrained(encoder: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(encoder)} if encoder is not None else {}
    if "pretrained" not in fields:
        return encoder
    return dataclasses.replace(encoder, pretrained=fields["pretrained"].default)


def _kinded(registry: Any, value: Any) -> Any:
    """A config of ``registry`` from a dict with ``kind`` (or ``None`` / a config unchanged)."""
    return None if value is None else registry.config_from_dict(value)
