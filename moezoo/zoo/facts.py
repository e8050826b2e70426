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
    sites = model.moe_sites()
    active = total - sum(_idle_expert_params(site) for site in sites.values())
    facts: dict[str, Any] = {"architecture": spec.name, "parameters": total, "active_parameters_per_token": active,
                             "llm_layers": llm.num_layers, "llm_dim": llm.dim, "moe_layers": llm.sparse_layers(),
                             "vocab_size": llm.vocab_size, "context": llm.max_position_embeddings}
    # The LLM's MoE, else (a dense LLM: LibMoE's MoE tower and projector) the first MoE site's.
    moe = llm.moe if llm.moe is not None else next((site.config for site in sites.values()), None)
    if moe is not None:
        facts.update(num_experts=moe.num_experts, top_k=moe.top_k, router=moe.router)
        if moe.num_shared_experts:
            facts["num_shared_experts"] = moe.num_shared_experts
        if moe.num_heads > 1:
            facts["moe_heads"] = moe.num_heads  # MH-MoE sub-tokens
    encoders = model.encoders()
    counts = getattr(model, "num_tokens", None)
    if encoders:  # a multimodal model: what each input becomes
        if counts is not None:
            facts["tokens_per_input"] = dict(counts)
        else:  # tokens per input follow the input's size (Qwen3-VL: image_grid_thw / video_grid_thw)
            facts["tokens_per_input"] = "variable (by the input's grid)"
        facts["encoders"] = {name: type(encoder).__name__ for name, encoder in encoders.items()}
        if counts is not None:
            facts["connectors"] = {m: model.connector_for(m).__class__.__name__ for m in counts}
    facts["moe_sites"] = len(sites)
    facts["modalities"] = [*(_modalities(model, counts) if encoders else ()), "text"]
    return facts


def _idle_expert_params(site: nn.Module) -> int:
    """The routed-expert parameters of one MoE site that a token passing through it does not use.

    Each token uses ``top_k`` of the ``num_experts`` experts; an MH-MoE token's ``num_heads`` sub-tokens
    each use ``top_k``, so up to ``top_k * num_heads`` distinct experts hold weights it uses. Per token is
    per token that reaches the site: an image token in a MoE tower, any token in the LLM.
    """
    c = site.config
    routed = site.experts.parameters() if hasattr(site, "experts") else \
        (site.fc1_weight, site.fc1_bias, site.fc2_weight, site.fc2_bias)  # MoEMLP: a connector's or a tower's
    experts = sum(p.numel() for p in routed)
    used = min(c.top_k * c.num_heads, c.num_experts)
    return experts - experts * used // c.num_experts


def _modalities(model: nn.Module, counts: Any) -> list[str]:
    """The non-text inputs, sorted: the keys of ``num_tokens``, else the placeholder ids its config names."""
    if counts is not None:
        return sorted(counts)
    return sorted(m for m in ("audio", "image", "video") if getattr(model.config, f"{m}_token_id", None) is not None)
