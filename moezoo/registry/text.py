"""Registered text LM architectures.

The reference architectures are data: the fields of their upstream ``config.json``
(linked above each), read by the same :func:`~moezoo.convert.hf_config.lm_config_from_hf`
that imports checkpoints, so a registered shape and a downloaded checkpoint can never
disagree. They build on the meta device without weights
(``create_model(name, device="meta")``); their tokenizers come with their checkpoints.
``moe_lm_tiny`` is the family's tiny test model, on the zoo's own tokenizer.
"""

from __future__ import annotations

from moezoo.convert.hf_config import lm_config_from_hf
from moezoo.models.lm.config import LMConfig
from moezoo.moe.config import MoEConfig
from moezoo.processing.tokenizer import ZOO_VOCAB_SIZE
from moezoo.registry.core import register_model

# https://huggingface.co/allenai/OLMoE-1B-7B-0924/blob/main/config.json
OLMOE_1B_7B = dict(model_type="olmoe", vocab_size=50304, hidden_size=2048, intermediate_size=1024,
                   num_hidden_layers=16, num_attention_heads=16, num_key_value_heads=16, num_experts=64,
                   num_experts_per_tok=8, max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-5,
                   norm_topk_prob=False, router_aux_loss_coef=0.01, clip_qkv=None, tie_word_embeddings=False,
                   pad_token_id=1, bos_token_id=None, eos_token_id=50279)
# https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
MIXTRAL_8X7B = dict(model_type="mixtral", vocab_size=32000, hidden_size=4096, intermediate_size=14336,
                    num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, num_local_experts=8,
                    num_experts_per_tok=2, max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-5,
                    router_aux_loss_coef=0.02, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
# https://huggingface.co/Qwen/Qwen3-30B-A3B/blob/main/config.json
QWEN3_30B_A3B = dict(model_type="qwen3_moe", vocab_size=151936, hidden_size=2048, intermediate_size=6144,
                     moe_intermediate_size=768, num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                     head_dim=128, num_experts=128, num_experts_per_tok=8, norm_topk_prob=True,
                     decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=40960, rope_theta=1e6,
                     rms_norm_eps=1e-6, router_aux_loss_coef=0.001, tie_word_embeddings=False,
                     bos_token_id=151643, eos_token_id=151645)
# https://huggingface.co/Qwen/Qwen1.5-MoE-A2.7B/blob/main/config.json
QWEN2_MOE_A2_7B = dict(model_type="qwen2_moe", vocab_size=151936, hidden_size=2048, intermediate_size=5632,
                       moe_intermediate_size=1408, shared_expert_intermediate_size=5632, num_hidden_layers=24,
                       num_attention_heads=16, num_key_value_heads=16, num_experts=60, num_experts_per_tok=4,
                       norm_topk_prob=False, decoder_sparse_step=1, mlp_only_layers=[],
                       max_position_embeddings=8192, rope_theta=1e6, rms_norm_eps=1e-6, router_aux_loss_coef=0.001,
                       tie_word_embeddings=False, bos_token_id=151643, eos_token_id=151643)


@register_model
def olmoe_1b_7b() -> LMConfig:
    """OLMoE-1B-7B (Muennighoff et al. 2024, arXiv 2409.02060): 64 experts, top-8, in every layer."""
    return lm_config_from_hf(OLMOE_1B_7B)


@register_model
def mixtral_8x7b() -> LMConfig:
    """Mixtral 8x7B (Jiang et al. 2024, arXiv 2401.04088): 8 experts, top-2."""
    return lm_config_from_hf(MIXTRAL_8X7B)


@register_model
def qwen3_moe_30b_a3b() -> LMConfig:
    """Qwen3-30B-A3B: 128 experts, top-8, per-head q/k-norm."""
    return lm_config_from_hf(QWEN3_30B_A3B)


@register_model
def qwen2_moe_a2_7b() -> LMConfig:
    """Qwen1.5-MoE-A2.7B: 60 experts, top-4, one gated shared expert."""
    return lm_config_from_hf(QWEN2_MOE_A2_7B)


@register_model
def moe_lm_tiny() -> LMConfig:
    """A 2-layer OLMoE-style MoE LM on the zoo tokenizer, for tests and CPU smoke runs."""
    return LMConfig(vocab_size=ZOO_VOCAB_SIZE, dim=64, num_layers=2, num_heads=4, ffn_dim=128,
                    moe=MoEConfig(dim=64, expert_dim=64, num_experts=8, top_k=2), max_position_embeddings=1024,
                    bos_token_id=1, eos_token_id=[2, 10], pad_token_id=0)  # <eos>, <|end|>
