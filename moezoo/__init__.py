"""moezoo: a multimodal Mixture-of-Experts model zoo on PyTorch Lightning.

Importing moezoo stays light: the training stack (Lightning trainer, W&B,
webdataset) is only imported by the commands and modules that train.

Example:
    >>> import moezoo
    >>> model = moezoo.create_model("moe_lm_tiny")
    >>> sorted(n for n in moezoo.list_models("moe_lm_*"))
    ['moe_lm_tiny']
"""

__version__ = "0.1.0"

# Entry points are imported on first use (PEP 562), so `import moezoo` pulls in
# neither torch's model code nor transformers until a model is actually built or loaded.
_LAZY = {
    "load": "moezoo.loading",
    "upcycle": "moezoo.models.upcycle",
    "create_model": "moezoo.registry",
    "list_models": "moezoo.registry",
    "register_model": "moezoo.registry",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moezoo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
