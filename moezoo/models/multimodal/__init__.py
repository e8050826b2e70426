"""The multimodal MoE model: modality encoders -> connectors -> a sparse-MoE LLM.

Example:
    >>> from moezoo.models.multimodal import MultimodalConfig, MultimodalMoEForCausalLM
    >>> MultimodalMoEForCausalLM.config_class is MultimodalConfig
    True
"""

from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.models.multimodal.model import MultimodalMoEForCausalLM, MultimodalOutput
from moezoo.models.multimodal.spec import MULTIMODAL_SPEC  # registers the family

__all__ = ["MULTIMODAL_SPEC", "MultimodalConfig", "MultimodalMoEForCausalLM", "MultimodalOutput"]
