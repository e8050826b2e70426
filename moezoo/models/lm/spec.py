"""The text LM family's :class:`~moezoo.models.spec.ArchitectureSpec`: :class:`MoEForCausalLM` from an
:class:`LMConfig`, fed by its tokenizer alone, upcycled by :func:`~moezoo.models.lm.upcycle.upcycle_lm`.
Its transformers importers and exporter register from :mod:`moezoo.convert.hf_import` / ``hf_export``."""

from moezoo.models.lm.config import LMConfig
from moezoo.models.lm.model import MoEForCausalLM
from moezoo.models.lm.upcycle import upcycle_lm
from moezoo.models.spec import ArchitectureSpec, register_architecture

LM_SPEC = register_architecture(ArchitectureSpec(
    name="MoEForCausalLM", config_class=LMConfig, model_class=MoEForCausalLM, processor=None, upcycle=upcycle_lm))
