"""Sparse upcycling of a multimodal model: the LLM's FFNs, the connectors, the vision tower.

MoE-LLaVA (arXiv 2401.15947) and LibMoE's third stage (arXiv 2411.00918) upcycle the
LLM of a trained LLaVA; LibMoE and CuMo (arXiv 2405.05949) also turn the MLP
connector and the vision tower's MLPs (LibMoE's ``clip_smoe`` / ``siglip_smoe``) into experts. Every expert starts as a copy of the dense part and a fresh
router is added, so with identical copies and renormalised top-k weights the
upcycled model computes exactly what the dense one did.
"""

from __future__ import annotations

import copy
from typing import Any, Iterable

from moezoo.models.connectors.linear import MLPConnector
from moezoo.models.connectors.moe import MoEConnector
from moezoo.models.encoders.moe import EncoderMoEConfig
from moezoo.models.lm.upcycle import upcycle_lm
from moezoo.models.multimodal.model import MultimodalMoEForCausalLM

TARGETS = ("llm", "connector", "vision")


def upcycle_multimodal(model: MultimodalMoEForCausalLM, num_experts: int = 8, top_k: int = 2,
                       router: str = "softmax", targets: Iterable[str] = ("llm",), noise_std: float = 0.0,
                       seed: int = 0, layers: list[int] | None = None, **moe_kwargs: Any) -> MultimodalMoEForCausalLM:
    """A copy of ``model`` whose ``targets`` are upcycled into ``num_experts`` experts.

    Args:
        model: the (dense or partly sparse) multimodal model; left unchanged.
        num_experts / top_k / router: the new MoE layers.
        targets: any of ``"llm"`` (the dense FFNs of ``layers``), ``"connector"`` (every
            ``mlp2x_gelu`` connector becomes an ``moe`` one) and ``"vision"`` (the image tower's
            block MLPs, :mod:`moezoo.models.encoders.moe`).
        noise_std / seed / layers / **moe_kwargs: as :func:`~moezoo.models.lm.upcycle.upcycle_lm`
            (``moe_kwargs`` go to the LLM's :class:`~moezoo.moe.MoEConfig`; the connector and the tower
            take ``aux_loss_coef``, ``z_loss_coef``, ``router_convention``, ``router_dim`` and
            ``num_shared_experts`` from them). LibMoE's layout (MoE tower MLPs and projector over a dense
            LLM): ``targets=("connector", "vision")``, ``router_convention="libmoe"``, and for its
            ``smoe_share`` ``num_shared_experts=1`` (the shared expert is one more copy).

    Example:
        >>> import torch, moezoo
        >>> dense = moezoo.create_model("mm_tiny_cnn", llm={"moe": None}).eval()
        >>> moe = upcycle_multimodal(dense, num_experts=4, top_k=2, targets=("llm", "connector")).eval()
        >>> ids = torch.tensor([[1] + [4] * dense.num_tokens["image"] + [9]])
        >>> x = torch.randn(1, 3, 32, 32)
        >>> torch.allclose(moe(input_ids=ids, pixel_values=x).logits, dense(input_ids=ids, pixel_values=x).logits,
        ...                atol=1e-5)
        True
    """
    targets = tuple(targets)
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        raise ValueError(f"unknown upcycling targets {unknown or targets}; choose from {TARGETS}")
    new = copy.deepcopy(model)
    changes: dict[str, Any] = {}
    if "llm" in targets:
        new.llm = upcycle_lm(model.llm, num_experts=num_experts, top_k=top_k, router=router, noise_std=noise_std,
                             layers=layers, seed=seed, **moe_kwargs)
        changes["llm"] = new.llm.config
    # What the connector's and tower's experts take from moe_kwargs (LibMoE's layout needs the last three).
    losses = {k: moe_kwargs[k] for k in ("aux_loss_coef", "z_loss_coef", "router_convention", "router_dim",
                                         "num_shared_experts") if k in moe_kwargs}
    if "connector" in targets:
        dense = {m: c for m, c in model.connectors.items() if type(c) is MLPConnector}
        if not dense:
            kinds = {m: c.config.kind for m, c in model.connectors.items()}
            raise ValueError(f"no mlp2x_gelu connector to upcycle (connectors: {kinds})")
        for modality, connector in dense.items():
            moe = MoEConnector.from_dense(connector, num_experts, top_k, router, noise_std=noise_std, seed=seed,
                                          **losses)
            new.connectors[modality] = moe.to(device=connector.linear_1.weight.device)
            changes[f"{modality}_connector"] = moe.config
    if "vision" in targets:
        vision = model.config.vision
        if vision is None or getattr(vision, "moe", "absent") is not None:
            why = "no image tower" if vision is None else (
                "its MLPs are experts already" if getattr(vision, "moe", None) else f"a {vision.kind} tower has no MLPs")
            raise ValueError(f"cannot upcycle the vision tower: {why}")
        moe = EncoderMoEConfig(num_experts=num_experts, top_k=top_k, router=router,
                               norm_topk_prob=moe_kwargs.get("norm_topk_prob", True), **losses)
        new.vision.sparsify(moe, upcycle=True, noise_std=noise_std, seed=seed)
        changes["vision"] = vision.replace(moe=moe)
    new.config = model.config.replace(**changes)
    return new.train(model.training)
