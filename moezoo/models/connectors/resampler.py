"""Learned-query connectors: ``resampler`` and the instruction-aware ``instruct``.

* ``resampler``: a Perceiver Resampler (Flamingo, Alayrac et al. 2022, arXiv 2204.14198;
  the Q-Former-style compressor Uni-MoE puts after its audio encoder, arXiv 2405.11273).
  ``num_queries`` learned queries cross-attend to the feature tokens in ``num_layers``
  pre-norm blocks of [cross-attention -> FFN], so any number of tokens in becomes
  ``num_queries`` tokens out. The block width is ``out_dim``: features are projected to it first.
* ``instruct``: InstructBLIP's instruction-aware Q-Former idea (Dai et al. 2023, arXiv
  2305.06500). Each block first runs self-attention over [queries ; prompt tokens], so the
  queries know the question before they read the features; then the queries cross-attend
  to the features; then the FFN. The prompt tokens are updated by each block's
  self-attention and FFN too (InstructBLIP's text tokens are), but never read the features.
  Only the query positions are output. Prompt padding (``prompt_mask`` False) is zeroed
  and masked out as a key, so it cannot change the output; the answer is never passed in
  (the model gives only the prompt span).

Prompt-modulated *patch* tokens (FiLM) are the separate ``film`` kind
(:mod:`moezoo.models.connectors.linear`). Attention is ``F.scaled_dot_product_attention``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.models.connectors.base import CONNECTORS, Connector
from moezoo.models.connectors.linear import check_features, check_prompt
from moezoo.utils.checks import check_min, require
from moezoo.utils.config import Config


class Attention(nn.Module):
    """Multi-head attention of ``x_NQD`` over ``context_NKD`` (with biases, as a Q-Former has)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q_proj = nn.Linear(dim, dim)
        self.kv_proj = nn.Linear(dim, 2 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x_NQD: torch.Tensor, context_NKD: torch.Tensor,
                key_mask_NK: torch.Tensor | None = None) -> torch.Tensor:
        (N, Q, D), K, h = x_NQD.shape, context_NKD.shape[1], self.num_heads
        q = self.q_proj(x_NQD).view(N, Q, h, D // h).transpose(1, 2)
        k, v = self.kv_proj(context_NKD).view(N, K, 2, h, D // h).permute(2, 0, 3, 1, 4)
        mask = None if key_mask_NK is None else key_mask_NK[:, None, None, :]  # True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(N, Q, D))


class ResamplerBlock(nn.Module):
    """Pre-norm [self-attention over queries + prompt (optional)] -> cross-attention -> FFN."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, self_attention: bool):
        super().__init__()
        self.self_attention = self_attention
        if self_attention:
            self.norm_self = nn.LayerNorm(dim)
            self.self_attn = Attention(dim, num_heads)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.cross_attn = Attention(dim, num_heads)
        self.norm_mlp = nn.LayerNorm(dim)
        hidden = max(1, int(dim * mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, q_NQD: torch.Tensor, features_NTD: torch.Tensor, prompt_NPD: torch.Tensor | None = None,
                prompt_mask_NP: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        Q = q_NQD.shape[1]
        if self.self_attention:
            h = torch.cat([q_NQD, prompt_NPD], dim=1)
            keys = torch.cat([prompt_mask_NP.new_ones(q_NQD.shape[:2]), prompt_mask_NP], dim=1)
            n = self.norm_self(h)
            h = h + self.self_attn(n, n, keys)
            q_NQD, prompt_NPD = h[:, :Q], h[:, Q:]
        q_NQD = q_NQD + self.cross_attn(self.norm_q(q_NQD), self.norm_kv(features_NTD))
        h = q_NQD if prompt_NPD is None else torch.cat([q_NQD, prompt_NPD], dim=1)
        h = h + self.mlp(self.norm_mlp(h))
        return h[:, :Q], (None if prompt_NPD is None else h[:, Q:])


class Resampler(Connector):
    """``features (N, T, in_dim)`` -> ``(N, num_queries, out_dim)`` by learned-query cross-attention.

    Example:
        >>> resampler = Resampler(ResamplerConfig(num_queries=4, num_heads=2), in_dim=8, out_dim=16)
        >>> resampler(torch.randn(2, 50, 8)).shape, resampler.num_output_tokens(50)
        (torch.Size([2, 4, 16]), 4)
    """

    def __init__(self, config: ResamplerConfig, in_dim: int, out_dim: int, prompt_dim: int | None = None):
        super().__init__()
        require(config, "num_heads", out_dim % config.num_heads == 0,
                f"must divide the connector width out_dim={out_dim}")
        self.config, self.in_dim, self.out_dim = config, in_dim, out_dim
        self.proj_in = nn.Linear(in_dim, out_dim)
        self.queries = nn.Parameter(torch.empty(config.num_queries, out_dim))
        nn.init.normal_(self.queries, std=0.02)
        self.blocks = nn.ModuleList(ResamplerBlock(out_dim, config.num_heads, config.mlp_ratio, self.uses_prompt)
                                    for _ in range(config.num_layers))
        self.norm_out = nn.LayerNorm(out_dim)
        # LayerNorm output has unit scale, LLM embeddings ~0.02: a last linear lets the scale be learned.
        self.proj_out = nn.Linear(out_dim, out_dim)

    def num_output_tokens(self, num_input_tokens: int) -> int:
        return self.config.num_queries

    def encode_prompt(self, features: torch.Tensor, prompt: torch.Tensor | None,
                      prompt_mask: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The prompt tokens the blocks see, ``(N, P, out_dim)``, and their mask; none here."""
        return None, None

    def forward(self, features: torch.Tensor, prompt: torch.Tensor | None = None,
                prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_features(features, self.in_dim)
        x_NTD = self.proj_in(features)
        q_NQD = self.queries.to(x_NTD.dtype).expand(features.shape[0], -1, -1)
        p_NPD, mask_NP = self.encode_prompt(features, prompt, prompt_mask)
        for block in self.blocks:
            q_NQD, p_NPD = block(q_NQD, x_NTD, p_NPD, mask_NP)
        return self.proj_out(self.norm_out(q_NQD))


@CONNECTORS.register(Resampler)
@dataclass
class ResamplerConfig(Config):
    """``resampler``: ``num_queries`` learned queries read the features (Perceiver Resampler).

    Args:
        num_queries: output tokens per input.
        num_layers: blocks of [cross-attention -> FFN].
        num_heads: attention heads; must divide the width (the LLM's ``out_dim``).
        mlp_ratio: FFN hidden width over the block width.

    Example:
        >>> ResamplerConfig(num_queries=0)
        Traceback (most recent call last):
        ...
        ValueError: ResamplerConfig.num_queries=0 must be >= 1
    """

    kind: ClassVar[str] = "resampler"
    num_queries: int = 32
    num_layers: int = 2
    num_heads: int = 8
    mlp_ratio: float = 4.0

    def __post_init__(self) -> None:
        check_min(self, num_queries=1, num_layers=1, num_heads=1)
        require(self, "mlp_ratio", self.mlp_ratio > 0, "must be > 0")


def sinusoid(pos_NP: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal position encodings ``(N, P, dim)`` (Vaswani et al. 2017) of integer positions."""
    half = (dim + 1) // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=pos_NP.device) / half)
    angle = pos_NP[..., None].float() * freq
    return torch.cat([angle.sin(), angle.cos()], dim=-1)[..., :dim]


class InstructResampler(Resampler):
    """A :class:`Resampler` whose queries also attend to the prompt (InstructBLIP's Q-Former).

    The prompt embeddings are layer-normed (LLM embeddings are small) and projected to the
    block width; with ``prompt_positions`` they get sinusoidal positions counted over the
    real tokens only, so word order is visible and left or right padding gives the same result.

    Example:
        >>> cfg = InstructResamplerConfig(num_queries=4, num_heads=2)
        >>> q_former = InstructResampler(cfg, in_dim=8, out_dim=16, prompt_dim=12)
        >>> q_former(torch.randn(2, 50, 8), torch.randn(2, 7, 12), torch.ones(2, 7, dtype=torch.bool)).shape
        torch.Size([2, 4, 16])
    """

    uses_prompt = True

    def __init__(self, config: InstructResamplerConfig, in_dim: int, out_dim: int, prompt_dim: int | None = None):
        super().__init__(config, in_dim, out_dim)
        self.prompt_dim = prompt_dim or out_dim
        self.prompt_in = nn.Sequential(nn.LayerNorm(self.prompt_dim), nn.Linear(self.prompt_dim, out_dim))

    def encode_prompt(self, features, prompt, prompt_mask):
        prompt, mask_NP = check_prompt(features, prompt, prompt_mask, self.prompt_dim)
        p_NPD = self.prompt_in(prompt)
        if self.config.prompt_positions:
            pos_NP = (mask_NP.long().cumsum(1) - 1).clamp_min(0)
            p_NPD = p_NPD + sinusoid(pos_NP, self.out_dim).to(p_NPD.dtype)
        return p_NPD, mask_NP


@CONNECTORS.register(InstructResampler)
@dataclass
class InstructResamplerConfig(ResamplerConfig):
    """``instruct``: a resampler whose queries see the prompt, never the answer.

    Args:
        prompt_positions: add sinusoidal positions to the prompt tokens (else a bag of words).
        (the rest as :class:`ResamplerConfig`)
    """

    kind: ClassVar[str] = "instruct"
    prompt_positions: bool = True
