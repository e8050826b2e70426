"""The Qwen3-VL vision tower: native-resolution patches, 2-D rotary, merged tokens and deepstack features.

Follows transformers 5.24's ``Qwen3VLMoeVisionModel`` (``models/qwen3_vl_moe/modeling_qwen3_vl_moe.py``; the
tower of Qwen3-VL and Qwen3-VL-MoE is the same module, ``Qwen3VLVisionModel`` in ``models/qwen3_vl``) and its
grid helpers (``vision_utils.py``), from the Qwen3-VL technical report (Qwen team 2025, arXiv 2511.21631):

* each image (or each ``temporal_patch_size`` frames of a video) is cut into ``patch_size`` squares at its own
  resolution; the processor flattens them as ``(N, C * T * P * P)`` rows in *merge-window order* (the
  ``spatial_merge_size``² patches that become one LLM token are consecutive) and gives ``grid_thw``;
* a Conv3d with kernel = stride embeds each patch; a learned ``sqrt(num_position_embeddings)``² grid of
  absolute position embeddings is bilinearly resampled (``align_corners=True``) to each image's ``(h, w)``;
* the blocks (pre-norm LayerNorm, attention with a 2-D rotary over the patch's ``(row, col)``, MLP) attend
  within one frame of one image only (transformers' ``cu_seqlens``): images never see each other;
* the patch merger (LayerNorm, concatenation of each merge window, 2-layer GELU MLP) turns every
  ``spatial_merge_size``² patches into one token of ``out_hidden_size`` (the LLM's width); the *deepstack*
  mergers do the same to the hidden states after the blocks ``deepstack_visual_indexes`` (LayerNorm after the
  concatenation), and the LLM adds those to its hidden states at the visual tokens in its first layers.

Module and parameter names equal transformers' (``patch_embed.proj``, ``pos_embed``, ``blocks.N.attn.qkv``,
``merger.linear_fc1``, ``deepstack_merger_list.K.norm``, ...), so a checkpoint's ``model.visual.<name>`` is this
tower's ``<name>``: :func:`hf_state_dict_key` / :func:`from_hf_state_dict_key` strip and add the prefix.
"""

from moezoo.models.encoders.qwen3_vl import config, grid, tower
from moezoo.models.encoders.qwen3_vl.config import (
    HF_PREFIX,
    Qwen3VLVisionConfig,
    from_hf_state_dict_key,
    hf_state_dict_key,
)
from moezoo.models.encoders.qwen3_vl.grid import (
    interpolation_taps,
    merge_order_positions,
    merged_token_counts,
)
from moezoo.models.encoders.qwen3_vl.tower import (
    Qwen3VLVisionEncoder,
    Qwen3VLVisionOutput,
)

__all__ = ["HF_PREFIX", "Qwen3VLVisionConfig", "Qwen3VLVisionEncoder", "Qwen3VLVisionOutput", "config",
           "from_hf_state_dict_key", "grid", "hf_state_dict_key", "interpolation_taps", "merge_order_positions",
           "merged_token_counts", "tower"]
