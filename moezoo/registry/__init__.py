"""The model registry: named architectures, ``create_model`` and pretrained tags.

Example:
    >>> from moezoo.registry import create_model, list_models
    >>> "moe_lm_tiny" in list_models("*tiny*")
    True
"""

from moezoo.registry import multimodal, text  # noqa: F401  (the architectures register themselves)
from moezoo.registry.core import check_pretrained, list_models, model_config, register_model
from moezoo.registry.create import create_model

__all__ = ["check_pretrained", "create_model", "list_models", "model_config", "register_model"]
