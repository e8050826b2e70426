"""The multimodal family's :class:`~moezoo.models.spec.ArchitectureSpec`: encoders and connectors in front of
a sparse-MoE LLM, fed by the :class:`~moezoo.processing.processor.Processor` its config implies, upcycled by
:func:`~moezoo.models.multimodal.upcycle.upcycle_multimodal`. LLaVA conversion registers from
:mod:`moezoo.convert.llava_import` / ``llava_export``."""

from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.models.multimodal.frontend import processor_for_config
from moezoo.models.multimodal.model import MultimodalMoEForCausalLM
from moezoo.models.multimodal.upcycle import upcycle_multimodal
from moezoo.models.spec import ArchitectureSpec, register_architecture

MULTIMODAL_SPEC = register_architecture(ArchitectureSpec(
    name="MultimodalMoEForCausalLM", config_class=MultimodalConfig, model_class=MultimodalMoEForCausalLM,
    processor=processor_for_config, upcycle=upcycle_multimodal, language_config=lambda config: config.llm))
