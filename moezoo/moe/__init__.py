"""moezoo's sparse-MoE layer library.

Example:
    >>> from moezoo.moe import MoEConfig, MoELayer, list_routers
    >>> layer = MoELayer(MoEConfig(dim=32, expert_dim=64, num_experts=8, top_k=2, router="cosine"))
    >>> layer(torch.randn(4, 32)).hidden_states.shape
    torch.Size([4, 32])
"""

import torch  # noqa: F401  (doctest namespace)

from moezoo.moe.config import MoEConfig
from moezoo.moe.dispatch import Dispatch, expert_ffn, sort_by_expert
from moezoo.moe.experts import GroupedExperts
from moezoo.moe.layer import MoELayer, MoEOutput, RoutingStats
from moezoo.moe.losses import load_balancing_loss, router_z_loss
from moezoo.moe.mlp import MLP
from moezoo.moe.recording import SiteOutput, SiteRecorder, modality_pass, site_losses, site_stats
from moezoo.moe.reference import loop_reference
from moezoo.moe.routers import Routing, create_router, expert_counts, list_routers, register_router

__all__ = [
    "MLP", "Dispatch", "GroupedExperts", "MoEConfig", "MoELayer", "MoEOutput", "Routing", "RoutingStats",
    "SiteOutput", "SiteRecorder", "create_router", "expert_counts", "expert_ffn", "list_routers",
    "load_balancing_loss", "loop_reference", "modality_pass", "register_router", "router_z_loss", "site_losses",
    "site_stats", "sort_by_expert",
]
