"""Conversion between moezoo and transformers checkpoints (Llama, Qwen2, Mixtral,
OLMoE, Qwen2-MoE, Qwen3-MoE).

Modules:
    hf_config: ``config.json`` <-> :class:`~moezoo.models.lm.LMConfig`, per family.
    hf_weights: transformers state dicts <-> moezoo state dicts.
    hf_import: :func:`~moezoo.convert.hf_import.import_hf` (what ``moezoo.load`` calls on a transformers dir).
    hf_export / export: ``model.save_pretrained(path, format="hf")``.
    testing: tiny random transformers checkpoints for tests and benchmarks.

Example:
    >>> from moezoo.convert.hf_config import FAMILIES
    >>> sorted(FAMILIES)
    ['llama', 'mixtral', 'olmoe', 'qwen2', 'qwen2_moe', 'qwen3_moe']
"""
