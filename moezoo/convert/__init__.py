"""Conversion between moezoo and transformers checkpoints.

Text LMs of nine families (Llama, Qwen2, Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE, StableLM,
Phi-2, Phi-3), one entry each in :mod:`moezoo.convert.families`, and LLaVA (``LlavaForConditionalGeneration``
with a CLIP or SigLIP tower and any of those text models).

Each family's importers and exporter register against its
:class:`~moezoo.models.spec.ArchitectureSpec` when this package is imported (which
:func:`moezoo.models.spec.load_plugins` does on first need), so ``moezoo.load`` of a transformers
dir and ``model.save_pretrained(path, format="hf")`` find them through the spec.

Modules:
    families: one :class:`~moezoo.convert.families.TextFamily` entry per text family.
    hf_config / hf_weights: ``config.json`` and state dicts <-> moezoo's, for the text families.
    hf_import / hf_export: ``moezoo.load`` of a text checkpoint, ``save_pretrained(format="hf")`` of an LM.
    llava / llava_import / llava_export: the same for LLaVA checkpoints, processor files included.
    moe_llava / moe_llava_import / moe_llava_export: MoE-LLaVA's released format (``moe_llava_*`` model types,
        a CLIP or SigLIP tower; ``save_pretrained(format="moe_llava")``).
    libmoe / libmoe_import / libmoe_export: LibMoE's released format (``llava_phi``, MoE SigLIP tower and
        projector; ``save_pretrained(format="libmoe")``); libmoe_testing builds tiny ones in its key layout.
    towers: the Hub CLIP / SigLIP towers that released checkpoints name, with their configs (no download).
    testing / llava_testing / moe_llava_testing: tiny random transformers checkpoints for tests and benchmarks.

Example:
    >>> from moezoo.convert.hf_config import FAMILIES
    >>> sorted(FAMILIES)
    ['llama', 'mixtral', 'olmoe', 'phi', 'phi3', 'qwen2', 'qwen2_moe', 'qwen3_moe', 'stablelm']
"""

from moezoo.convert import hf_export, hf_import, llava_export, llava_import  # noqa: F401,E402  (register)
from moezoo.convert import qwen3_vl  # noqa: F401,E402  (registers Qwen3-VL-MoE)
from moezoo.convert import moe_llava_export, moe_llava_import  # noqa: F401,E402  (registers MoE-LLaVA)
from moezoo.convert import libmoe_export, libmoe_import  # noqa: F401,E402  (registers LibMoE's llava_phi)
