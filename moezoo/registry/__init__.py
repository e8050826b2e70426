"""The model registry: named architectures, ``create_model`` and pretrained tags (``PretrainedCfg``).

Example:
    >>> from moezoo.registry import create_model, list_models
    >>> "moe_lm_tiny" in list_models("*tiny*")
    True
"""

from moezoo.registry import multimodal, text  # noqa: F401  (the architectures register themselves)
from moezoo.registry.core import model_config, register_model
from moezoo.registry.create import create_model
from moezoo.registry.entry import PretrainedCfg, PretrainedFile
from moezoo.registry.pretrained import check_pretrained, list_models, pretrained_cfg, register_pretrained

try:
    from moezoo.registry import hub_models  # noqa: F401  (the hub entries register themselves)
except ModuleNotFoundError as err:  # a checkout from before the hub entries
    if err.name != "moezoo.registry.hub_models":
        raise

__all__ = ["PretrainedCfg", "PretrainedFile", "check_pretrained", "create_model", "list_models", "model_config",
           "pretrained_cfg", "register_model", "register_pretrained"]
