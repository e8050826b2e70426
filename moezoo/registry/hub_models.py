"""The hub entries: real MoE models (and an upcycling base) too big to ship, at pinned commits.

``moezoo.load(NAME)`` fetches each through :func:`moezoo.hub.fetch_pretrained`: the repo's
safetensors, JSON and tokenizer files at the pinned commit, checked once against the hub's
digests (so ``sha256`` is ``None`` here: it is recorded from the hub's metadata at download),
then imported as a transformers checkpoint of its family. Offline, a snapshot already in the
hub cache is used; otherwise the error prints ``python -m moezoo.hub REPO --revision COMMIT``.

Names are ``ARCH.TAG`` with the registered reference architecture (:mod:`moezoo.registry.text`,
:mod:`moezoo.registry.multimodal`) and a tag for the release: Mixtral ``v0_1``, OLMoE ``0924``
(its release date, as allenai names it), Qwen1.5-MoE ``qwen1_5`` (``qwen2_moe`` is its
transformers family), Qwen3-30B-A3B ``2504`` (the April 2025 post-trained release; ``-Base`` or
``-Instruct-2507`` would take their own tags), LLaVA-1.5 ``hf`` (the llava-hf conversion),
Qwen3-VL-30B-A3B ``instruct`` (``-Thinking`` would take its own tag), the MoE-LLaVA releases
``languagebind`` (the organisation that released them; each ``-384`` release has a SigLIP tower, so
its own architecture), LibMoE's ``fsoft`` (FPT Software AI Center's; one architecture per router).

Parameter counts are those of the registered architecture (``moezoo info ARCH``; a test checks
they agree); active counts take each token's top-k experts plus everything outside the routed
experts. Download sizes are exact where the shard sizes are recorded (OLMoE) and otherwise
``params_total`` x 2 bytes (``architecture["weights_dtype"]``, see :mod:`moezoo.hub.memory`).

The pinned commits are ones public projects pin or cache these repos at (snapshot paths and
pinned config links found in several independent repositories; MoE-LLaVA-StableLM-1.6B-4e's in one,
as its comment says); none was made up. The releases no public source records a commit of follow
their ``main`` branch instead, and the first fetch locks the commit it gets (:mod:`moezoo.hub.lock`):
MoE-LLaVA-Phi2-2.7B-4e and the ``-384`` releases (:data:`MOE_LLAVA_ENTRIES`), and LibMoE's Phi-3.5 +
SigLIP router family (:data:`LIBMOE_ENTRIES`, ``Fsoft-AIC/Phi3.5-Siglip-MoE``, one ``subfolder`` per router).

``moezoo info NAME`` prints each entry's download size, the memory its weights need, whether a GPU
is needed in practice (:func:`moezoo.hub.gpu_need`) and whether the weights fit this machine.
"""

from __future__ import annotations

from moezoo.registry.pretrained import PretrainedCfg, PretrainedFile, register_pretrained

_CHECKPOINT = (PretrainedFile("config.json"), PretrainedFile("model.safetensors.index.json"))

HUB_ENTRIES = (
    # https://huggingface.co/mistralai/Mixtral-8x7B-v0.1 ; 19 bf16 shards, ~93.4 GB.
    PretrainedCfg(
        name="mixtral_8x7b.v0_1", source="hf", location="mistralai/Mixtral-8x7B-v0.1",
        revision="fc7ac94680e38d7348cfa806e51218e6273104b0",
        files=_CHECKPOINT + (PretrainedFile("tokenizer.json"),),
        license="apache-2.0", modalities=("text",),
        params_total=46_702_792_704, params_active=12_879_925_248,
        architecture={"num_experts": 8, "top_k": 2, "router": "softmax", "weights_dtype": "bfloat16"},
        description="Mixtral 8x7B base (Jiang et al. 2024): 8 experts, top-2, in all 32 layers"),
    # https://huggingface.co/allenai/OLMoE-1B-7B-0924 ; the shard sizes are those of this commit.
    PretrainedCfg(
        name="olmoe_1b_7b.0924", source="hf", location="allenai/OLMoE-1B-7B-0924",
        revision="6d84c48581ece794365f2b8e9cfb043c68ade9c5",
        files=_CHECKPOINT + (PretrainedFile("tokenizer.json"),
                             PretrainedFile("model-00001-of-00003.safetensors", size=4_997_744_872),
                             PretrainedFile("model-00002-of-00003.safetensors", size=4_997_235_176),
                             PretrainedFile("model-00003-of-00003.safetensors", size=3_843_741_912)),
        license="apache-2.0", modalities=("text",),
        params_total=6_919_161_856, params_active=1_282_017_280,
        architecture={"num_experts": 64, "top_k": 8, "router": "softmax", "weights_dtype": "bfloat16"},
        description="OLMoE-1B-7B (Muennighoff et al. 2024), September 2024 release: 64 experts, top-8"),
    # https://huggingface.co/Qwen/Qwen1.5-MoE-A2.7B ; licence: Tongyi Qianwen (the repo's LICENSE).
    PretrainedCfg(
        name="qwen2_moe_a2_7b.qwen1_5", source="hf", location="Qwen/Qwen1.5-MoE-A2.7B",
        revision="1a758c50ecb6350748b9ce0a99d2352fd9fc11c9",
        files=_CHECKPOINT + (PretrainedFile("tokenizer.json"),),
        license="other (tongyi-qianwen)", modalities=("text",),
        params_total=14_315_784_192, params_active=2_689_173_504,
        architecture={"num_experts": 60, "top_k": 4, "num_shared_experts": 1, "router": "softmax",
                      "weights_dtype": "bfloat16"},
        description="Qwen1.5-MoE-A2.7B base: 60 experts, top-4, plus one gated shared expert"),
    # https://huggingface.co/Qwen/Qwen3-30B-A3B ; 16 bf16 shards, ~61 GB.
    PretrainedCfg(
        name="qwen3_moe_30b_a3b.2504", source="hf", location="Qwen/Qwen3-30B-A3B",
        revision="ad44e777bcd18fa416d9da3bd8f70d33ebb85d39",
        files=_CHECKPOINT + (PretrainedFile("tokenizer.json"),),
        license="apache-2.0", modalities=("text",),
        params_total=30_532_122_624, params_active=3_353_032_704,
        architecture={"num_experts": 128, "top_k": 8, "router": "softmax", "weights_dtype": "bfloat16"},
        description="Qwen3-30B-A3B (April 2025, post-trained, thinking and non-thinking modes): 128 experts, top-8"),
    # https://huggingface.co/llava-hf/llava-1.5-7b-hf ; fp16, ~14.1 GB. A dense model: the base
    # that moezoo.upcycle turns into an MoE-LLaVA (LibMoE / MoE-LLaVA's starting point).
    PretrainedCfg(
        name="llava_1_5_7b.hf", source="hf", location="llava-hf/llava-1.5-7b-hf",
        revision="b234b804b114d9e37bb655e11cbbb5f5e971b7a9",
        files=_CHECKPOINT + (PretrainedFile("preprocessor_config.json"),),
        license="llama2", modalities=("image", "text"),
        params_total=7_063_427_072, params_active=7_063_427_072,
        architecture={"weights_dtype": "float16"},
        description="LLaVA-1.5-7B (Liu et al. 2023), llava-hf conversion: CLIP-L/336 + MLP + Vicuna-7B; "
                    "a dense base to upcycle"),
    # https://huggingface.co/Qwen/Qwen3-VL-30B-A3B-Instruct ; Apache-2.0 (the model card); 13 bf16 shards,
    # ~62.1 GB. The revision is the hub-cache snapshot or pinned revision of several independent public projects
    # (vLLM expert-parallel runs and a LoRA serving script on .../snapshots/9c4b90e1..., a judge-model downloader
    # that pins it with the 13 shards' sha256, a Tinker training setup's MODEL_REVISION, two model registries'
    # pinned revision fields, a pinned raw config.json link). Its processor files are the older
    # preprocessor_config.json (+ video_preprocessor_config.json), which Qwen3VLProcessor.from_pretrained reads.
    PretrainedCfg(
        name="qwen3_vl_moe_30b_a3b.instruct", source="hf", location="Qwen/Qwen3-VL-30B-A3B-Instruct",
        revision="9c4b90e1e4ba969fd3b5378b57d966d725f1b86c",
        files=_CHECKPOINT + (PretrainedFile("tokenizer.json"), PretrainedFile("preprocessor_config.json")),
        license="apache-2.0", modalities=("image", "video", "text"),
        params_total=31_070_754_032, params_active=3_891_664_112,
        architecture={"num_experts": 128, "top_k": 8, "router": "softmax", "llm_layers": 48, "llm_dim": 2048,
                      "encoders": {"visual": "Qwen3VLVisionEncoder (27 blocks, deepstack after 8, 16, 24)"},
                      "tokens_per_input": "one per 32x32 px (2x2 merged 16-px patches; video: per 2 frames)",
                      "weights_dtype": "bfloat16"},
        description="Qwen3-VL-30B-A3B-Instruct: the Qwen3-VL tower (DeepStack) + a 48-layer Qwen3-MoE LLM, "
                    "128 experts, top-8, interleaved mRoPE; images and video"),
    # https://huggingface.co/LanguageBind/MoE-LLaVA-StableLM-1.6B-4e ; the licence is MoE-LLaVA's (Apache-2.0,
    # PKU-YuanGroup/MoE-LLaVA; its README: a research preview for non-commercial use); its LLM starts from
    # stabilityai/stablelm-2-1_6b, under Stability AI's own licence. The revision is a hub-cache snapshot path in
    # ONE public repository (an evaluation script listing .../models--LanguageBind--MoE-LLaVA-StableLM-1.6B-4e/
    # snapshots/e48f557c...); no second source was found. Whether the weights are one model.safetensors or an
    # index of shards is not recorded, so only config.json is listed (the fetch then requires whichever the
    # snapshot has). MoE-LLaVA-StableLM's tokenizer is Arcade100k, Hub remote code that moezoo does not run: unless
    # the snapshot also has a tokenizer.json, the model loads without a processor (moezoo.convert.moe_llava_import
    # says how to add one).
    PretrainedCfg(
        name="moe_llava_stablelm_1_6b_4e.languagebind", source="hf", location="LanguageBind/MoE-LLaVA-StableLM-1.6B-4e",
        revision="e48f557cd69ca1a89419e54b00f9eb5d08cb2130",
        files=(PretrainedFile("config.json"),),
        license="apache-2.0 (MoE-LLaVA; non-commercial research preview)", modalities=("image", "text"),
        params_total=3_200_124_928, params_active=2_369_652_736,
        architecture={"num_experts": 4, "top_k": 2, "router": "deepspeed_top2", "moe_layers": 12, "llm_layers": 24,
                      "llm_dim": 2048, "encoders": {"vision": "CLIP ViT-L/14-336 (layer -2)"},
                      "tokens_per_input": {"image": 576}, "weights_dtype": "bfloat16"},
        description="MoE-LLaVA-1.6Bx4-Top2 (Lin et al. 2024): CLIP-L/336 + mlp2x_gelu + StableLM-2-1.6B with 4 "
                    "experts (top-2, DeepSpeed's gate, deterministic here) in every other layer; no DeepSpeed needed"),
)

# The other MoE-LLaVA releases (https://huggingface.co/LanguageBind/MoE-LLaVA-Phi2-2.7B-4e, -StableLM-1.6B-4e-384,
# -Phi2-2.7B-4e-384; PKU-YuanGroup/MoE-LLaVA README "Model Zoo"). No public source records a commit of these repos,
# so their entries follow `main` and the first fetch locks the commit it gets (moezoo.hub.lock). The architectures
# are the config.json MoE-LLaVA's code writes for them (moezoo.registry.moe_llava); the -384 releases use
# google/siglip-so400m-patch14-384, whose 729 patches MoE-LLaVA's "patch" selection cuts to 728. Licence as for the
# StableLM entry; phi-2 is MIT, StableLM-2-1.6B under Stability AI's own licence, SigLIP Apache-2.0.
_CLIP_336 = "CLIP ViT-L/14-336 (layer -2)"
_SIGLIP_384 = "SigLIP so400m/14-384 (layer -2, the first token dropped as MoE-LLaVA does)"
_MOE_LLAVA_RELEASES = (
    ("moe_llava_phi2_2_7b_4e", "MoE-LLaVA-Phi2-2.7B-4e", 5_609_680_896, 3_931_549_696, 32, 2560, _CLIP_336, 576,
     "MoE-LLaVA-2.7Bx4-Top2: CLIP-L/336 + mlp2x_gelu + phi-2"),
    ("moe_llava_stablelm_1_6b_4e_384", "MoE-LLaVA-StableLM-1.6B-4e-384", 3_325_105_216, 2_494_633_024, 24, 2048,
     _SIGLIP_384, 728, "MoE-LLaVA-1.6Bx4-Top2-384: SigLIP-so400m/384 + mlp2x_gelu + StableLM-2-1.6B"),
    ("moe_llava_phi2_2_7b_4e_384", "MoE-LLaVA-Phi2-2.7B-4e-384", 5_734_726_720, 4_056_595_520, 32, 2560, _SIGLIP_384,
     728, "MoE-LLaVA-2.7Bx4-Top2-384: SigLIP-so400m/384 + mlp2x_gelu + phi-2"),
)
MOE_LLAVA_ENTRIES = tuple(
    PretrainedCfg(
        name=f"{arch}.languagebind", source="hf", location=f"LanguageBind/{repo}", revision="main",
        files=(PretrainedFile("config.json"),),
        license="apache-2.0 (MoE-LLaVA; non-commercial research preview)", modalities=("image", "text"),
        params_total=total, params_active=active,
        architecture={"num_experts": 4, "top_k": 2, "router": "deepspeed_top2", "moe_layers": layers // 2,
                      "llm_layers": layers, "llm_dim": dim, "encoders": {"vision": tower},
                      "tokens_per_input": {"image": tokens}, "weights_dtype": "bfloat16"},
        description=f"{about} with 4 experts (top-2, DeepSpeed's gate, deterministic here) in every other layer; "
                    "no DeepSpeed needed")
    for arch, repo, total, active, layers, dim, tower, tokens, about in _MOE_LLAVA_RELEASES)

# LibMoE's Phi-3.5 + SigLIP router family (https://huggingface.co/Fsoft-AIC/Phi3.5-Siglip-MoE, one sub-folder per
# router, linked from LibMoE's README "Checkpoints" table since v1.1). No public source records a commit of this repo
# (no snapshot path, pinned revision or blob link was found), so these entries follow `main` and the first fetch locks
# the commit it gets (moezoo.hub.lock). Licence: LibMoE's WEIGHT_LICENSE (CC BY-NC 4.0); the bases are
# microsoft/Phi-3.5-mini-instruct (MIT) and google/siglip-so400m-patch14-224 (Apache-2.0). The architectures are the
# config.json LibMoE v1.1 writes for them (moezoo.registry.libmoe); the weight layout is not recorded, so only
# config.json is listed. The download holds a little more than the parameters counted (the tower's unused last layer,
# the hyperrouter's frozen hypernetwork), about 10.2-10.3 GB in bf16 against the 10.1 GB estimated.
_LIBMOE_ROUTERS = (("smoe", "smoe", 5_058_402_304, 4_509_422_528, "softmax", "SMoE-R: a softmax top-2 gate"),
                   ("cosine", "smoe_cosinegating", 5_058_402_412, 4_509_422_636, "cosine",
                    "Cosine-R: X-MoE's cosine router (v1.1's biased full-width gate)"),
                   ("hyper", "hyperrouter", 5_058_305_536, 4_509_325_760, "hyper",
                    "Hyper-R: the gate generated by a frozen hypernetwork from a learned embedding"),
                   ("perturbed", "smoe_perturbed", 5_058_402_412, 4_509_422_636, "perturbed_cosine",
                    "Perturbed Cosine-R: the cosine router with both norms perturbed"))
LIBMOE_ENTRIES = tuple(
    PretrainedCfg(
        name=f"libmoe_phi3_5_siglip_{arch}.fsoft", source="hf", location="Fsoft-AIC/Phi3.5-Siglip-MoE",
        revision="main", subfolder=f"sft_full/{moe_name}", files=(PretrainedFile("config.json"),),
        license="cc-by-nc-4.0 (LibMoE weights; Phi-3.5-mini MIT, SigLIP Apache-2.0)", modalities=("image", "text"),
        params_total=total, params_active=active,
        architecture={"num_experts": 4, "top_k": 2, "router": router, "moe_sites": 27, "llm_layers": 32,
                      "llm_dim": 3072,
                      "encoders": {"vision": "SigLIP so400m/14-224 (layer -2), S2 scales (1, 3), 4-expert MLPs"},
                      "tokens_per_input": {"image": 256}, "weights_dtype": "bfloat16"},
        description=f"LibMoE (Nguyen et al. 2024) {about}, 4 experts top-2 in every SigLIP MLP and in the projector, "
                    "before a dense Phi-3.5-mini")
    for arch, moe_name, total, active, router, about in _LIBMOE_ROUTERS)

for _cfg in HUB_ENTRIES + MOE_LLAVA_ENTRIES + LIBMOE_ENTRIES:
    register_pretrained(_cfg)
