"""Conversion between moezoo and transformers checkpoints (Llama, Qwen2, Mixtral,
OLMoE, Qwen2-MoE, Qwen3-MoE).

Example:
    >>> from moezoo.convert import FAMILIES
    >>> sorted(FAMILIES)
    ['llama', 'mixtral', 'olmoe', 'qwen2', 'qwen2_moe', 'qwen3_moe']
"""

from moezoo.convert.hf import export_hf, import_hf, read_hf_config
from moezoo.convert.hf_config import FAMILIES, family_problems, hf_config_from_lm, infer_family, lm_config_from_hf
from moezoo.convert.hf_weights import hf_to_moezoo, moezoo_to_hf, read_safetensors

__all__ = ["FAMILIES", "export_hf", "family_problems", "hf_config_from_lm", "hf_to_moezoo", "import_hf",
           "infer_family", "lm_config_from_hf", "moezoo_to_hf", "read_hf_config", "read_safetensors"]
