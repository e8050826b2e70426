"""Registered multimodal architectures.

* ``mm_tiny_*``: one tiny architecture per encoder kind (timm, open_clip, transformers
  CLIP and SigLIP, a from-scratch CNN, Whisper audio, video frames), on a 2-layer MoE LLM
  with the zoo tokenizer: what tests and CPU smoke runs build.
* ``film_cnn_moe_small``: the quickstart's model. A small CNN trained from scratch whose
  features are FiLM-modulated by the prompt (an attention pool of its embeddings), a
  ``mlp2x_gelu`` connector, and a 2-layer MoE LLM that attends bidirectionally over each
  image's tokens. The probes in ../shared/DESIGN.md found that on 64x64 shapes-VQA only a
  trunk conditioned on the question learns in minutes (0.83 in 6 minutes, against ~0.5
  for unconditioned trunks), and that a prefix mask over the image tokens learns where a
  causal one stalls.
* Real-size reference architectures that build on the meta device without weights:
  LLaVA-1.5-7B (the llava-hf format), and MoE-LLaVA-style pairings of a SigLIP / CLIP tower
  with Qwen3-MoE and OLMoE LLMs. Their towers are the upstream ``config.json`` fields
  (:mod:`moezoo.convert.towers`); their LLMs come from :mod:`moezoo.registry.text`.
* The released MoE VLMs of the hub entries (:mod:`moezoo.registry.hub_models`): Qwen3-VL-30B-A3B, the
  ``config.json`` of the release read by its family's importer (:mod:`moezoo.convert.qwen3_vl`), imported
  when the architecture is built, so registering it costs nothing. The MoE-LLaVA releases are in
  :mod:`moezoo.registry.moe_llava`.
"""

from __future__ import annotations

from moezoo.convert.hf_config import lm_config_from_hf
from moezoo.convert.towers import CLIP_L14_336, SIGLIP_SO400M_384
from moezoo.models.encoders.video import VideoConfig
from moezoo.models.lm.config import LMConfig
from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.moe.config import MoEConfig
from moezoo.processing.tokenizer import ZOO_VOCAB_SIZE
from moezoo.registry.core import register_model
from moezoo.registry.text import OLMOE_1B_7B, QWEN3_30B_A3B

# https://huggingface.co/llava-hf/llava-1.5-7b-hf/blob/main/config.json (text_config: Vicuna-7B v1.5)
VICUNA_7B = dict(model_type="llama", vocab_size=32064, hidden_size=4096, intermediate_size=11008,
                 num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096,
                 rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2,
                 pad_token_id=32001)


def tiny_llm(**overrides) -> LMConfig:
    """The 2-layer MoE LLM of the tiny architectures (zoo tokenizer; ``<|end|>`` ends a turn)."""
    config = LMConfig(vocab_size=ZOO_VOCAB_SIZE, dim=64, num_layers=2, num_heads=4, ffn_dim=128,
                      moe=MoEConfig(dim=64, expert_dim=64, num_experts=4, top_k=2), max_position_embeddings=512,
                      bos_token_id=1, eos_token_id=[2, 10], pad_token_id=0)
    return config.replace(**overrides)


TINY_CNN = dict(kind="cnn", channels=[8, 16, 16, 32], image_size=32, film=False, norm="group")


def _tiny_hf_tower(model_type: str) -> dict:
    return dict(model_type=model_type, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, image_size=32, patch_size=8)


@register_model
def mm_tiny_cnn() -> MultimodalConfig:
    """A from-scratch CNN (FiLM-conditioned on the prompt) + MLP connector: 4 image tokens."""
    return MultimodalConfig(llm=tiny_llm(), vision={**TINY_CNN, "film": True})


@register_model
def mm_tiny_timm() -> MultimodalConfig:
    """timm's ``test_convnext`` (third stage, 16 tokens at 64 px) + MLP connector."""
    return MultimodalConfig(llm=tiny_llm(), vision=dict(kind="timm", model_name="test_convnext", feature_index=2,
                                                        image_size=64))


@register_model
def mm_tiny_open_clip() -> MultimodalConfig:
    """A 2-block open_clip ViT (penultimate block, 16 patch tokens) + MLP connector."""
    tower = dict(embed_dim=16, vision_cfg=dict(image_size=32, patch_size=8, layers=2, width=32, head_width=8))
    return MultimodalConfig(llm=tiny_llm(), vision=dict(kind="open_clip", model_cfg=tower, feature_layer=-2))


@register_model
def mm_tiny_clip() -> MultimodalConfig:
    """transformers' CLIP vision tower, LLaVA's feature selection (layer -2, CLS dropped) + MLP."""
    return MultimodalConfig(llm=tiny_llm(), vision=dict(kind="hf_vision", vision_config=_tiny_hf_tower(
        "clip_vision_model"), feature_layer=-2, select_strategy="default"))


@register_model
def mm_tiny_siglip() -> MultimodalConfig:
    """transformers' SigLIP vision tower (no CLS: every token kept) + MLP connector."""
    return MultimodalConfig(llm=tiny_llm(), vision=dict(kind="hf_vision", vision_config=_tiny_hf_tower(
        "siglip_vision_model"), feature_layer=-2, select_strategy="full"))


@register_model
def mm_tiny_whisper() -> MultimodalConfig:
    """Whisper's encoder on 1-second clips (50 tokens) + an 8-query resampler (Uni-MoE's audio path)."""
    whisper = dict(num_mel_bins=16, d_model=32, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=64,
                   max_source_positions=50, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64)
    return MultimodalConfig(llm=tiny_llm(), audio=dict(kind="whisper", whisper_config=whisper),
                            audio_connector=dict(kind="resampler", num_queries=8, num_layers=1, num_heads=4))


@register_model
def mm_tiny_video() -> MultimodalConfig:
    """Images and 4-frame videos through one tiny CNN, frames pooled in time (Video-LLaVA's sharing)."""
    return MultimodalConfig(llm=tiny_llm(), vision=TINY_CNN, video=VideoConfig(num_frames=4, mode="pool"))


def quickstart_llm() -> LMConfig:
    """The quickstart's LLM: 2 layers, d=128, an MoE FFN of 8 experts (top-2) in each, zoo tokenizer."""
    return LMConfig(vocab_size=ZOO_VOCAB_SIZE, dim=128, num_layers=2, num_heads=4, ffn_dim=256,
                    moe=MoEConfig(dim=128, expert_dim=128, num_experts=8, top_k=2), max_position_embeddings=256,
                    bos_token_id=1, eos_token_id=[2, 10], pad_token_id=0)


QUICKSTART_CNN = dict(kind="cnn", channels=[32, 64, 128, 128], image_size=64, film=True, film_stages=[1, 2, 3, 4])


@register_model
def film_cnn_moe_small() -> MultimodalConfig:
    """The quickstart's model: FiLM CNN (16 tokens at 64 px) -> MLP -> 2-layer MoE LLM (8 experts, top-2).

    The CNN's four stages are FiLM-modulated by an attention pool of the prompt. At equal steps a
    4-layer LLM learned no faster here, and a step cost 1.7x as much (README, the quickstart's
    table of what was tried).
    """
    return MultimodalConfig(llm=quickstart_llm(), vision=QUICKSTART_CNN, modality_attention="bidirectional")


@register_model
def llava_1_5_7b() -> MultimodalConfig:
    """LLaVA-1.5-7B (Liu et al. 2023, arXiv 2310.03744): CLIP-L/336 (layer -2, CLS dropped), mlp2x_gelu, Vicuna-7B.

    https://huggingface.co/llava-hf/llava-1.5-7b-hf/blob/main/config.json
    """
    return MultimodalConfig(llm=lm_config_from_hf(VICUNA_7B), image_token_id=32000,
                            vision=dict(kind="hf_vision", vision_config=CLIP_L14_336, feature_layer=-2))


@register_model
def moe_llava_siglip_qwen3_30b_a3b() -> MultimodalConfig:
    """SigLIP-so400m/384 (all 729 tokens) + mlp2x_gelu + Qwen3-30B-A3B: an MoE-LLaVA of today's parts.

    ``<|image_pad|>`` (151655) is the image placeholder of the Qwen tokenizers.
    """
    return MultimodalConfig(llm=lm_config_from_hf(QWEN3_30B_A3B), image_token_id=151655,
                            vision=dict(kind="hf_vision", vision_config=SIGLIP_SO400M_384, feature_layer=-2,
                                        select_strategy="full"))


@register_model
def moe_llava_clip_olmoe_1b_7b() -> MultimodalConfig:
    """CLIP-L/336 + mlp2x_gelu + OLMoE-1B-7B (64 experts, top-8), as LibMoE pairs a CLIP tower with an MoE LLM.

    The image placeholder is the last id of OLMoE's padded vocabulary (unused by its tokenizer).
    """
    return MultimodalConfig(llm=lm_config_from_hf(OLMOE_1B_7B), image_token_id=50303,
                            vision=dict(kind="hf_vision", vision_config=CLIP_L14_336, feature_layer=-2))


@register_model
def uni_moe_tiny_image_audio() -> MultimodalConfig:
    """Images and audio into one MoE LLM, Uni-MoE's layout (Li et al. 2024, arXiv 2405.11273) at quickstart size.

    The LLM and the FiLM CNN image path are :func:`film_cnn_moe_small`'s (16 image tokens at 64 px);
    audio goes through a 2-layer Whisper-style encoder over 1-second clips (32 mel bins, 50 tokens)
    and LLaVA's ``mlp2x_gelu`` connector, all 50 tokens kept. Uni-MoE compresses audio with learned
    queries; here they lost what the questions ask: trained on tones-qa alone (400 steps, batch 64,
    AdamW 1e-3, one thread, 2026-12-05), the instruction-aware resampler (16 queries) reached tones_qa
    0.547 (counting beeps 0.95; pitch, duration and pitch level at their priors) and ``mlp2x_gelu``
    0.970 (each type >= 0.93). Set ``audio_connector`` to ``{"kind": "instruct", ...}`` for the resampler.
    """
    whisper = dict(num_mel_bins=32, d_model=64, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=128,
                   max_source_positions=50, decoder_layers=1, decoder_attention_heads=4, decoder_ffn_dim=64)
    return MultimodalConfig(llm=quickstart_llm(), vision=QUICKSTART_CNN,
                            audio=dict(kind="whisper", whisper_config=whisper),
                            audio_connector=dict(kind="mlp2x_gelu"),
                            modality_attention="bidirectional")


# https://huggingface.co/Qwen/Qwen3-VL-30B-A3B-Instruct/blob/main/config.json, the fields the importer reads. Public
# copies agree: a parser test that transcribes the release's config.json (text and vision configs as here), and
# run logs at the pinned snapshot 9c4b90e1 ("H=2048; 48 layers; 32 Q/4 KV heads; head dimension 128; 128 routed
# experts; top-8; no shared expert; MoE intermediate 768"). transformers' Qwen3VLMoeConfig builds the same shapes:
# 31,070,754,032 parameters, equal to moezoo's count (tests/hub/test_hub_models.py).
QWEN3_VL_30B_A3B = {
    "model_type": "qwen3_vl_moe", "architectures": ["Qwen3VLMoeForConditionalGeneration"], "tie_word_embeddings": False,
    "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
    "text_config": {
        "model_type": "qwen3_vl_moe_text", "vocab_size": 151936, "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_hidden_layers": 48, "num_attention_heads": 32, "num_key_value_heads": 4,
        "head_dim": 128, "num_experts": 128, "num_experts_per_tok": 8, "norm_topk_prob": True, "decoder_sparse_step": 1,
        "mlp_only_layers": [], "attention_bias": False, "max_position_embeddings": 262144, "rms_norm_eps": 1e-6,
        "rope_theta": 5000000,
        "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        "bos_token_id": 151643, "eos_token_id": 151645},
    "vision_config": {
        "model_type": "qwen3_vl_moe", "depth": 27, "hidden_size": 1152, "intermediate_size": 4304, "num_heads": 16,
        "hidden_act": "gelu_pytorch_tanh", "in_channels": 3, "patch_size": 16, "temporal_patch_size": 2,
        "spatial_merge_size": 2, "num_position_embeddings": 2304, "out_hidden_size": 2048,
        "deepstack_visual_indexes": [8, 16, 24]},
}


@register_model
def qwen3_vl_moe_30b_a3b():
    """Qwen3-VL-30B-A3B (Qwen3-VL technical report, arXiv 2511.21631): the 27-block Qwen3-VL tower (deepstack after
    blocks 8, 16, 24) before a 48-layer Qwen3-MoE LLM with 128 experts, top-8, and interleaved multimodal RoPE."""
    from moezoo.convert.qwen3_vl import config_from_hf

    return config_from_hf(QWEN3_VL_30B_A3B)
