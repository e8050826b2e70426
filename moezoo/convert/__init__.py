"""Conversion between moezoo and transformers checkpoints.

Text LMs of six families (Llama, Qwen2, Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE), one entry
each in :mod:`moezoo.convert.families`, and LLaVA (``LlavaForConditionalGeneration``
with a CLIP or SigLIP tower and any of those text models).

Modules:
    families: one :class:`~moezoo.convert.families.TextFamily` entry per text family.
    hf_config / hf_weights: ``config.json`` and state dicts <-> moezoo's, for the text families.
    hf_import / hf_export: ``moezoo.load`` of a text checkpoint, ``save_pretrained(format="hf")`` of an LM.
    llava / llava_import / llava_export: the same for LLaVA checkpoints, processor files included.
    export: ``model.save_pretrained(path, format="hf")``, one exporter per architecture.
    testing / llava_testing: tiny random transformers checkpoints for tests and benchmarks.

Example:
    >>> from moezoo.convert.hf_config import FAMILIES
    >>> sorted(FAMILIES)
    ['llama', 'mixtral', 'olmoe', 'qwen2', 'qwen2_moe', 'qwen3_moe']
"""
