"""Registered MoE-LLaVA releases (Lin et al. 2024, arXiv 2401.15947; github.com/PKU-YuanGroup/MoE-LLaVA).

Each architecture is the ``config.json`` MoE-LLaVA's code writes for that release, read by the importer of the
format (:func:`moezoo.convert.moe_llava.multimodal_fields`), which is imported when the architecture is built,
so registering them costs nothing. No public copy of these ``config.json`` files was available here: each is
rebuilt from MoE-LLaVA's training scripts and code and its base LLM's public ``config.json``, and the source of
every value is written beside it. The hub entries of :mod:`moezoo.registry.hub_models` name these
architectures.

Example:
    >>> MOE_LLAVA_PHI2_2_7B_4E_384["mm_image_tower"], MOE_LLAVA_PHI2_2_7B_4E_384["moe"]["moe_layers_idx"][:3]
    ('google/siglip-so400m-patch14-384', [0, 2, 4])
"""

from __future__ import annotations

from typing import Any

from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.registry.core import register_model

# The base LLMs, as the MoE-LLaVA config class of each saves them.
# - StableLM: stabilityai/stablelm-2-1_6b (scripts/v1/stablelm/pretrain.sh, --model_name_or_path), saved under
#   StableLMEpochConfig's names (moellava/model/language_model/stablelm/configuration_stablelm_epoch.py): 24 layers,
#   d=2048, 32 heads, SwiGLU 5632, vocabulary 100352 (not resized: moellava/train/train.py sets pad = unk for
#   stablelm), as a public forward test of stablelm-2-1_6b against transformers also lists them.
STABLELM_2_1_6B = {
    "vocab_size": 100352, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 24,
    "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "silu", "rope_pct": 0.25, "rope_theta": 10000,
    "max_position_embeddings": 4096, "norm_eps": 1e-5, "use_qkv_bias": True, "tie_word_embeddings": False,
    "bos_token_id": 100257, "eos_token_id": 100257,
}
# - Phi-2: microsoft/phi-2 (scripts/v1/phi2/pretrain.sh, --model_name_or_path), saved under PhiConfig's names
#   (MoELLaVAPhiConfig subclasses moellava/model/language_model/phi/configuration_phi.py's PhiConfig, whose names
#   are transformers' own). The values are those of https://huggingface.co/microsoft/phi-2/blob/main/config.json
#   (transformers 4.37 format; public copies of it agree): 32 layers, d=2560, 32 heads (head_dim 80), 32 KV heads,
#   intermediate 10240, gelu_new, partial_rotary_factor 0.4 (32 of 80 channels rotate), layer_norm_eps 1e-5, rope
#   theta 10000, 2048 positions, vocabulary 51200, untied embeddings, bos = eos = 50256 (<|endoftext|>), dropouts
#   resid 0.1 / embd 0.0 / attention 0.0 (inactive at eval). qk_layernorm False is PhiConfig's default and phi-2's.
#   pad_token_id: train.py adds '<|extra_0|>' as phi's unk token (add_special_tokens, no embedding resize: the
#   vocabulary stays 51200) and stores pad = unk in model.config; phi-2's tokenizer holds 50295 tokens, so it is
#   50295. MoE-LLaVA's Phi has a bias-free lm_head (MoELLaVAPhiForCausalLM), unlike phi-2's own: the importer
#   sets that for every base.
PHI_2 = {
    "vocab_size": 51200, "hidden_size": 2560, "intermediate_size": 10240, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_act": "gelu_new", "partial_rotary_factor": 0.4,
    "rope_theta": 10000.0, "max_position_embeddings": 2048, "layer_norm_eps": 1e-5, "qk_layernorm": False,
    "resid_pdrop": 0.1, "embd_pdrop": 0.0, "attention_dropout": 0.0, "initializer_range": 0.02,
    "tie_word_embeddings": False, "bos_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50295,
}


def _image_fields(tower: str, hidden_size: int) -> dict[str, Any]:
    """The ``mm_*`` fields of scripts/v1/{stablelm,phi2}/finetune_moe.sh (the same in both), as llava_arch.py's
    initialize_vision_modules and train.py store them: the tower named, mm_hidden_size its width, layer -2,
    "patch" features (ModelArguments' default), mlp2x_gelu, no start/end or patch tokens, images padded to a
    square."""
    return {"mm_image_tower": tower, "mm_hidden_size": hidden_size, "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch", "image_projector_type": "mlp2x_gelu", "mm_use_im_start_end": False,
            "mm_use_im_patch_token": False, "image_aspect_ratio": "pad", "use_mm_proj": True}


def _moe(num_layers: int) -> dict[str, Any]:
    """The "moe" dict initialize_moe_modules stores (moellava/model/language_model/llava_*_moe.py) from the arguments
    of scripts/v1/{stablelm,phi2}/finetune_moe.sh (the same in both but for train_modules: moe_mode "sparse" = every
    other layer from 0, 4 experts, top-2, capacity_factor 1.5, use_residual False, router_aux_loss_coef 0.01) and
    train.py's ModelArguments defaults (eval_capacity_factor 2, min_capacity 0, ep_size 1)."""
    layers = list(range(num_layers))[::2]  # moe_mode == "sparse"
    return {"moe_enable": True, "moe_mode": "sparse", "moe_layers_idx": layers, "ep_size": 1, "top_k_experts": 2,
            "capacity_factor": 1.5, "eval_capacity_factor": 2.0, "min_capacity": 0, "use_residual": False,
            "router_aux_loss_coef": 0.01, "num_experts": [4] * len(layers)}


def _release(model_type: str, architecture: str, text: dict[str, Any], tower: str, width: int) -> dict[str, Any]:
    return {"model_type": model_type, "architectures": [architecture], **text, **_image_fields(tower, width),
            "moe": _moe(text["num_hidden_layers"])}


# The towers: the CLIP releases' scripts name openai/clip-vit-large-patch14-336 (width 1024, 576 patches of 14 px:
# 24 x 24); the -384 releases' tower is google/siglip-so400m-patch14-384 (width 1152, 27 x 27 = 729 patches, of
# which MoE-LLaVA's "patch" selection keeps 728: siglip_encoder.py drops the first token as if it were a CLS). No
# -384 script is published: docs/TRAIN.md says "For training on 384 resolution, we use
# google/siglip-so400m-patch14-384 as image_tower" (--image_tower, everything else as in the scripts), and
# multimodal_encoder/builder.py builds a SiglipVisionTower for a "google" tower name.
CLIP_336, SIGLIP_384 = ("openai/clip-vit-large-patch14-336", 1024), ("google/siglip-so400m-patch14-384", 1152)
_STABLELM = ("moe_llava_stablelm", "MoELLaVAStablelmForCausalLM", STABLELM_2_1_6B)
_PHI = ("moe_llava_phi", "MoELLaVAPhiForCausalLM", PHI_2)

# MoE-LLaVA-StableLM-1.6B-4e (https://huggingface.co/LanguageBind/MoE-LLaVA-StableLM-1.6B-4e), "MoE-LLaVA-1.6Bx4-Top2".
# The counts agree with the paper's (Table 1 and the README's model zoo: 2.9 B total and 2.0 B activated in the
# LLM, the tower left out): the LLM here has 2.89 B and 2.06 B of them.
MOE_LLAVA_STABLELM_1_6B_4E = _release(*_STABLELM, *CLIP_336)
# MoE-LLaVA-Phi2-2.7B-4e (https://huggingface.co/LanguageBind/MoE-LLaVA-Phi2-2.7B-4e), "MoE-LLaVA-2.7Bx4-Top2": the
# paper's 5.3 B total and 3.6 B activated in the LLM; here 5.30 B and 3.62 B.
MOE_LLAVA_PHI2_2_7B_4E = _release(*_PHI, *CLIP_336)
# The -384 releases (https://huggingface.co/LanguageBind/MoE-LLaVA-StableLM-1.6B-4e-384,
# https://huggingface.co/LanguageBind/MoE-LLaVA-Phi2-2.7B-4e-384): the same LLMs and MoE, the SigLIP tower. The
# README's model zoo gives them the same activated parameters (2.0 B, 3.6 B).
MOE_LLAVA_STABLELM_1_6B_4E_384 = _release(*_STABLELM, *SIGLIP_384)
MOE_LLAVA_PHI2_2_7B_4E_384 = _release(*_PHI, *SIGLIP_384)


def _config(release: dict[str, Any]) -> MultimodalConfig:
    """The release read by the importer; the ``<image>`` placeholder is the last row of the padded vocabulary (no
    tokenizer ever encodes it), as the importer puts it when the checkpoint's tokenizer cannot be read."""
    from moezoo.convert.moe_llava import multimodal_fields

    fields = multimodal_fields(release)
    return MultimodalConfig(**fields, image_token_id=fields["llm"].vocab_size - 1)


@register_model
def moe_llava_stablelm_1_6b_4e() -> MultimodalConfig:
    """MoE-LLaVA-1.6Bx4-Top2 (Lin et al. 2024, arXiv 2401.15947): CLIP-L/336 (layer -2, CLS dropped: 576 tokens),
    mlp2x_gelu and StableLM-2-1.6B with 4 experts (top-2, DeepSpeed's gate) in every other layer."""
    return _config(MOE_LLAVA_STABLELM_1_6B_4E)


@register_model
def moe_llava_phi2_2_7b_4e() -> MultimodalConfig:
    """MoE-LLaVA-2.7Bx4-Top2 (Lin et al. 2024, arXiv 2401.15947): CLIP-L/336 (layer -2, CLS dropped: 576 tokens),
    mlp2x_gelu and Phi-2 with 4 experts (top-2, DeepSpeed's gate) in every other layer."""
    return _config(MOE_LLAVA_PHI2_2_7B_4E)


@register_model
def moe_llava_stablelm_1_6b_4e_384() -> MultimodalConfig:
    """MoE-LLaVA-1.6Bx4-Top2-384: SigLIP-so400m/384 (layer -2, the first patch dropped as MoE-LLaVA drops it: 728
    tokens), mlp2x_gelu and StableLM-2-1.6B with 4 experts (top-2) in every other layer."""
    return _config(MOE_LLAVA_STABLELM_1_6B_4E_384)


@register_model
def moe_llava_phi2_2_7b_4e_384() -> MultimodalConfig:
    """MoE-LLaVA-2.7Bx4-Top2-384: SigLIP-so400m/384 (layer -2, the first patch dropped as MoE-LLaVA drops it: 728
    tokens), mlp2x_gelu and Phi-2 with 4 experts (top-2) in every other layer."""
    return _config(MOE_LLAVA_PHI2_2_7B_4E_384)
