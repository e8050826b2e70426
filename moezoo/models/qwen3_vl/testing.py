"""A tiny Qwen3-VL-MoE config for doctests, tests and benchmarks (seconds on a CPU)."""

from __future__ import annotations

from typing import Any

from moezoo.models.encoders.qwen3_vl import Qwen3VLVisionConfig
from moezoo.models.lm.config import LMConfig
from moezoo.models.qwen3_vl.config import Qwen3VLMoEConfig
from moezoo.moe import MoEConfig


def tiny_config(vocab_size: int = 96, **token_ids: Any) -> Qwen3VLMoEConfig:
    """Two LLM layers (the second sparse: 6 experts of width 24, top-2, renormalised), interleaved mRoPE over a 16-wide head
    (sections 4 + 2 + 2), a 2-block tower with patch 4, merge 2 and one deepstack merger after block 0.
    The special ids default to the last four of the vocabulary.

    Example:
        >>> cfg = tiny_config()
        >>> cfg.llm.mrope_section, cfg.image_token_id, cfg.llm.sparse_layers()
        ([4, 2, 2], 92, [1])
    """
    moe = MoEConfig(dim=32, expert_dim=24, num_experts=6, top_k=2, norm_topk_prob=True, aux_loss_coef=0.001)
    llm = LMConfig(vocab_size=vocab_size, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16, ffn_dim=48,
                   moe=moe, moe_layers=[1], qk_norm="head", rope_theta=5000.0, max_position_embeddings=512,
                   mrope_section=[4, 2, 2], mrope_interleaved=True, family="qwen3_moe", bos_token_id=None,
                   eos_token_id=2, pad_token_id=0)
    vision = Qwen3VLVisionConfig(depth=2, hidden_size=32, num_heads=4, intermediate_size=48, patch_size=4,
                                 temporal_patch_size=2, spatial_merge_size=2, out_hidden_size=32,
                                 num_position_embeddings=16, deepstack_visual_indexes=[0])
    ids = {"image_token_id": vocab_size - 4, "video_token_id": vocab_size - 3,
           "vision_start_token_id": vocab_size - 2, "vision_end_token_id": vocab_size - 1, **token_ids}
    return Qwen3VLMoEConfig(llm=llm, vision=vision, **ids)
