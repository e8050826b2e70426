"""The model registry: named architectures, ``create_model`` and pretrained tags (``PretrainedCfg``).

Example:
    >>> from moezoo.registry import create_model, list_models
    >>> "moe_lm_tiny" in list_models("*tiny*")
    True
"""

# The architectures, then the hub entries, register themselves on import.
from moezoo.registry import hub_models, libmoe, moe_llava, multimodal, text  # noqa: F401
from moezoo.registry.core import model_config, register_model
from moezoo.registry.create import create_model
from moezoo.registry.entry import PretrainedCfg, PretrainedFile
from moezoo.registry.pretrained import check_pretrained, list_models, pretrained_cfg, register_pretrained

__all__ = ["PretrainedCfg", "PretrainedFile", "check_pretrained", "create_model", "list_models", "model_config",
           "pretrained_cfg", "register_model", "register_pretrained"]
