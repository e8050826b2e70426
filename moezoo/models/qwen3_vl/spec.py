"""The Qwen3-VL-MoE family's :class:`~moezoo.models.spec.ArchitectureSpec`. Its transformers importer and exporter
register from :mod:`moezoo.convert.qwen3_vl`; its processor is read from the checkpoint's transformers processor
files (:class:`~moezoo.processing.qwen3_vl.Qwen3VLProcessor`), in both formats. No upcycling: the LLM is sparse
already."""

from moezoo.models.qwen3_vl.config import Qwen3VLMoEConfig
from moezoo.models.qwen3_vl.model import Qwen3VLMoEForConditionalGeneration
from moezoo.models.spec import ArchitectureSpec, register_architecture
from moezoo.processing.qwen3_vl import Qwen3VLProcessor

QWEN3_VL_MOE_SPEC = register_architecture(ArchitectureSpec(
    name="Qwen3VLMoEForConditionalGeneration", config_class=Qwen3VLMoEConfig,
    model_class=Qwen3VLMoEForConditionalGeneration, processor=None, upcycle=None,
    language_config=lambda config: config.llm, processor_reader=Qwen3VLProcessor.from_pretrained))
