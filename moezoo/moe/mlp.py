"""The dense feed-forward block: SwiGLU (Llama / Mixtral experts) or GELU."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe.threads import decoding_linear


class MLP(nn.Module):
    """A dense FFN, named as in transformers (``gate_proj``, ``up_proj``, ``down_proj``).

    It is the dense layer of the LMs, the shared experts of an MoE layer, and the
    FLOP-equal baseline of the benchmarks.

    Example:
        >>> MLP(16, 64)(torch.randn(3, 16)).shape
        torch.Size([3, 16])
    """

    def __init__(self, dim: int, hidden: int, activation: str = "swiglu", init_std: float = 0.02):
        super().__init__()
        self.glu = activation == "swiglu"
        if self.glu:
            self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)
        for p in self.parameters():
            nn.init.normal_(p, std=init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # decoding_linear: plain F.linear, except that a decoding step reads the weights on all threads.
        up = decoding_linear(x, self.up_proj.weight)
        hidden = F.silu(decoding_linear(x, self.gate_proj.weight)) * up if self.glu else F.gelu(up)
        return decoding_linear(hidden, self.down_proj.weight)
