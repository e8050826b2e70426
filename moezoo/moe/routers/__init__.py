"""Routers, registered by name: ``create_router(config)`` builds ``config.router``.

A router maps tokens to *assignments*: flat ``(token, expert, weight)`` triples.
Token-choice routers emit ``T * top_k`` of them in rank-major order (every token's
first choice, then every token's second, ...), which is the priority order that
capacity dropping follows (GShard / Switch). Expert-choice emits ``E * C`` of them.
The dispatcher does not care which kind produced them.

Example:
    >>> import torch
    >>> from moezoo.moe import MoEConfig
    >>> router = create_router(MoEConfig(dim=16, expert_dim=32, num_experts=4, top_k=2))
    >>> routing = router(torch.randn(5, 16))
    >>> routing.token_idx.shape, routing.probs.shape
    (torch.Size([10]), torch.Size([5, 4]))
"""

from moezoo.moe.routers import (  # noqa: F401  (the routers register themselves)
    cosine, deepspeed, expert_choice, hyper, topk)
from moezoo.moe.routers.base import Routing, create_router, expert_counts, list_routers, register_router, token_choice

__all__ = ["Routing", "create_router", "expert_counts", "list_routers", "register_router", "token_choice"]
