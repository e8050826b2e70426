"""Tiny random MoE-LLaVA checkpoints, for tests: MoE-LLaVA's own ``config.json`` and key layout.

The text weights come from a random transformers model of the base (``StableLmForCausalLM``,
``PhiForCausalLM``, ``Qwen2ForCausalLM``), the tower from a random ``CLIPVisionModel`` (2 layers, 32x32
images, 8x8 patches: 16 image tokens) or ``SiglipVisionModel`` (``tower="siglip"``: the same shapes, no CLS,
so 15 image tokens, the first patch dropped as MoE-LLaVA's SigLIP tower drops it), the projector from
``Linear -> GELU -> Linear``; each MoE layer's experts start as copies of that layer's dense MLP (DeepSpeed's
``Experts`` deep-copies it) and are then made to differ. Written as MoE-LLaVA's ``save_pretrained`` writes them
(:mod:`moezoo.convert.moe_llava`'s table), with a word-level tokenizer. Nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moezoo.convert.testing import randomize_, tiny_tokenizer

VOCAB, DIM, FFN, LAYERS, HEADS = 96, 16, 24, 3, 2
IMAGE_SIZE, PATCH = 32, 8
TOWER = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "image_size": IMAGE_SIZE, "patch_size": PATCH, "hidden_act": "quick_gelu",
         "layer_norm_eps": 1e-5, "projection_dim": 32, "num_channels": 3}
# A tiny SiglipVisionConfig (google/siglip-so400m-patch14-384's fields at test size): 16 positions, no CLS, so
# MoE-LLaVA's "patch" selection keeps 15.
SIGLIP_TOWER = {"model_type": "siglip_vision_model", "hidden_size": 32, "intermediate_size": 64,
                "num_hidden_layers": 2, "num_attention_heads": 4, "image_size": IMAGE_SIZE, "patch_size": PATCH,
                "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_channels": 3}
# tower -> (mm_image_tower: a name whose prefix makes MoE-LLaVA's builder.py pick that tower class, its config,
# the transformers class).
TOWERS = {"clip": ("openai/clip-vit-tiny-test", TOWER, "CLIPVisionModel"),
          "siglip": ("google/siglip-tiny-test", SIGLIP_TOWER, "SiglipVisionModel")}
# Per base: (MoE-LLaVA model_type, architecture, the text fields its config class writes).
_TEXT = {"vocab_size": VOCAB, "hidden_size": DIM, "intermediate_size": FFN, "num_hidden_layers": LAYERS,
         "num_attention_heads": HEADS, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2,
         "rope_theta": 10000.0, "tie_word_embeddings": False, "initializer_range": 0.02}
BASES = {
    # StableLMEpochConfig's names (rope_pct, norm_eps), as MoE-LLaVA-StableLM's config.json has them
    "stablelm": ("moe_llava_stablelm", "MoELLaVAStablelmForCausalLM",
                 dict(_TEXT, num_key_value_heads=1, hidden_act="silu", rope_pct=0.5, norm_eps=1e-5,
                      use_qkv_bias=True)),
    "phi": ("moe_llava_phi", "MoELLaVAPhiForCausalLM",
            dict(_TEXT, num_key_value_heads=2, hidden_act="gelu_new", partial_rotary_factor=0.5,
                 layer_norm_eps=1e-5, qk_layernorm=False, resid_pdrop=0.1, embd_pdrop=0.0, attention_dropout=0.0)),
    "qwen1_5": ("moe_llava_qwen1_5", "MoELLaVAQwen1_5ForCausalLM",
                dict(_TEXT, num_key_value_heads=1, hidden_act="silu", rms_norm_eps=1e-6, use_sliding_window=False)),
}


def tiny_moe_llava_config(base: str = "stablelm", moe_layers_idx: tuple[int, ...] = (1, 2), num_experts: int = 4,
                          use_residual: bool = False, capacity_factor: float = 1.5, eval_capacity_factor: float = 0.5,
                          min_capacity: int = 0, tower: str = "clip", **overrides: Any) -> dict[str, Any]:
    """The ``config.json`` dict of a tiny MoE-LLaVA of ``base`` with a ``tower`` (``"clip"`` or ``"siglip"``)
    image tower (``overrides`` are top-level fields)."""
    model_type, architecture, text = BASES[base]
    tower_name, tower_config, _ = TOWERS[tower]
    moe = {"moe_enable": True, "moe_mode": "custom", "moe_layers_idx": list(moe_layers_idx), "ep_size": 1,
           "top_k_experts": 2, "capacity_factor": capacity_factor, "eval_capacity_factor": eval_capacity_factor,
           "min_capacity": min_capacity, "use_residual": use_residual, "router_aux_loss_coef": 0.01,
           "train_modules": ["fc1", "fc2", "wg"], "num_experts": [num_experts] * len(moe_layers_idx)}
    return {"architectures": [architecture], "model_type": model_type, **text, "moe": moe,
            "mm_image_tower": tower_name, "mm_image_tower_config": dict(tower_config),
            "mm_hidden_size": tower_config["hidden_size"], "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "image_projector_type": "mlp2x_gelu", "mm_use_im_start_end": False, "mm_use_im_patch_token": False,
            "image_aspect_ratio": "pad", "use_mm_proj": True, "mm_video_tower": None, "torch_dtype": "float32",
            "transformers_version": "4.37.0", **overrides}


def tiny_text_model(base: str, seed: int = 0) -> Any:
    """The random transformers ``*ForCausalLM`` whose weights a tiny MoE-LLaVA of ``base`` carries."""
    import torch
    import transformers

    _, _, text = BASES[base]
    if base == "stablelm":
        cls, fields = transformers.StableLmConfig, dict(
            {k: v for k, v in text.items() if k not in ("rope_pct", "norm_eps")},
            partial_rotary_factor=text["rope_pct"], layer_norm_eps=text["norm_eps"], qk_layernorm=False,
            use_parallel_residual=False)
    else:
        cls, fields = (transformers.PhiConfig if base == "phi" else transformers.Qwen2Config), dict(text)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cls(**fields), attn_implementation="eager")
    return randomize_(model, lambda name: 0.2).eval()


def tiny_tower(tower_config: dict[str, Any]) -> Any:
    """The transformers ``CLIPVisionModel`` / ``SiglipVisionModel`` (random) of a tiny ``mm_image_tower_config``."""
    import transformers

    cls = next(c for _, t, c in TOWERS.values() if t["model_type"] == tower_config["model_type"])
    settings = {k: v for k, v in tower_config.items() if k != "model_type"}
    return getattr(transformers, cls)(transformers.AutoConfig.for_model(tower_config["model_type"], **settings))


def tiny_moe_llava_state(config: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """Random weights in MoE-LLaVA's key layout for the tiny ``config``."""
    import torch

    base = next(b for b, (t, _, _) in BASES.items() if t == config["model_type"])
    text = tiny_text_model(base, seed)
    state = {k: v for k, v in text.state_dict().items() if k != "lm_head.bias"}  # MoE-LLaVA's head: bias=False
    moe = config["moe"]
    generator = torch.Generator().manual_seed(seed + 1)
    for layer, num_experts in zip(moe["moe_layers_idx"], moe["num_experts"]):
        prefix = f"model.layers.{layer}.mlp."
        dense = {k[len(prefix):]: state.pop(k) for k in list(state) if k.startswith(prefix)}
        state[prefix + "deepspeed_moe.gate.wg.weight"] = torch.randn(num_experts, DIM, generator=generator)
        for e in range(num_experts):  # copies of the dense MLP, then trained apart
            for name, tensor in dense.items():
                noise = 0.1 * torch.randn(tensor.shape, generator=generator)
                state[f"{prefix}deepspeed_moe.experts.deepspeed_experts.{e}.{name}"] = tensor + noise
        if moe["use_residual"]:
            state.update({f"{prefix}mlp.{name}": tensor for name, tensor in dense.items()})
            state[prefix + "coefficient.weight"] = torch.randn(2, DIM, generator=generator)
            state[prefix + "coefficient.bias"] = torch.randn(2, generator=generator)
    torch.manual_seed(seed + 2)
    tower = tiny_tower(config["mm_image_tower_config"])
    randomize_(tower, lambda name: 0.2)
    # transformers 4 (MoE-LLaVA's) names the tower's weights `vision_model.*`; transformers 5 drops that level.
    # A SigLIP tower's post_layernorm and pooling head are kept: MoE-LLaVA saves them, and its features never use them
    state.update({"model.image_tower.image_tower.vision_model." + k.removeprefix("vision_model."): v
                  for k, v in tower.state_dict().items()})
    for i, (fan_in, fan_out) in zip((0, 2), ((config["mm_hidden_size"], DIM), (DIM, DIM))):
        state[f"model.mm_projector.image_spatial_proj.{i}.weight"] = 0.2 * torch.randn(fan_out, fan_in,
                                                                                       generator=generator)
        state[f"model.mm_projector.image_spatial_proj.{i}.bias"] = 0.1 * torch.randn(fan_out, generator=generator)
    return {k: v.contiguous() for k, v in state.items()}


def tiny_moe_llava_tokenizer() -> Any:
    """A word-level tokenizer with ``<|endoftext|>`` (the templates' end of turn) as its EOS, 91 tokens."""
    tokenizer = tiny_tokenizer(VOCAB - 6)
    tokenizer.add_special_tokens({"eos_token": "<|endoftext|>"})
    return tokenizer


def tiny_moe_llava_checkpoint(path: str | Path, base: str = "stablelm", seed: int = 0,
                              state: dict[str, Any] | None = None, **config_overrides: Any) -> dict[str, Any]:
    """Write a tiny MoE-LLaVA (``config.json``, ``model.safetensors``, tokenizer) to ``path``; return its state.

    Args:
        base: ``"stablelm"``, ``"phi"`` or ``"qwen1_5"``.
        tower: (in ``config_overrides``) ``"clip"`` (default) or ``"siglip"``.
        state: the weights to write (MoE-LLaVA's keys); default :func:`tiny_moe_llava_state`.
        config_overrides: :func:`tiny_moe_llava_config`'s arguments.

    Example:
        >>> import os, tempfile
        >>> path = tempfile.mkdtemp()
        >>> state = tiny_moe_llava_checkpoint(path, "phi")
        >>> state["model.layers.1.mlp.deepspeed_moe.experts.deepspeed_experts.3.fc2.bias"].shape
        torch.Size([16])
        >>> sorted(os.listdir(path))
        ['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    config = tiny_moe_llava_config(base, **config_overrides)
    state = tiny_moe_llava_state(config, seed) if state is None else state
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    tiny_moe_llava_tokenizer().save_pretrained(str(path))
    return state
