"""Tiny random LibMoE checkpoints in LibMoE's own key layout, for tests and doctests.

A tiny Phi-3 (transformers' ``Phi3ForCausalLM``) and a tiny SigLIP (``SiglipVisionModel``) whose MLPs and
projector are replaced by ``moelayer`` experts with the router parameters of each ``moe_name``, written as
LibMoE's ``LlavaPhiForCausalLM.save_pretrained`` would (:mod:`moezoo.convert.libmoe`). The tower's config
goes into ``config.json`` as ``vision_config`` (a real LibMoE config names a hub SigLIP instead).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from moezoo.convert.libmoe import MOE_NAMES, V1_NAMES

IMAGE_SIZE, PATCH_SIZE, TOWER_DIM, TOWER_LAYERS = 16, 4, 16, 3


def tiny_phi3(seed: int = 0) -> Any:
    """A random tiny ``Phi3ForCausalLM`` in eval mode (vocabulary 64, width 32, two layers)."""
    import transformers

    from moezoo.convert.testing import randomize_

    torch.manual_seed(seed)
    cfg = transformers.Phi3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=128,
                                  pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    return randomize_(transformers.Phi3ForCausalLM(cfg), lambda name: 0.02).eval()


def tiny_siglip(seed: int = 0) -> Any:
    """A random tiny ``SiglipVisionModel`` (16x16 images, patch 4: 16 tokens of width 16, three layers)."""
    import transformers

    from moezoo.convert.testing import randomize_

    torch.manual_seed(seed)
    cfg = transformers.SiglipVisionConfig(hidden_size=TOWER_DIM, intermediate_size=32, num_hidden_layers=TOWER_LAYERS,
                                          num_attention_heads=2, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
                                          hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
    return randomize_(transformers.SiglipVisionModel(cfg), lambda name: 0.2).eval()


def random_moelayer(moe_name: str, num_experts: int, in_dim: int, hidden: int, out_dim: int,
                    names: tuple[str, str], gen: torch.Generator, layout: str = "v2") -> dict[str, torch.Tensor]:
    """The state of one random LibMoE ``moelayer`` of ``moe_name`` (keys below ``moelayer.``), in v2.0's
    router layout or (``layout="v1"``, the ``moe_name`` s of :data:`~moezoo.convert.libmoe.V1_NAMES`) v1.x's
    ``gate = nn.Linear(D, E, bias=True)``."""
    def rand(*shape: int, std: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=gen) * std

    out = {}
    for e in range(num_experts):
        out[f"experts.{e}.{names[0]}.weight"], out[f"experts.{e}.{names[0]}.bias"] = rand(hidden, in_dim), rand(hidden)
        out[f"experts.{e}.{names[1]}.weight"] = rand(out_dim, hidden)
        out[f"experts.{e}.{names[1]}.bias"] = rand(out_dim)
    routed = num_experts - 1 if MOE_NAMES[moe_name][1] else num_experts
    router = MOE_NAMES[moe_name][0]
    out["gate.weight"] = rand(routed, in_dim, std=1.0)
    if layout == "v1":
        if moe_name not in V1_NAMES.values():
            raise ValueError(f"moe_name={moe_name!r} has no LibMoE v1 layout of its own; "
                             f"v1's are {sorted(V1_NAMES.values())}")
        out["gate.bias"] = rand(routed, std=0.3)
    elif router in ("cosine", "perturbed_cosine"):
        out["inp_reduction.weight"] = rand(num_experts // 2, in_dim, std=1.0)
        out["expert_embeddings"] = rand(num_experts, num_experts // 2, std=1.0)
    elif router == "hyper":
        h = in_dim // 4
        out["hyper_embedding"] = rand(1, in_dim, std=1.0)
        out["hypernet.0.weight"], out["hypernet.0.bias"] = rand(h, in_dim, std=0.5), rand(h, std=0.5)
        out["hypernet.2.weight"] = rand(num_experts * (in_dim + 1), h, std=0.5)
        out["hypernet.2.bias"] = rand(num_experts * (in_dim + 1), std=0.5)
        # LibMoE's recreate_gate: the gate is what the hypernetwork generates.
        hidden_h = torch.relu(out["hyper_embedding"] @ out["hypernet.0.weight"].T + out["hypernet.0.bias"])
        flat = (hidden_h @ out["hypernet.2.weight"].T + out["hypernet.2.bias"])[0].reshape(num_experts, in_dim + 1)
        out["gate.weight"], out["gate.bias"] = flat[:, :-1].contiguous(), flat[:, -1].contiguous()
    return out


def tiny_libmoe_checkpoint(path: str | Path, moe_name: str = "smoe", num_experts: int = 4, num_selected: int = 2,
                           scales: tuple[int, ...] = (1,), clip_smoe: bool = True, mlp_smoe: bool = True,
                           seed: int = 0, layout: str = "v2", **fields: Any) -> dict[str, Any]:
    """Write a tiny random LibMoE ``llava_phi`` checkpoint to ``path``.

    Args:
        moe_name / num_experts / num_selected / scales / clip_smoe / mlp_smoe: LibMoE's config fields.
        seed: seeds every weight.
        layout: ``"v2"`` (LibMoE v2.0's router keys) or ``"v1"`` (v1.x's biased ``gate``, for
            ``smoe_cosinegating`` / ``smoe_perturbed`` / ``smoe_sigmoidgating``).
        **fields: more ``config.json`` fields (e.g. ``topk_max``), written as given.

    Returns:
        ``{"state": the LibMoE state dict, "config": config.json, "phi3": the Phi3ForCausalLM,
        "siglip": the SiglipVisionModel whose attention and norms the tower uses}``.

    Example:
        >>> import tempfile
        >>> ckpt = tiny_libmoe_checkpoint(tempfile.mkdtemp(), "smoe_share")
        >>> ckpt["config"]["model_type"], ckpt["state"]["model.mm_projector.moelayer.gate.weight"].shape
        ('llava_phi', torch.Size([3, 16]))
    """
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(seed)
    phi3, siglip = tiny_phi3(seed), tiny_siglip(seed)
    state = {k: v.detach().clone() for k, v in phi3.state_dict().items()}
    for key, tensor in siglip.state_dict().items():
        if key.startswith(("post_layernorm.", "head.")):  # LibMoE's tower has neither
            continue
        if clip_smoe and ".mlp." in key:
            continue
        state["model.vision_tower.vision_model." + key] = tensor.detach().clone()
    if clip_smoe:
        for i in range(TOWER_LAYERS):
            for k, v in random_moelayer(moe_name, num_experts, TOWER_DIM, 32, TOWER_DIM, ("fc1", "fc2"), gen,
                                        layout).items():
                state[f"model.vision_tower.vision_model.encoder.layers.{i}.moelayer.{k}"] = v
    mm_channels, hidden = TOWER_DIM * len(scales), phi3.config.hidden_size
    if mlp_smoe:
        for k, v in random_moelayer(moe_name, num_experts, mm_channels, hidden, hidden, ("0", "2"), gen,
                                    layout).items():
            state[f"model.mm_projector.moelayer.{k}"] = v
    else:
        state["model.mm_projector.0.weight"] = torch.randn(hidden, mm_channels, generator=gen) * 0.2
        state["model.mm_projector.0.bias"] = torch.randn(hidden, generator=gen) * 0.2
        state["model.mm_projector.2.weight"] = torch.randn(hidden, hidden, generator=gen) * 0.2
        state["model.mm_projector.2.bias"] = torch.randn(hidden, generator=gen) * 0.2
    config = phi3.config.to_dict()
    config.pop("transformers_version", None)
    vision = siglip.config.to_dict()
    vision = {k: vision[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                     "image_size", "patch_size", "num_channels", "hidden_act", "layer_norm_eps")}
    config.update({
        "architectures": ["LlavaPhiForCausalLM"], "model_type": "llava_phi", "dtype": "float32",
        "moe_name": moe_name, "num_experts": num_experts, "num_selected": num_selected, "topk_max": num_selected,
        "topk_min": num_selected, "mlp_smoe": mlp_smoe, "clip_smoe": clip_smoe, "scales": list(scales),
        "sparse_upcycling": True, "balance_loss_coef": 0.01, "router_z_loss_coef": 0.001, "router_loss_coef": 0.01,
        "mm_vision_tower": "google/siglip-tiny-test", "mm_hidden_size": TOWER_DIM,
        "mm_projector_type": "moe" if mlp_smoe else "mlp2x_gelu", "mm_vision_select_layer": -2,
        "mm_vision_select_feature": "patch", "mm_patch_merge_type": "flat", "image_aspect_ratio": "pad",
        "version": "phi35", "use_mm_proj": True, "training": True,
        "vision_config": {"model_type": "siglip_vision_model", **vision}, **fields,
    })
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path / "model.safetensors"), metadata={"format": "pt"})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    return {"state": state, "config": config, "phi3": phi3, "siglip": siglip}
