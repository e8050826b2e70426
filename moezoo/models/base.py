"""The base class of moezoo's models: the protocol every family implements, processing attached.

Model classes hold model code only. Code that trains, shards, evaluates or converts a
model asks it through this small protocol instead of probing for attributes:

* :attr:`ZooModel.spec`: the family's :class:`~moezoo.models.spec.ArchitectureSpec`;
* :attr:`ZooModel.language_model`: the :class:`~moezoo.models.lm.MoEForCausalLM` inside;
* :meth:`ZooModel.encoders`, :meth:`ZooModel.parts`: the modality encoders, and which part
  (``encoder``, ``connector``, ``llm``) each top-level child is, for the training stages;
* :meth:`ZooModel.moe_sites`: every MoE layer, wherever it sits;
* :meth:`ZooModel.parallel_units`: the modules FSDP shards one by one.

``save_pretrained`` is the transformers-style entry users expect; it hands over to the
writer registered for the format (:func:`moezoo.models.spec.save_format`: moezoo's own from
:mod:`moezoo.checkpoint`, transformers' through the family's exporter from :mod:`moezoo.convert`),
so model code imports nothing above it. Loading is :func:`moezoo.load`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from moezoo.models.spec import ArchitectureSpec, save_format, spec_for
from moezoo.moe import MoELayer
from moezoo.moe.mlp_experts import MoEMLP

PART_KINDS = ("encoder", "connector", "llm")


class ZooModel(nn.Module):
    """An ``nn.Module`` with a typed ``config``, its ``tokenizer`` / ``processor``, the protocol, and ``save_pretrained``.

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

    # -- the protocol ------------------------------------------------------------------------------------
    @property
    def spec(self) -> ArchitectureSpec:
        """The registered spec of this model's family."""
        return spec_for(type(self))

    @property
    def language_model(self) -> nn.Module:
        """The :class:`~moezoo.models.lm.MoEForCausalLM` that reads the token sequence (``self`` for a text LM)."""
        raise NotImplementedError(f"{type(self).__name__} must define language_model")

    def encoders(self) -> dict[str, nn.Module]:
        """Top-level attribute name -> modality encoder, for the encoders this model has (none by default)."""
        return {}

    def parts(self) -> dict[str, str]:
        """Top-level child name -> its part, one of :data:`PART_KINDS`. By default the encoders are
        ``encoder``, the language model (if a child) ``llm``, and everything else ``connector``; a text
        LM is all ``llm``. A family whose connector sits inside another child names it by its dotted
        path too (Qwen3-VL's patch mergers, ``visual.merger``): the longest matching path decides."""
        encoders = {id(m) for m in self.encoders().values()}
        lm = self.language_model
        if lm is self:
            return {name: "llm" for name, _ in self.named_children()}
        return {name: "encoder" if id(m) in encoders else "llm" if m is lm else "connector"
                for name, m in self.named_children()}

    def moe_sites(self) -> dict[str, nn.Module]:
        """Qualified module name -> MoE layer (an LLM :class:`~moezoo.moe.MoELayer`, or a
        :class:`~moezoo.moe.mlp_experts.MoEMLP` in a connector or an upcycled encoder), in module order."""
        return {name: m for name, m in self.named_modules() if isinstance(m, (MoELayer, MoEMLP))}

    def parallel_units(self) -> list[tuple[str, nn.Module]]:
        """``(qualified name, module)`` that FSDP shards as units before the root, innermost first:
        the language model's blocks, then the encoders and the other non-LLM parts (a container's
        members one by one: each connector).

        Example:
            >>> import moezoo
            >>> [name for name, _ in moezoo.create_model("mm_tiny_cnn").parallel_units()]
            ['llm.layers.0', 'llm.layers.1', 'vision', 'connectors.image']
        """
        lm = self.language_model
        prefix = "" if lm is self else next(n for n, m in self.named_children() if m is lm) + "."
        units = [(f"{prefix}layers.{i}", block) for i, block in enumerate(lm.layers)]
        for name, m in self.named_children() if lm is not self else ():
            if m is lm:
                continue
            # FSDP2 shards modules with a forward; a container's members are the units (each connector).
            members = m.named_children() if isinstance(m, (nn.ModuleDict, nn.ModuleList)) else [("", m)]
            units += [(f"{name}.{sub}" if sub else name, unit) for sub, unit in members]
        return units

    # -- processing and saving ---------------------------------------------------------------------------
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

        ``moezoo.load(path)`` reads either back; transformers reads the ``"hf"`` format (the family's
        exporter takes ``kwargs``). A family without a transformers format raises its reason.
        """
        return save_format(format)(self, path, **kwargs)
