"""The Lightning side of moezoo: the module, the datamodule and the callbacks that train a model.

Importing this package is cheap; each name is imported on first use (PEP 562), so
``moezoo.train.MoEZooModule`` (what a LightningCLI ``class_path`` names) pulls in
Lightning, and ``ShardDataModule`` webdataset, only when asked for.

Example:
    >>> import moezoo.train
    >>> moezoo.train.MoEZooModule.__module__
    'moezoo.train.module'
"""

from moezoo.utils.lazy import lazy_attributes

_LAZY = {
    "MoEZooModule": "moezoo.train.module",
    "ShardDataModule": "moezoo.train.datamodule",
    "SkippedSamplesLogger": "moezoo.train.callbacks",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
