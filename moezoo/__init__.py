"""moezoo: a multimodal Mixture-of-Experts model zoo on PyTorch Lightning.

Importing moezoo stays light: the training stack (Lightning trainer, W&B,
webdataset) is only imported by the commands and modules that train.

Example:
    >>> import moezoo
    >>> model = moezoo.create_model("moe_lm_tiny")
    >>> sorted(n for n in moezoo.list_models("moe_lm_*"))
    ['moe_lm_tiny']
"""

from moezoo.utils.lazy import lazy_attributes

__version__ = "0.1.0"

# Entry points are imported on first use (PEP 562), so `import moezoo` pulls in
# neither torch's model code nor transformers until a model is actually built or loaded.
_LAZY = {
    "load": "moezoo.loading",
    "upcycle": "moezoo.loading",
    "create_model": "moezoo.registry",
    "list_models": "moezoo.registry",
    "register_model": "moezoo.registry",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
