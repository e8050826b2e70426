"""The Lightning side of moezoo: the module, the datamodule and the callbacks that train a model.

Importing this package is cheap; each name is imported on first use (PEP 562), so
``moezoo.train.MoEZooModule`` (what a LightningCLI ``class_path`` names) pulls in
Lightning, and ``ShardDataModule`` webdataset, only when asked for.

Example:
    >>> import moezoo.train
    >>> moezoo.train.MoEZooModule.__module__
    'moezoo.train.module'
"""

_LAZY = {
    "MoEZooModule": "moezoo.train.module",
    "ShardDataModule": "moezoo.train.datamodule",
    "SkippedSamplesLogger": "moezoo.train.callbacks",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'moezoo.train' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_LAZY))
