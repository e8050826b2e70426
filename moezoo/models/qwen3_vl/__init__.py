"""Qwen3-VL-MoE: the Qwen3-VL vision tower, DeepStack and a sparse-MoE LLM with interleaved multimodal RoPE.

Example:
    >>> from moezoo.models.qwen3_vl import Qwen3VLMoEConfig, Qwen3VLMoEForConditionalGeneration
    >>> Qwen3VLMoEForConditionalGeneration.config_class is Qwen3VLMoEConfig
    True
"""

from moezoo.models.qwen3_vl.config import Qwen3VLMoEConfig
from moezoo.models.qwen3_vl.model import Qwen3VLMoEForConditionalGeneration
from moezoo.models.qwen3_vl.positions import rope_positions
from moezoo.models.qwen3_vl.spec import QWEN3_VL_MOE_SPEC  # registers the family
from moezoo.processing.qwen_vl import mm_token_types

__all__ = ["QWEN3_VL_MOE_SPEC", "Qwen3VLMoEConfig", "Qwen3VLMoEForConditionalGeneration", "mm_token_types",
           "rope_positions"]
