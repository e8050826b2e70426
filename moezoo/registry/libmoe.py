"""LibMoE's released Phi-3.5 + SigLIP router family (Nguyen et al. 2024, arXiv 2411.00918), one architecture per router.

``Fsoft-AIC/Phi3.5-Siglip-MoE`` holds one sub-folder per router (LibMoE README, "Checkpoints", row "VIT 665K"):
``sft_full/smoe`` (SMoE-R), ``sft_full/smoe_cosinegating`` (Cosine-R), ``sft_full/hyperrouter`` (Hyper-R) and
``sft_full/smoe_perturbed`` (Perturbed Cosine-R); the table's Sigmoid-R link points to another repo. Each is
Phi-3.5-mini-instruct (dense) fed by SigLIP-so400m/14 at 224 px whose 27 MLPs are 4 experts (top-2), with S2
features at scales (1, 3) and a 4-expert (top-2) ``moe`` projector. The architectures here are each release's
``config.json`` read by moezoo's LibMoE importer (:func:`moezoo.convert.libmoe.read_facts`,
:func:`moezoo.convert.libmoe_import.multimodal_fields`), so they are what ``moezoo.load`` builds for the release,
without weights. As there, the tower has 26 layers: LibMoE's features are the input of the last one, whose weights
never reach the output and are not imported (:mod:`moezoo.convert.libmoe`).

Example:
    >>> from moezoo.registry import model_config
    >>> config = model_config("libmoe_phi3_5_siglip_cosine")
    >>> config.vision.moe.router, config.vision.moe.router_convention, config.image_connector.num_experts
    ('cosine', 'libmoe_v1', 4)
"""

from __future__ import annotations

import dataclasses
from typing import Any

from moezoo.models.multimodal.config import MultimodalConfig
from moezoo.registry.core import register_model

# https://huggingface.co/microsoft/Phi-3.5-mini-instruct/blob/main/config.json, the fields a Phi3Config keeps. No copy
# is stored here or in transformers; three public copies agree value for value (two transcribed config dicts of the
# release, one of them a model-zoo test builder citing this URL, and a training script passing the same 48 + 48 RoPE
# factors), and transformers' Phi3ForCausalLM built from it has Phi-3.5-mini's 3,821,079,552 parameters. Only the
# RoPE factors differ from Phi-3-mini-128k's; the parameter count does not depend on them.
PHI3_5_MINI_LONG_FACTOR = [
    1.0800000429153442, 1.1100000143051147, 1.1399999856948853, 1.340000033378601, 1.5899999141693115,
    1.600000023841858, 1.6200000047683716, 2.620000123977661, 3.2300000190734863, 3.2300000190734863,
    4.789999961853027, 7.400000095367432, 7.700000286102295, 9.09000015258789, 12.199999809265137,
    17.670000076293945, 24.46000099182129, 28.57000160217285, 30.420001983642578, 30.840002059936523,
    32.590003967285156, 32.93000411987305, 42.320003509521484, 44.96000289916992, 50.340003967285156,
    50.45000457763672, 57.55000305175781, 57.93000411987305, 58.21000289916992, 60.1400032043457,
    62.61000442504883, 62.62000274658203, 62.71000289916992, 63.1400032043457, 63.1400032043457,
    63.77000427246094, 63.93000411987305, 63.96000289916992, 63.970001220703125, 64.02999877929688,
    64.06999969482422, 64.08000183105469, 64.12000274658203, 64.41000366210938, 64.4800033569336,
    64.51000213623047, 64.52999877929688, 64.83999633789062]
PHI3_5_MINI_SHORT_FACTOR = [
    1.0, 1.0199999809265137, 1.0299999713897705, 1.0299999713897705, 1.0499999523162842, 1.0499999523162842,
    1.0499999523162842, 1.0499999523162842, 1.0499999523162842, 1.0699999332427979, 1.0999999046325684,
    1.1099998950958252, 1.1599998474121094, 1.1599998474121094, 1.1699998378753662, 1.2899998426437378,
    1.339999794960022, 1.679999828338623, 1.7899998426437378, 1.8199998140335083, 1.8499997854232788,
    1.8799997568130493, 1.9099997282028198, 1.9399996995925903, 1.9899996519088745, 2.0199997425079346,
    2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346, 2.0199997425079346,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914,
    2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0299997329711914, 2.0799996852874756,
    2.0899996757507324, 2.189999580383301, 2.2199995517730713, 2.5899994373321533, 2.729999542236328,
    2.749999523162842, 2.8399994373321533]
PHI3_5_MINI_INSTRUCT = {
    "model_type": "phi3", "architectures": ["Phi3ForCausalLM"], "vocab_size": 32064, "hidden_size": 3072,
    "intermediate_size": 8192, "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
    "hidden_act": "silu", "max_position_embeddings": 131072, "original_max_position_embeddings": 4096,
    "rope_theta": 10000.0, "rope_scaling": {"type": "longrope", "long_factor": PHI3_5_MINI_LONG_FACTOR,
                                            "short_factor": PHI3_5_MINI_SHORT_FACTOR},
    "sliding_window": 262144, "rms_norm_eps": 1e-5, "initializer_range": 0.02, "attention_dropout": 0.0,
    "embd_pdrop": 0.0, "resid_pdrop": 0.0, "tie_word_embeddings": False, "use_cache": True,
    "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000, "torch_dtype": "bfloat16",
}
# https://huggingface.co/microsoft/Phi-3.5-mini-instruct/blob/main/generation_config.json: generation stops at <|end|>
# (32007), <|assistant|> (32001) or <|endoftext|> (32000). Each LibMoE stage's from_pretrained loads it as the model's
# generation_config and save_pretrained writes it back (with do_sample=True, train.py), so the releases most likely
# carry it; the importer reads it as moezoo.load would.
PHI3_5_MINI_GENERATION = {"bos_token_id": 1, "eos_token_id": [32007, 32001, 32000], "pad_token_id": 32000}
# The fields LibMoE v1.1 (github.com/Fsoft-AIC/LibMoE at commit 766ddae) adds to it for the sft_full releases. No
# public copy of these config.json files was found, so this is what its code writes (transformers 4.43.0, its pin):
# - scripts/train/phi35mini/siglip/sft.sh: --vision_tower google/siglip-so400m-patch14-224 --scales 1,3
#   --mm_projector_type moe --mlp_smoe true --clip_smoe true --moe_name $TYPE_MOE --num_experts 4 --num_selected 2
#   --sparse_upcycling true --balance_loss_coef 0.01 --router_z_loss_coef 0.001 --mm_vision_select_layer -2
#   --mm_use_im_start_end False --mm_use_im_patch_token False --image_aspect_ratio pad --model_max_length 2048,
#   on the pft stage's Phi-3.5 (pft.sh: --model_name_or_path microsoft/Phi-3.5-mini-instruct --version phi35);
# - moe_model/train/train.py ModelArguments defaults for what sft.sh leaves out: num_layers 3, dropout False,
#   router_loss_coef 0.01, mm_vision_select_feature "patch", mm_patch_merge_type "flat", topk_max 2, topk_min 1;
#   train() writes training, balance_loss_coef, router_z_loss_coef, local_rank (0 on the saving process),
#   image_aspect_ratio, tokenizer_padding_side ("right"), tokenizer_model_max_length, tune_mm_mlp_adapter,
#   freeze_mm_mlp_adapter, mm_use_im_start_end, mm_projector_lr (None), mm_use_im_patch_token, and use_cache True
#   before saving; the vocabulary is not resized (version phi35: pad = unk, no image tokens added);
# - moe_model/model/llava_arch.py initialize_vision_modules copies the model arguments (mm_vision_tower, scales as
#   ints, use_mm_proj, mm_projector_type, mm_hidden_size 1152 = SigLIP's width, ...); v1.1 writes no `version`
#   (read_facts then takes "phi35", the template sft.sh trains with); LlavaPhiConfig sets model_type "llava_phi".
# Left out: _name_or_path (a path on LibMoE's cluster) and transformers_version, which nothing reads.
# Why v1.1: the sft_full links are already in v1.1's README (commit dated 2024-12-30; its release notes list
# "Publicly available checkpoints" on 2024-11-01), nine months before v2.0 (2025-09-30), whose script (at HEAD:
# vision_language_model/scripts/train/phi35mini/siglip/sft.sh) trains 6 experts, top-3 (--num_experts 6
# --num_selecte 3, argparse's prefix of num_selected), with v2.0's router layouts; v2.1 (2025-11-25) dropped the
# links. (v1.1's sft.sh reads llava_v1_5_mix665k_half.json where the folder says "full": the data, not the shapes.)
# The cosine and perturbed routers are therefore v1.1's biased `gate` (router_convention "libmoe_v1", what
# moezoo.convert.libmoe.detect_convention finds in such a checkpoint); smoe and hyperrouter have the same keys in v1
# and v2 and are read as v2 ("libmoe").
LIBMOE_V1_1_SFT = {
    "model_type": "llava_phi", "architectures": ["LlavaPhiForCausalLM"],
    "mm_vision_tower": "google/siglip-so400m-patch14-224", "scales": [1, 3], "use_mm_proj": True,
    "mm_projector_type": "moe", "mm_hidden_size": 1152, "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch", "mm_patch_merge_type": "flat", "num_experts": 4, "num_selected": 2,
    "num_layers": 3, "dropout": False, "mlp_smoe": True, "clip_smoe": True, "topk_max": 2, "topk_min": 1,
    "sparse_upcycling": True, "router_loss_coef": 0.01, "training": True, "balance_loss_coef": 0.01,
    "router_z_loss_coef": 0.001, "local_rank": 0, "image_aspect_ratio": "pad", "tokenizer_padding_side": "right",
    "tokenizer_model_max_length": 2048, "tune_mm_mlp_adapter": False, "freeze_mm_mlp_adapter": False,
    "mm_use_im_start_end": False, "mm_projector_lr": None, "mm_use_im_patch_token": False,
}
REPO = "Fsoft-AIC/Phi3.5-Siglip-MoE"
# The `<image>` id the importer gives a release whose tokenizer it reads: Phi-3.5-mini's tokenizer has 32,011 tokens
# (32,000 SentencePiece pieces, then <|endoftext|> 32000 ... <|user|> 32010), so the added `<image>` is 32011, a spare
# row of the 32,064-row embedding (moezoo.convert.llava.add_image_token).
IMAGE_TOKEN_ID = 32011


def libmoe_config_json(moe_name: str) -> dict[str, Any]:
    """The ``config.json`` LibMoE v1.1 writes for ``Fsoft-AIC/Phi3.5-Siglip-MoE/sft_full/<moe_name>``.

    Example:
        >>> cfg = libmoe_config_json("smoe_perturbed")
        >>> cfg["model_type"], cfg["moe_name"], cfg["num_experts"], cfg["num_selected"], cfg["scales"]
        ('llava_phi', 'smoe_perturbed', 4, 2, [1, 3])
    """
    return {**PHI3_5_MINI_INSTRUCT, **LIBMOE_V1_1_SFT, "moe_name": moe_name}


def libmoe_phi3_5_siglip(moe_name: str) -> MultimodalConfig:
    """The architecture of the ``sft_full/<moe_name>`` release: its ``config.json`` read by the LibMoE importer.

    HyperRouter's ``topk_max=2`` / ``topk_min=1`` (train.py's defaults; sft.sh sets neither) are its training
    schedule, k grown from 1 to 2 (v1.1 hyperrouter.py ``set_num_current_selected``); its eval forward routes with
    ``num_selected=2`` (``forward``: ``topk = self.num_selected`` when no gradient is taken), which is the fixed k
    the importer reads (:func:`moezoo.convert.libmoe.read_facts`).
    """
    from moezoo.convert.libmoe import V1_NAMES, read_facts
    from moezoo.convert.libmoe_import import multimodal_fields

    cfg = libmoe_config_json(moe_name)
    source = f"{REPO}/sft_full/{moe_name}/config.json"
    facts = read_facts(cfg, source)
    facts = dataclasses.replace(facts, convention="libmoe_v1" if moe_name in V1_NAMES.values() else "libmoe")
    fields = multimodal_fields(cfg, facts, source, PHI3_5_MINI_GENERATION)
    return MultimodalConfig(**fields, image_token_id=IMAGE_TOKEN_ID)


@register_model
def libmoe_phi3_5_siglip_smoe() -> MultimodalConfig:
    """LibMoE SMoE-R (``smoe``): a softmax top-2 gate over 4 experts in each SigLIP MLP and in the projector."""
    return libmoe_phi3_5_siglip("smoe")


@register_model
def libmoe_phi3_5_siglip_cosine() -> MultimodalConfig:
    """LibMoE Cosine-R (``smoe_cosinegating``, X-MoE's cosine router in v1.1's form: a biased full-width gate)."""
    return libmoe_phi3_5_siglip("smoe_cosinegating")


@register_model
def libmoe_phi3_5_siglip_hyper() -> MultimodalConfig:
    """LibMoE Hyper-R (``hyperrouter``): the gate generated by a fixed hypernetwork from a learned embedding."""
    return libmoe_phi3_5_siglip("hyperrouter")


@register_model
def libmoe_phi3_5_siglip_perturbed() -> MultimodalConfig:
    """LibMoE Perturbed Cosine-R (``smoe_perturbed``): the cosine router with 0.1 added to both norms (v1.1)."""
    return libmoe_phi3_5_siglip("smoe_perturbed")
