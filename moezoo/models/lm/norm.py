"""RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467), computed as Llama / transformers do."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, normalised in float32 and cast back
    *before* the weight is applied, as in transformers, so bf16 logits match too.

    Example:
        >>> y = RMSNorm(4)(torch.tensor([[3.0, -3.0, 3.0, -3.0]]))
        >>> torch.allclose(y, torch.tensor([[1.0, -1.0, 1.0, -1.0]]), atol=1e-5)
        True
    """

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Normalise in fp32, then scale in the input dtype, as transformers does.
        return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"
