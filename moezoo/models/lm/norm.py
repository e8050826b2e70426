"""The LM's norms: RMSNorm (Zhang & Sennrich 2019, arXiv 1910.07467), computed as Llama /
transformers do, LayerNorm (Ba et al. 2016) for the StableLM and Phi-2 families, and the
per-head q/k norm with one weight per head of StableLM's ``qk_layernorm``."""

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


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """The norm of ``kind`` (``LMConfig.norm``): ``"rms"`` is :class:`RMSNorm`, ``"layer"`` a
    ``nn.LayerNorm`` with bias, computed in the input dtype as transformers' StableLM and Phi do.

    Example:
        >>> type(make_norm("rms", 8, 1e-6)).__name__, make_norm("layer", 8, 1e-5).bias.shape
        ('RMSNorm', torch.Size([8]))
    """
    if kind == "rms":
        return RMSNorm(dim, eps)
    if kind == "layer":
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"unknown norm {kind!r}; use 'rms' or 'layer'")


class PerHeadNorm(nn.Module):
    """A bias-free norm over each head of ``x (..., H, hd)`` with a weight per head: ``weight (H, hd)``.

    StableLM's ``qk_layernorm`` holds ``H`` separate ``LayerNorm(hd, bias=False)`` modules; one
    ``(H, hd)`` weight computes the same in one call (import stacks their weights).

    Example:
        >>> norm = PerHeadNorm(2, 4, kind="layer")
        >>> norm(torch.randn(3, 2, 4)).shape, norm.weight.shape
        (torch.Size([3, 2, 4]), torch.Size([2, 4]))
    """

    def __init__(self, num_heads: int, head_dim: int, eps: float = 1e-5, kind: str = "layer"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_heads, head_dim))
        self.eps, self.kind = eps, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "rms":
            return self.weight * F.rms_norm(x.float(), (x.shape[-1],), eps=self.eps).to(x.dtype)
        return F.layer_norm(x, (x.shape[-1],), eps=self.eps) * self.weight

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}, kind={self.kind!r}"
