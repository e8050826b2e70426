"""Sparse upcycling of a model, whichever its class (``moezoo.upcycle`` also takes a dir).

Komatsuzaki et al. 2022, *Sparse Upcycling* (arXiv 2212.05055), the third stage of
LibMoE (arXiv 2411.00918) and of MoE-LLaVA (arXiv 2401.15947): every expert starts as
a copy of the dense FFN it replaces, behind a fresh router, so the upcycled model
starts where the dense one ended. The per-family work is the
``upcycle`` of its :class:`~moezoo.models.spec.ArchitectureSpec` (:func:`moezoo.models.lm.upcycle.upcycle_lm`,
:func:`moezoo.models.multimodal.upcycle.upcycle_multimodal`);
reading a checkpoint dir first is :func:`moezoo.loading.upcycle`'s.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from moezoo.models.spec import spec_for


def upcycle(model: nn.Module, num_experts: int = 8, top_k: int = 2, router: str = "softmax",
            **kwargs: Any) -> nn.Module:
    """Copy dense FFNs into ``num_experts`` experts behind a fresh ``router``.

    Args:
        model: a model of a family whose spec has an upcycler (left unchanged).
        num_experts / top_k / router: the new MoE layers (``router`` from :func:`moezoo.moe.list_routers`).
        **kwargs: ``noise_std``, ``layers``, ``norm_topk_prob``, ``seed`` and further
            :class:`~moezoo.moe.MoEConfig` fields, as :func:`~moezoo.models.lm.upcycle.upcycle_lm` takes;
            for a multimodal model also ``targets`` (``"llm"``, ``"connector"``, ``"vision"``; see
            :func:`~moezoo.models.multimodal.upcycle.upcycle_multimodal`).

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> dense = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=2, num_heads=2, ffn_dim=32))
        >>> upcycle(dense, num_experts=4).config.sparse_layers()
        [0, 1]
    """
    spec = spec_for(model)
    if spec.upcycle is None:
        raise ValueError(f"{spec.name} cannot be upcycled: its ArchitectureSpec has no upcycler")
    return spec.upcycle(model, num_experts=num_experts, top_k=top_k, router=router, **kwargs)
