"""The typed config of the Qwen3-VL-MoE model: the vision tower's, the MoE LLM's, and the special token ids."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moezoo.models.encoders.qwen3_vl import Qwen3VLVisionConfig
from moezoo.models.lm.config import LMConfig
from moezoo.utils.checks import require
from moezoo.utils.config import Config


@dataclass
class Qwen3VLMoEConfig(Config):
    """Configuration of :class:`~moezoo.models.qwen3_vl.Qwen3VLMoEForConditionalGeneration`.

    The token ids default to Qwen3-VL's (``Qwen3VLMoeConfig``'s): ``<|image_pad|>`` 151655,
    ``<|video_pad|>`` 151656, ``<|vision_start|>`` 151652, ``<|vision_end|>`` 151653.

    Args:
        llm: the text model; it needs multimodal RoPE (``mrope_section``), as Qwen3-VL's text model rotates
            each frequency by one of a token's three positions (time, height, width).
        vision: the tower; its ``out_hidden_size`` is the LLM's width and it may have at most as many
            deepstack mergers as the LLM has layers.
        image_token_id / video_token_id: the placeholder ids the tower's tokens replace.
        vision_start_token_id / vision_end_token_id: the ids around each image and video frame.

    Example:
        >>> from moezoo.moe import MoEConfig
        >>> llm = LMConfig(vocab_size=64, dim=32, num_layers=2, num_heads=4, ffn_dim=64, mrope_section=[2, 1, 1],
        ...                mrope_interleaved=True, moe=MoEConfig(dim=32, expert_dim=16, num_experts=4, top_k=2))
        >>> vision = Qwen3VLVisionConfig(depth=2, hidden_size=32, num_heads=4, intermediate_size=64, patch_size=4,
        ...                              out_hidden_size=32, num_position_embeddings=16, deepstack_visual_indexes=[0])
        >>> cfg = Qwen3VLMoEConfig(llm=llm, vision=vision, image_token_id=60, video_token_id=61,
        ...                        vision_start_token_id=62, vision_end_token_id=63)
        >>> Qwen3VLMoEConfig.from_dict(cfg.to_dict()) == cfg
        True
        >>> Qwen3VLMoEConfig(llm=llm.replace(mrope_section=None), vision=vision)
        Traceback (most recent call last):
        ...
        ValueError: Qwen3VLMoEConfig.llm must have multimodal RoPE (llm.mrope_section)
    """

    llm: LMConfig
    vision: Qwen3VLVisionConfig = field(default_factory=Qwen3VLVisionConfig)
    image_token_id: int = 151655
    video_token_id: int = 151656
    vision_start_token_id: int = 151652
    vision_end_token_id: int = 151653

    def __post_init__(self) -> None:
        if isinstance(self.llm, dict):
            self.llm = LMConfig.from_dict(self.llm)
        if isinstance(self.vision, dict):
            self.vision = Qwen3VLVisionConfig.from_dict(self.vision)
        if self.llm.mrope_section is None:
            raise ValueError("Qwen3VLMoEConfig.llm must have multimodal RoPE (llm.mrope_section)")
        if self.vision.out_hidden_size != self.llm.dim:
            raise ValueError(f"Qwen3VLMoEConfig.vision.out_hidden_size={self.vision.out_hidden_size} must equal "
                             f"llm.dim={self.llm.dim} (the tower's tokens replace placeholder embeddings)")
        if len(self.vision.deepstack_visual_indexes) > self.llm.num_layers:
            raise ValueError(f"Qwen3VLMoEConfig.vision has {len(self.vision.deepstack_visual_indexes)} deepstack "
                             f"mergers, more than the llm's {self.llm.num_layers} layers")
        ids = {"image_token_id": self.image_token_id, "video_token_id": self.video_token_id,
               "vision_start_token_id": self.vision_start_token_id, "vision_end_token_id": self.vision_end_token_id}
        for name, value in ids.items():
            require(self, name, 0 <= value < self.llm.vocab_size, f"must be a token id in [0, {self.llm.vocab_size})")
        require(self, "video_token_id", self.video_token_id != self.image_token_id, "must differ from image_token_id")

    def to_dict(self) -> dict[str, Any]:
        return {"llm": self.llm.to_dict(), "vision": self.vision.to_dict(), "image_token_id": self.image_token_id,
                "video_token_id": self.video_token_id, "vision_start_token_id": self.vision_start_token_id,
                "vision_end_token_id": self.vision_end_token_id}
