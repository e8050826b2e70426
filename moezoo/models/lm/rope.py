"""Rotary position embeddings (RoFormer, Su et al. 2021, arXiv 2104.09864) and the
scaling variants of the families moezoo reads: linear position interpolation
(Chen et al. 2023), Llama 3.1's wavelength-dependent scaling, YaRN (Peng et al.
2023, arXiv 2309.00071) and Phi-3's LongRoPE (Ding et al. 2024, arXiv 2402.13753). The
frequencies follow transformers' ``modeling_rope_utils`` formula for formula, so logits
match to float rounding. Partial rotary (StableLM, Phi) rotates only the first
``rotary_dim`` channels of each head: the frequencies are those of a ``rotary_dim``-wide head.
Multimodal RoPE (Qwen2-VL, arXiv 2409.12191; Qwen3-VL) gives each token three positions (time,
height, width) and each frequency one of them (:func:`mrope_axes`); text tokens have three equal
positions, so on text it is plain RoPE.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def rope_frequencies(head_dim: int, theta: float, scaling: dict[str, Any] | None = None,
                     long: bool = False) -> tuple[torch.Tensor, float]:
    """Inverse frequencies ``(head_dim // 2,)`` and the cos/sin scale for a RoPE variant.

    ``head_dim`` is the rotated width (``LMConfig.rotary_dim``). ``long`` picks LongRoPE's
    ``long_factor`` set (for sequences past ``original_max_position_embeddings``); other
    types ignore it.

    Example:
        >>> inv_freq, scale = rope_frequencies(8, 10000.0)
        >>> inv_freq.shape, scale
        (torch.Size([4]), 1.0)
        >>> rope_frequencies(8, 10000.0, {"rope_type": "linear", "factor": 2.0})[0][0].item()
        0.5
    """
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    kind = (scaling or {}).get("rope_type", "default")
    if kind == "default":
        return inv_freq, 1.0
    factor = float(scaling["factor"])
    if kind == "linear":
        return inv_freq / factor, 1.0
    if kind == "llama3":
        return _llama3(inv_freq, factor, scaling), 1.0
    if kind == "yarn":
        return _yarn(head_dim, theta, factor, scaling)
    if kind == "longrope":
        return _longrope(head_dim, theta, factor, scaling, long)
    raise ValueError(f"unsupported rope_type {kind!r}; supported: default, linear, llama3, yarn, longrope")


def _longrope(dim: int, theta: float, factor: float, p: dict[str, Any], long: bool) -> tuple[torch.Tensor, float]:
    # transformers' `_compute_longrope_parameters`: each frequency divided by its own factor; the
    # cos/sin scale depends on `factor` (max / original length) only, so it is the same for both sets.
    old_len = p["original_max_position_embeddings"]
    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        attention_factor = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(old_len))
    ext = torch.tensor(p["long_factor" if long else "short_factor"], dtype=torch.float32)
    inv_freq = 1.0 / (ext * theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    return inv_freq, float(attention_factor)


def _llama3(inv_freq: torch.Tensor, factor: float, p: dict[str, Any]) -> torch.Tensor:
    # Long wavelengths are interpolated by `factor`, short ones kept, the band between blended.
    old_len = p["original_max_position_embeddings"]
    low, high = float(p["low_freq_factor"]), float(p["high_freq_factor"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    blended = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(medium, blended, scaled)


def _yarn(dim: int, theta: float, factor: float, p: dict[str, Any]) -> tuple[torch.Tensor, float]:
    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention_factor = p.get("attention_factor")
    if attention_factor is None:
        if p.get("mscale") and p.get("mscale_all_dim"):
            attention_factor = mscale(factor, p["mscale"]) / mscale(factor, p["mscale_all_dim"])
        else:
            attention_factor = mscale(factor)
    beta_fast, beta_slow = p.get("beta_fast") or 32, p.get("beta_slow") or 1
    old_len = p["original_max_position_embeddings"]

    def correction_dim(rotations: float) -> float:
        return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoid a division by zero in the ramp
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2).float() / dim)
    extrapolate = 1 - ramp  # 1: keep the original frequency, 0: interpolate by `factor`
    inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
    return inv_freq, float(attention_factor)


def mrope_axes(section: list[int], interleaved: bool) -> torch.Tensor:
    """Which position axis (0 time, 1 height, 2 width) rotates each of the ``sum(section)`` frequencies.

    Interleaved (Qwen3-VL's ``apply_interleaved_mrope``): frequency ``j`` follows height when
    ``j % 3 == 1`` and ``j < 3 * section[1]``, width when ``j % 3 == 2`` and ``j < 3 * section[2]``, time
    otherwise. Chunked (Qwen2-VL): the first ``section[0]`` follow time, the next ``section[1]`` height,
    the rest width.

    Example:
        >>> mrope_axes([2, 2, 2], interleaved=True).tolist()
        [0, 1, 2, 0, 1, 2]
        >>> mrope_axes([2, 1, 1], interleaved=True).tolist(), mrope_axes([2, 1, 1], interleaved=False).tolist()
        ([0, 1, 2, 0], [0, 0, 1, 2])
    """
    n = sum(section)
    if not interleaved:
        return torch.repeat_interleave(torch.arange(3), torch.tensor(section))
    j = torch.arange(n)
    axes = torch.zeros(n, dtype=torch.long)
    for axis in (1, 2):
        axes[(j % 3 == axis) & (j < 3 * section[axis])] = axis
    return axes


class RotaryEmbedding(nn.Module):
    """Cos/sin tables for positions, grown on demand and indexed by position ids.

    LongRoPE keeps a second table: as transformers' ``longrope_frequency_update``, a forward
    whose largest position id reaches ``original_max_position_embeddings`` rotates every
    position with the long factors, any other forward with the short ones (so decoding
    switches sets at that step, and the keys already cached keep theirs).

    The table is computed as ``position * inv_freq`` in float32, exactly as
    transformers does per forward, so a cached lookup changes no bit of the result
    while saving the trigonometry on every decoding step. The frequencies are not a
    buffer: ``model.to(torch.bfloat16)`` would round them (transformers' buffer is,
    and at position 2000 its cos/sin are then off by up to 0.35), so they stay in
    float32 on the CPU and the table follows the device of the position ids.

    Example:
        >>> rope = RotaryEmbedding(8, 10000.0)
        >>> cos, sin = rope(torch.arange(5)[None], torch.float32)
        >>> cos.shape
        torch.Size([1, 5, 8])
    """

    def __init__(self, head_dim: int, theta: float, scaling: dict[str, Any] | None = None,
                 mrope_section: list[int] | None = None, mrope_interleaved: bool = False):
        super().__init__()
        # Multimodal RoPE: per channel of the (doubled) table, the position axis it reads.
        with torch.device("cpu"):  # real values even when the model is built on the meta device
            self.mrope_axes = None
            if mrope_section is not None:
                self.mrope_axes = mrope_axes(mrope_section, mrope_interleaved).repeat(2)  # (head_dim,)
            self.inv_freq, self.attention_scaling = rope_frequencies(head_dim, theta, scaling)
            self.long_inv_freq = None
            self.long_after = None  # LongRoPE: positions past this length use `long_inv_freq`
            if (scaling or {}).get("rope_type") == "longrope":
                self.long_inv_freq, _ = rope_frequencies(head_dim, theta, scaling, long=True)
                self.long_after = int(scaling["original_max_position_embeddings"])
        self._cos: torch.Tensor | None = None
        self._sin: torch.Tensor | None = None
        self._long: tuple[torch.Tensor, torch.Tensor] | None = None

    def _table(self, length: int, device: torch.device, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        length = max(length, 256)
        pos = torch.arange(length, device=device, dtype=torch.float32)
        freqs = pos[:, None] * inv_freq.to(device)[None]  # (P, hd/2)
        emb = torch.cat((freqs, freqs), dim=-1)  # (P, hd)
        return emb.cos() * self.attention_scaling, emb.sin() * self.attention_scaling

    def forward(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)`` of shape ``(*position_ids.shape, head_dim)`` in ``dtype``.

        Multimodal RoPE takes ``position_ids (3, B, T)`` (time, height, width) and gives ``(B, T, head_dim)``,
        each channel from its axis's table row (the values transformers computes, bit for bit).
        """
        if position_ids.ndim == 3:
            if self.mrope_axes is None:
                raise ValueError(f"position_ids of shape {tuple(position_ids.shape)} (3 axes) need multimodal "
                                 "RoPE (LMConfig.mrope_section); this model takes (B, T)")
            cos, sin = self._lookup(position_ids, dtype)  # (3, B, T, hd)
            if self.mrope_axes.device != position_ids.device:  # moved once, like the tables
                self.mrope_axes = self.mrope_axes.to(position_ids.device)
            index = self.mrope_axes[None, None, None].expand(1, *cos.shape[1:])
            return cos.gather(0, index)[0], sin.gather(0, index)[0]
        return self._lookup(position_ids, dtype)

    def _lookup(self, position_ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        needed = int(position_ids.max()) + 1 if position_ids.numel() else 1
        if self.long_after is not None and needed > self.long_after:
            if self._long is None or self._long[0].shape[0] < needed or self._long[0].device != position_ids.device:
                self._long = self._table(2 * needed, position_ids.device, self.long_inv_freq)
            cos, sin = self._long
            return cos[position_ids].to(dtype), sin[position_ids].to(dtype)
        if self._cos is None or self._cos.shape[0] < needed or self._cos.device != position_ids.device:
            self._cos, self._sin = self._table(2 * needed, position_ids.device, self.inv_freq)
        return self._cos[position_ids].to(dtype), self._sin[position_ids].to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x (B, H, T, hd)`` by ``cos``/``sin (B, T, rd)`` (half-split pairs, as in Llama).

    With ``rd < hd`` (partial rotary) only the first ``rd`` channels turn; the rest pass through.

    Example:
        >>> x = torch.randn(1, 2, 3, 8)
        >>> cos, sin = RotaryEmbedding(4, 10000.0)(torch.arange(3)[None], torch.float32)
        >>> torch.equal(apply_rope(x, cos, sin)[..., 4:], x[..., 4:])
        True
    """
    if cos.shape[-1] < x.shape[-1]:
        rd = cos.shape[-1]
        return torch.cat((apply_rope(x[..., :rd], cos, sin), x[..., rd:]), dim=-1)
    cos, sin = cos[:, None], sin[:, None]
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin
