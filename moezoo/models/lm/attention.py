"""Grouped-query attention (Ainslie et al. 2023, arXiv 2305.13245) with RoPE (whole or
partial), the optional q/k-norm of OLMoE (over the whole projection), Qwen3 and Phi (per
head, shared) and StableLM (per head, one weight each), an optional sliding window
(Mistral, Phi-3), and a preallocated KV cache. The math is ``F.scaled_dot_product_attention`` so that the
fused kernels of the running torch are used; the projections follow transformers'
Llama / Qwen2 / OLMoE / Qwen3 attention so that weights load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.models.lm.config import LMConfig
from moezoo.models.lm.norm import PerHeadNorm, make_norm
from moezoo.models.lm.rope import apply_rope
from moezoo.moe.threads import decoding_linear


class KVCache:
    """Keys and values of every layer, preallocated for ``max_len`` positions.

    Writing in place into one buffer avoids the ``torch.cat`` per layer and step of a
    growing cache. ``length`` counts the positions already written; the model
    advances it after each forward.

    Example:
        >>> cache = KVCache(num_layers=2, batch=1, num_kv_heads=2, max_len=8, head_dim=4)
        >>> k, v = cache.update(0, torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
        >>> k.shape, cache.length
        (torch.Size([1, 2, 3, 4]), 0)
    """

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"):
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)  # (L, B, Hkv, S_max, hd)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.max_len = max_len
        self.length = 0

    @classmethod
    def for_model(cls, config: LMConfig, batch: int, max_len: int, dtype: torch.dtype,
                  device: torch.device) -> KVCache:
        """A cache sized for ``config``'s attention."""
        return cls(config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim, dtype, device)

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k, v (B, Hkv, T, hd)`` at ``length`` and return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KVCache is full: {end} positions needed, max_len={self.max_len}")
        self.k[layer, :, :, self.length:end] = k
        self.v[layer, :, :, self.length:end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]


def attention_mask_for(attention_mask: torch.Tensor | None, num_new: int, start: int, device: torch.device,
                       spans: torch.Tensor | None = None,
                       window: int | None = None) -> tuple[torch.Tensor | None, bool]:
    """The SDPA mask for ``num_new`` queries at positions ``start..`` over ``start + num_new`` keys.

    Args:
        attention_mask: ``(B, S)`` with 1 for real tokens and 0 for padding, or ``None``.
        spans: ``(B, T)`` span ids of the new tokens, for a prefix-LM mask over modality spans:
            tokens that share a span id > 0 (one image's tokens, say) also attend to each
            other, bidirectionally; 0 is plain causal text. Only without cached positions
            (``start == 0``), i.e. in training and at the prefill.
        window: a sliding window: a query at index ``q`` sees keys at ``k > q - window`` only
            (transformers' ``sliding_window_overlay``; indices count cache slots, padding included).

    Returns:
        ``(mask, is_causal)``: ``mask`` is ``None`` (use ``is_causal``) or a boolean
        ``(B, 1, T, S)`` where True means "may attend". A padding query attends to itself
        only, so that its softmax row is never empty (no NaN to leak into the experts).

    Example:
        >>> mask, _ = attention_mask_for(None, 3, 0, "cpu", spans=torch.tensor([[1, 1, 0]]))
        >>> mask[0, 0].int().tolist()  # the first two tokens see each other
        [[1, 1, 0], [1, 1, 0], [1, 1, 1]]
        >>> attention_mask_for(None, 3, 0, "cpu", window=2)[0][0, 0].int().tolist()
        [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    """
    total = start + num_new
    bidirectional = spans is not None and bool((spans > 0).any())
    if bidirectional and start != 0:
        raise ValueError(f"bidirectional spans need the whole sequence at once (start=0), got start={start}")
    windowed = window is not None and total > window
    if not bidirectional and not windowed and (attention_mask is None or bool(attention_mask[:, :total].all())):
        if num_new == 1:
            return None, False  # one query sees every cached key
        if start == 0:
            return None, True
        attention_mask = None
    q_pos = torch.arange(start, total, device=device)
    k_pos = torch.arange(total, device=device)
    allowed = (k_pos[None, :] <= q_pos[:, None])[None]  # (1, T, S)
    if bidirectional:
        allowed = allowed | ((spans[:, :, None] == spans[:, None, :]) & (spans[:, :, None] > 0))  # (B, T, S)
    if windowed:
        allowed = allowed & (k_pos[None, :] > q_pos[:, None] - window)[None]
    if attention_mask is not None:
        allowed = allowed & attention_mask[:, None, :total].bool()
        allowed = allowed | (k_pos[None, :] == q_pos[:, None])[None]
    return allowed[:, None], False


def positions_from_mask(attention_mask: torch.Tensor | None, B: int, T: int, start: int = 0,
                        device: torch.device | str = "cpu") -> torch.Tensor:
    """RoPE positions ``(B, T)`` of the tokens at ``start..start + T``: they count real tokens
    only (``cumsum - 1`` of the mask), so a left-padded prompt is encoded as it would be alone.

    Example:
        >>> positions_from_mask(torch.tensor([[0, 1, 1], [1, 1, 1]]), 2, 3)
        tensor([[0, 0, 1],
                [0, 1, 2]])
    """
    if attention_mask is None:
        return torch.arange(start, start + T, device=device).expand(B, T)
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)[:, start:start + T]


class Attention(nn.Module):
    """Multi-head self-attention with GQA, RoPE, optional q/k-norm and a KV cache."""

    def __init__(self, config: LMConfig, layer_idx: int):
        super().__init__()
        c = config
        self.layer_idx = layer_idx
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.qk_norm, self.clip_qkv = c.qk_norm, c.clip_qkv
        in_bias = c.qkv_bias or c.attention_bias
        q_width, kv_width = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        self.q_proj = nn.Linear(c.dim, q_width, bias=in_bias)
        self.k_proj = nn.Linear(c.dim, kv_width, bias=in_bias)
        self.v_proj = nn.Linear(c.dim, kv_width, bias=in_bias)
        self.o_proj = nn.Linear(q_width, c.dim, bias=c.attention_bias)
        if c.qk_norm == "each_head":  # StableLM: one bias-free norm per head
            self.q_norm = PerHeadNorm(c.num_heads, c.head_dim, c.norm_eps, c.norm)
            self.k_norm = PerHeadNorm(c.num_kv_heads, c.head_dim, c.norm_eps, c.norm)
        elif c.qk_norm != "none":
            # OLMoE normalises the whole projection, Qwen3 and Phi each head with one shared norm.
            full = c.qk_norm == "full"
            self.q_norm = make_norm(c.norm, q_width if full else c.head_dim, c.norm_eps)
            self.k_norm = make_norm(c.norm, kv_width if full else c.head_dim, c.norm_eps)

    def forward(self, x_BTD: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q, k, v = (decoding_linear(x_BTD, p.weight, p.bias) for p in (self.q_proj, self.k_proj, self.v_proj))
        if self.qk_norm == "full":
            q, k = self.q_norm(q), self.k_norm(k)
        if self.clip_qkv is not None:
            q, k, v = (t.clamp(-self.clip_qkv, self.clip_qkv) for t in (q, k, v))
        q = q.view(B, T, self.num_heads, self.head_dim)
        k = k.view(B, T, self.num_kv_heads, self.head_dim)
        if self.qk_norm in ("head", "each_head"):
            q, k = self.q_norm(q), self.k_norm(k)
        q = apply_rope(q.transpose(1, 2), cos, sin)  # (B, H, T, hd)
        k = apply_rope(k.transpose(1, 2), cos, sin)  # (B, Hkv, T, hd)
        v = v.view(B, T, self.num_kv_heads, self.head_dim).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                             enable_gqa=self.num_heads != self.num_kv_heads)
        out = out.transpose(1, 2).reshape(B, T, self.num_heads * self.head_dim)
        return decoding_linear(out, self.o_proj.weight, self.o_proj.bias)
