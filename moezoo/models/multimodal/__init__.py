"""The multimodal MoE model: modality encoders -> connectors -> a sparse-MoE LLM.

Example:
    >>> from moezoo.models.multimodal import MultimodalConfig, MultimodalMoEForCausalLM
    >>> MultimodalMoEForCausalLM.config_class is MultimodalConfig
    True
"""

from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.models.multimodal.model import MultimodalMoEForCausalLM, MultimodalOutput

__all__ = ["MultimodalConfig", "MultimodalMoEForCausalLM", "MultimodalOutput"]
