"""The dense feed-forward block: SwiGLU (Llama / Mixtral experts) or an element-wise activation (GELU, ...)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe.activations import activation_fn
from moezoo.moe.threads import decoding_linear


class MLP(nn.Module):
    """A dense FFN, named as in transformers (``gate_proj``, ``up_proj``, ``down_proj``).

    It is the dense layer of the LMs, the shared experts of an MoE layer, the dense half of a
    Residual-MoE, and the FLOP-equal baseline of the benchmarks.

    Args:
        dim / hidden: widths.
        activation: ``"swiglu"`` (``down(silu(gate(x)) * up(x))``) or a name of
            :data:`moezoo.moe.activations.ACTIVATIONS` (``down(act(up(x)))``).
        bias: the projections carry biases (Phi-2's ``fc1`` / ``fc2``).

    Example:
        >>> MLP(16, 64)(torch.randn(3, 16)).shape
        torch.Size([3, 16])
        >>> MLP(16, 64, "gelu_tanh", bias=True).up_proj.bias.shape
        torch.Size([64])
    """

    def __init__(self, dim: int, hidden: int, activation: str = "swiglu", init_std: float = 0.02, bias: bool = False):
        super().__init__()
        self.glu = activation == "swiglu"
        self.act = None if self.glu else activation_fn(activation)
        if self.glu:
            self.gate_proj = nn.Linear(dim, hidden, bias=bias)
        self.up_proj = nn.Linear(dim, hidden, bias=bias)
        self.down_proj = nn.Linear(hidden, dim, bias=bias)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            else:
                nn.init.normal_(p, std=init_std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # decoding_linear: plain F.linear, except that a decoding step reads the weights on all threads.
        up = decoding_linear(x, self.up_proj.weight, self.up_proj.bias)
        if self.glu:
            hidden = F.silu(decoding_linear(x, self.gate_proj.weight, self.gate_proj.bias)) * up
        else:
            hidden = self.act(up)
        return decoding_linear(hidden, self.down_proj.weight, self.down_proj.bias)
