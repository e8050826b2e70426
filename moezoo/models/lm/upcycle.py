"""Sparse upcycling: turn a dense LM into an MoE LM initialised from it.

Komatsuzaki et al. 2022, *Sparse Upcycling* (arXiv 2212.05055); also the third stage
of LibMoE (arXiv 2411.00918) and MoE-LLaVA (arXiv 2401.15947). Every expert of an
upcycled layer starts as a copy of that layer's dense FFN and a fresh router is
added. With identical experts and renormalised top-k weights (which sum to one) the
MoE layer computes exactly the dense FFN, so the upcycled model starts where the
dense one ended; ``noise_std`` breaks the symmetry between the copies.
"""

from __future__ import annotations

from typing import Any

import torch

from moezoo.models.lm.config import DENSE_FAMILIES, LMConfig
from moezoo.models.lm.model import MoEForCausalLM
from moezoo.moe import MoEConfig
from moezoo.moe.experts import expert_copies


def upcycle_lm(dense: MoEForCausalLM, num_experts: int = 8, top_k: int = 2,
            router: str = "softmax", noise_std: float = 0.0, layers: list[int] | None = None,
            norm_topk_prob: bool = True, seed: int = 0, **moe_kwargs: Any) -> MoEForCausalLM:
    """Copy each dense FFN of ``layers`` into ``num_experts`` experts behind a fresh router.

    Args:
        dense: a :class:`MoEForCausalLM` with dense FFNs in ``layers``.
        num_experts / top_k / router: the new MoE layers (``router`` from :func:`moezoo.moe.list_routers`).
        noise_std: each copy gets Gaussian noise of ``noise_std`` times its weight's standard
            deviation (scale-free); 0 keeps the copies identical.
        layers: which layers to upcycle; default every layer (MoE-LLaVA uses every other one).
        norm_topk_prob: renormalise the top-k weights; needed for the exact-equality start.
        seed: seeds the router initialisation and the noise.
        **moe_kwargs: further :class:`~moezoo.moe.MoEConfig` fields (``aux_loss_coef``, ...).

    Returns:
        A new model (the input is left unchanged), in the input's mode and dtype.

    Example:
        >>> from moezoo.models.lm import LMConfig
        >>> dense = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=2, num_heads=2, ffn_dim=32)).eval()
        >>> moe = upcycle_lm(dense, num_experts=4, top_k=2).eval()
        >>> ids = torch.tensor([[1, 2, 3]])
        >>> torch.allclose(moe(ids).logits, dense(ids).logits, atol=1e-5)
        True
    """
    cfg: LMConfig = dense.config
    layers = list(range(cfg.num_layers)) if layers is None else sorted(layers)
    already = [i for i in layers if cfg.is_moe_layer(i)]
    if already:
        raise ValueError(f"layers {already} are already MoE layers; upcycle dense layers only")
    # The experts are the dense FFN's kind: SwiGLU, or Phi-2's biased GELU fc1/fc2 (MoE-LLaVA-Phi2's experts).
    moe = MoEConfig(dim=cfg.dim, expert_dim=cfg.ffn_dim, num_experts=num_experts, top_k=top_k, router=router,
                    norm_topk_prob=norm_topk_prob, activation=cfg.mlp_activation, expert_bias=cfg.mlp_bias,
                    **moe_kwargs)
    if cfg.moe is not None and cfg.sparse_layers() and cfg.moe != moe:
        raise ValueError("the model already has MoE layers with a different MoEConfig; "
                         f"upcycle with the same settings ({cfg.moe})")
    # A dense family (Llama, Qwen2) has no MoE layers: the export family is inferred again.
    new_cfg = cfg.replace(moe=moe, moe_layers=sorted(set(cfg.sparse_layers()) | set(layers)),
                          family=None if cfg.family in DENSE_FAMILIES else cfg.family)
    weight = dense.embed_tokens.weight
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = MoEForCausalLM(new_cfg, tokenizer=dense.tokenizer)
    state = model.state_dict()
    dense_state = dense.state_dict()
    for key in state:
        if key in dense_state:
            state[key] = dense_state[key]
    # SwiGLU experts hold [gate; up] in `gate_up_proj`, element-wise ones `up_proj`; biases likewise.
    ins = ("gate_proj", "up_proj") if cfg.mlp_activation == "swiglu" else ("up_proj",)
    in_name = "gate_up_proj" if cfg.mlp_activation == "swiglu" else "up_proj"
    for i in layers:
        mlp = f"layers.{i}.mlp"
        w_in = torch.cat([dense_state[f"{mlp}.{p}.weight"] for p in ins])
        state[f"{mlp}.experts.{in_name}"] = expert_copies(w_in, num_experts, noise_std, gen)
        state[f"{mlp}.experts.down_proj"] = expert_copies(dense_state[f"{mlp}.down_proj.weight"], num_experts,
                                                          noise_std, gen)
        if cfg.mlp_bias:  # biases are copied exactly: the noise on the weights breaks the symmetry
            b_in = torch.cat([dense_state[f"{mlp}.{p}.bias"] for p in ins])
            state[f"{mlp}.experts.{in_name}_bias"] = expert_copies(b_in, num_experts)
            state[f"{mlp}.experts.down_proj_bias"] = expert_copies(dense_state[f"{mlp}.down_proj.bias"], num_experts)
    model.load_state_dict(state)
    return model.to(device=weight.device, dtype=weight.dtype).train(dense.training)
