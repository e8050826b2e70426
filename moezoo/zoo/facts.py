"""Architecture facts of a model: what ``moezoo info`` prints and a model card's architecture section gives.

Example:
    >>> import moezoo
    >>> facts = model_facts(moezoo.create_model("moe_lm_tiny", device="meta"))
    >>> facts["architecture"], facts["router"], facts["parameters"] > facts["active_parameters_per_token"]
    ('MoEForCausalLM', 'softmax', True)
"""

from __future__ import annotations

from typing import Any

from torch import nn


def model_facts(model: nn.Module) -> dict[str, Any]:
    """Class, parameters (total and active per token), LLM shape, experts, router, MoE sites, modalities.

    Works on a model built on the meta device (no memory), so real-size architectures answer instantly.

    Args:
        model: a moezoo model (``create_model`` / ``moezoo.load``).
    """
    spec = model.spec
    llm = spec.language_config(model.config)
    total = sum(p.numel() for p in model.parameters())
    moe = llm.moe
    # The LLM's routed experts: each token uses top_k of num_experts of them; an MH-MoE token's num_heads
    # sub-tokens each use top_k, so up to top_k * num_heads distinct experts hold weights it uses.
    experts = sum(p.numel() for n, p in model.named_parameters() if ".mlp.experts." in n)
    used = min(moe.top_k * moe.num_heads, moe.num_experts) if moe is not None else 0
    active = total - experts + (experts * used // moe.num_experts if moe is not None else 0)
    facts: dict[str, Any] = {"architecture": spec.name, "parameters": total, "active_parameters_per_token": active,
                             "llm_layers": llm.num_layers, "llm_dim": llm.dim, "moe_layers": llm.sparse_layers(),
                             "vocab_size": llm.vocab_size, "context": llm.max_position_embeddings}
    if moe is not None:
        facts.update(num_experts=moe.num_experts, top_k=moe.top_k, router=moe.router)
        if moe.num_shared_experts:
            facts["num_shared_experts"] = moe.num_shared_experts
        if moe.num_heads > 1:
            facts["moe_heads"] = moe.num_heads  # MH-MoE sub-tokens
    encoders = model.encoders()
    if encoders:  # a multimodal model: what each input becomes
        facts["tokens_per_input"] = dict(model.num_tokens)
        facts["encoders"] = {name: type(encoder).__name__ for name, encoder in encoders.items()}
        facts["connectors"] = {m: model.connector_for(m).__class__.__name__ for m in model.num_tokens}
    facts["moe_sites"] = len(model.moe_sites())
    facts["modalities"] = [*sorted(getattr(model, "num_tokens", {}) if encoders else ()), "text"]
    return facts
