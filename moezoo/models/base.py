"""The base class of moezoo's models: processing attached, I/O handed over.

Model classes hold model code only. ``save_pretrained`` is the transformers-style
entry users expect, but it is a thin hand-over to :mod:`moezoo.checkpoint.writer`, which
writes every format (moezoo's own, or transformers' through :mod:`moezoo.convert.export`)
and imports no model class back, so there is no import cycle. Loading is :func:`moezoo.load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn


class ZooModel(nn.Module):
    """An ``nn.Module`` with a typed ``config``, its ``tokenizer`` / ``processor``, and ``save_pretrained``.

    Attributes:
        config_class: the typed config the class is built from (set by subclasses).
        tokenizer: the tokenizer that goes with the weights, or ``None``.
        processor: the multimodal :class:`~moezoo.processing.processor.Processor`, or ``None``;
            when set, ``tokenizer`` is its tokenizer.
    """

    config_class: type

    def __init__(self) -> None:
        super().__init__()
        self._tokenizer: Any = None
        self.processor: Any = None

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer if self.processor is not None else self._tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        if self.processor is not None:
            self.processor.tokenizer = value
        self._tokenizer = value

    @property
    def transforms(self) -> Any:
        """The image preprocessing of this model's weights (PIL images -> tensor), or ``None``."""
        return getattr(self.processor, "image_processor", None)

    def save_pretrained(self, path: str | Path, format: str = "moezoo", **kwargs: Any) -> Path:
        """Save to ``path`` as a moezoo checkpoint (``format="moezoo"``) or a transformers one (``"hf"``).

        ``moezoo.load(path)`` reads either back; transformers reads the ``"hf"`` format. See
        :func:`moezoo.checkpoint.writer.save_pretrained` for the options.
        """
        from moezoo.checkpoint.writer import save_pretrained

        return save_pretrained(self, path, format, **kwargs)
