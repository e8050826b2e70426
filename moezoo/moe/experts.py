"""Routed experts with fused 3-D weights in transformers 5's layout."""

from __future__ import annotations

import torch
from torch import nn

from moezoo.moe.dispatch import (DIRECT_MAX_ROWS, Dispatch, GradBuffers, act_name, direct_ffn, expert_ffn,
                                 grouped_mm_supported, sort_by_expert)
from moezoo.moe.reference import loop_reference
from moezoo.moe.routers import Routing, expert_counts


class GroupedExperts(nn.Module):
    """``num_experts`` FFNs stored as fused tensors, so HF conversion is a copy.

    * SwiGLU: ``gate_up_proj`` ``(E, 2 * hidden, dim)`` (gate rows first) and
      ``down_proj`` ``(E, dim, hidden)``, exactly as transformers 5 stores them.
    * An element-wise activation (``"gelu"``, ``"gelu_tanh"``, ...): ``up_proj`` ``(E, hidden, dim)``
      and ``down_proj``.
    * ``bias=True`` adds ``{gate_up_proj,up_proj}_bias`` ``(E, rows)`` and ``down_proj_bias``
      ``(E, dim)`` (transformers' GPT-OSS names): MoE-LLaVA-Phi2's experts, Phi's ``fc1`` / ``fc2``,
      are ``up_proj`` / ``down_proj`` with biases and ``"gelu_tanh"``.

    Example:
        >>> experts = GroupedExperts(num_experts=4, dim=8, hidden=16)
        >>> experts.gate_up_proj.shape, experts.down_proj.shape
        (torch.Size([4, 32, 8]), torch.Size([4, 8, 16]))
        >>> [n for n, _ in GroupedExperts(4, 8, 16, "gelu_tanh", bias=True).named_parameters()]
        ['up_proj', 'down_proj', 'up_proj_bias', 'down_proj_bias']
    """

    def __init__(self, num_experts: int, dim: int, hidden: int, activation: str = "swiglu",
                 init_std: float = 0.02, bias: bool = False):
        super().__init__()
        self.activation = act_name(activation)
        self.glu = self.activation == "swiglu"
        self.in_name = "gate_up_proj" if self.glu else "up_proj"
        in_rows = 2 * hidden if self.glu else hidden
        self.register_parameter(self.in_name, nn.Parameter(torch.empty(num_experts, in_rows, dim)))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden))
        for p in self.parameters():
            nn.init.normal_(p, std=init_std)
        if bias:
            self.register_parameter(f"{self.in_name}_bias", nn.Parameter(torch.zeros(num_experts, in_rows)))
            self.down_proj_bias = nn.Parameter(torch.zeros(num_experts, dim))
        self.has_bias = bias
        self.grad_buffers = GradBuffers()

    @property
    def in_proj(self) -> nn.Parameter:
        return getattr(self, self.in_name)

    @property
    def biases(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``(in-projection bias (E, rows), down-projection bias (E, dim))``, or ``(None, None)``."""
        if not self.has_bias:
            return None, None
        return getattr(self, f"{self.in_name}_bias"), self.down_proj_bias

    @property
    def num_experts(self) -> int:
        return self.down_proj.shape[0]

    def forward(self, x_TD: torch.Tensor, routing: Routing, capacity: int | None = None,
                mode: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Run the assignments in ``routing``.

        Returns:
            ``(out (T, D), assignments processed per expert (E,), assignments dropped ())``.
        """
        b_in, b_out = self.biases
        if mode == "loop":
            out, counts = loop_reference(x_TD, routing, self.in_proj, self.down_proj, self.activation, capacity,
                                         b_in, b_out)
            return out, counts, routing.expert_idx.numel() - counts.sum()
        if (mode == "auto" and capacity is None and not x_TD.is_cuda and not torch.is_grad_enabled()
                and routing.expert_idx.numel() <= DIRECT_MAX_ROWS * self.num_experts):
            out = direct_ffn(x_TD, routing, self.in_proj, self.down_proj, self.activation, b_in, b_out)
            return out, expert_counts(routing.expert_idx, self.num_experts), out.new_zeros((), dtype=torch.long)
        if mode == "auto":
            mode = "grouped_mm" if x_TD.is_cuda else "fused"
        if mode == "grouped_mm" and not grouped_mm_supported(x_TD, self.in_proj, self.down_proj):
            mode = "fused"
        dispatch: Dispatch = sort_by_expert(routing, self.num_experts, capacity)
        out = expert_ffn(x_TD, dispatch, self.in_proj, self.down_proj, self.activation, mode, self.grad_buffers,
                         b_in, b_out)
        return out, dispatch.counts, dispatch.num_dropped


def expert_copies(w: torch.Tensor, n: int, noise_std: float = 0.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """``(n, *w.shape)`` copies of ``w``, for sparse upcycling (Komatsuzaki et al. 2022).

    ``noise_std`` adds Gaussian noise of that many times ``w``'s standard deviation (scale-free),
    which breaks the symmetry between the copies; 0 keeps them identical.

    Example:
        >>> expert_copies(torch.ones(2), 3).shape
        torch.Size([3, 2])
    """
    out = w.detach().float().cpu().unsqueeze(0).repeat(n, *([1] * w.ndim))
    if noise_std > 0 and w.numel() > 1:
        out += torch.randn(out.shape, generator=generator) * (noise_std * w.detach().float().std().item())
    return out.to(w.dtype)

