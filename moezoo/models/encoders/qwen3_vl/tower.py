"""The Qwen3-VL tower's modules, its output, and the encoder (see :mod:`moezoo.models.encoders.qwen3_vl`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.models.encoders.base import Encoder
from moezoo.models.encoders.qwen3_vl.config import Qwen3VLVisionConfig
from moezoo.models.encoders.qwen3_vl.grid import (
    interpolation_taps,
    merge_order_positions,
    merged_token_counts,
)
from moezoo.moe.mlp_experts import activation_fn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class Qwen3VLPatchEmbed(nn.Module):
    """``(N, C * T * P * P)`` flattened patches -> ``(N, hidden_size)`` through a Conv3d with kernel = stride."""

    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.shape = (config.in_channels, config.temporal_patch_size, config.patch_size, config.patch_size)
        self.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel_size=self.shape[1:], stride=self.shape[1:])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        # One Conv3d window per patch is a matrix product with the flattened kernel (what Conv3d computes).
        weight = self.proj.weight
        return F.linear(pixel_values.to(weight.dtype), weight.flatten(1), self.proj.bias)


class Qwen3VLAttention(nn.Module):
    """Multi-head self-attention over packed patches, each frame attending only to itself, with the 2-D rotary."""

    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x_ND: torch.Tensor, lengths: list[int], cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        n = x_ND.shape[0]
        q, k, v = self.qkv(x_ND).view(n, 3, self.num_heads, -1).unbind(1)  # each (N, H, hd)
        q, k = _rotate(q, cos, sin), _rotate(k, cos, sin)
        q, k, v = (t.transpose(0, 1) for t in (q, k, v))  # (H, N, hd)
        if len(set(lengths)) == 1:  # equal frames (a video, or same-size images): one batched call
            b = len(lengths)
            q, k, v = (t.unflatten(1, (b, lengths[0])).transpose(0, 1) for t in (q, k, v))  # (B, H, L, hd)
            out_HND = F.scaled_dot_product_attention(q, k, v).transpose(0, 1).flatten(1, 2)
        else:  # one call per frame (faster on CPU than a block-diagonal mask, and exact)
            out_HND = torch.cat([F.scaled_dot_product_attention(*parts) for parts in
                                 zip(q.split(lengths, 1), k.split(lengths, 1), v.split(lengths, 1))], dim=1)
        return self.proj(out_HND.transpose(0, 1).reshape(n, -1))


def _rotate(x_NHd: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # In fp32 whatever the model's dtype, as transformers' apply_rotary_pos_emb_vision.
    x = x_NHd.float()
    return (x * cos[:, None] + rotate_half(x) * sin[:, None]).to(x_NHd.dtype)


class Qwen3VLMLP(nn.Module):
    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.linear_fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.linear_fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = activation_fn(config.hidden_act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_fc2(self.act(self.linear_fc1(x)))


class Qwen3VLBlock(nn.Module):
    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.hidden_size, eps=1e-6)
        self.norm2 = nn.LayerNorm(config.hidden_size, eps=1e-6)
        self.attn = Qwen3VLAttention(config)
        self.mlp = Qwen3VLMLP(config)

    def forward(self, x: torch.Tensor, lengths: list[int], cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), lengths, cos, sin)
        return x + self.mlp(self.norm2(x))


class Qwen3VLPatchMerger(nn.Module):
    """``m²`` consecutive patches -> one token: LayerNorm (per patch, or after the concatenation for the
    deepstack mergers: ``postshuffle_norm``), then ``linear_fc2(GELU(linear_fc1(.)))``."""

    def __init__(self, config: Qwen3VLVisionConfig, postshuffle_norm: bool):
        super().__init__()
        self.width = config.hidden_size * config.spatial_merge_size ** 2
        self.postshuffle_norm = postshuffle_norm
        self.norm = nn.LayerNorm(self.width if postshuffle_norm else config.hidden_size, eps=1e-6)
        self.linear_fc1 = nn.Linear(self.width, self.width)
        self.linear_fc2 = nn.Linear(self.width, config.out_hidden_size)

    def forward(self, x_ND: torch.Tensor) -> torch.Tensor:
        if self.postshuffle_norm:
            x = self.norm(x_ND.reshape(-1, self.width))
        else:
            x = self.norm(x_ND).reshape(-1, self.width)
        return self.linear_fc2(F.gelu(self.linear_fc1(x)))


@dataclass
class Qwen3VLVisionOutput:
    """What the tower gives the LLM side.

    Attributes:
        merged: ``(M, out_hidden_size)`` the visual tokens of all items, in ``grid_thw`` order (item ``i`` has
            ``t h w / m²`` of them: :attr:`token_counts`), each item's tokens in its frames' time order and
            row-major over the merge windows; they replace the ``<|image_pad|>`` / ``<|video_pad|>`` ids in order.
        deepstack: one ``(M, out_hidden_size)`` tensor per deepstack block, in block order (which is
            ``sorted(deepstack_visual_indexes)``), aligned row for row with ``merged``; the LLM adds entry ``k``
            to its hidden states at the visual tokens after its decoder layer ``k``.
        grid_thw: ``(n, 3)`` the input grids (in patches, before merging).
        last_hidden_state: ``(N, hidden_size)`` the last block's output per patch, before the merger.
        spatial_merge_size: ``m``.
    """

    merged: torch.Tensor
    deepstack: list[torch.Tensor]
    grid_thw: torch.Tensor
    last_hidden_state: torch.Tensor
    spatial_merge_size: int

    @property
    def token_counts(self) -> list[int]:
        """Tokens per item (``t h w / m²``)."""
        return merged_token_counts(self.grid_thw, self.spatial_merge_size)

    def split(self) -> tuple[tuple[torch.Tensor, ...], list[tuple[torch.Tensor, ...]]]:
        """``(merged per item, [deepstack k per item])``, as transformers' ``get_image_features`` splits them."""
        counts = self.token_counts
        return self.merged.split(counts), [d.split(counts) for d in self.deepstack]


class Qwen3VLVisionEncoder(Encoder):
    """The Qwen3-VL vision tower over packed, variable-size images and videos.

    Unlike the fixed-size encoders, an item's token count depends on its grid (``t h w / m²``), so
    :attr:`num_tokens` is ``None`` and :meth:`forward` takes the processor's ``grid_thw`` beside the pixels. It
    is not a registered encoder kind: :class:`~moezoo.models.multimodal.MultimodalConfig` assumes a fixed token
    count per image; the Qwen3-VL model holds the tower itself.

    Example:
        >>> cfg = Qwen3VLVisionConfig(depth=2, hidden_size=32, num_heads=4, intermediate_size=64, patch_size=4,
        ...                           out_hidden_size=48, num_position_embeddings=16, deepstack_visual_indexes=[0])
        >>> tower = Qwen3VLVisionEncoder(cfg)
        >>> grid_thw = torch.tensor([[1, 4, 6], [2, 2, 2]])  # an image of 4 x 6 patches, a video of 2 x 2 x 2
        >>> out = tower(torch.randn(32, 3 * 2 * 4 * 4), grid_thw)
        >>> out.merged.shape, len(out.deepstack), out.token_counts
        (torch.Size([8, 48]), 1, [6, 2])
    """

    modality = "image"

    def __init__(self, config: Qwen3VLVisionConfig):
        super().__init__()
        self.config = config
        self.out_dim = config.out_hidden_size
        self.num_tokens = None  # per item: t h w / m² (merged_token_counts)
        self.patch_embed = Qwen3VLPatchEmbed(config)
        self.pos_embed = nn.Embedding(config.num_position_embeddings, config.hidden_size)
        self.num_grid_per_side = round(config.num_position_embeddings ** 0.5)
        quarter = config.head_dim // 2  # frequencies per axis: head_dim / 4
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, quarter, 2, dtype=torch.float) / quarter)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.blocks = nn.ModuleList(Qwen3VLBlock(config) for _ in range(config.depth))
        self.merger = Qwen3VLPatchMerger(config, postshuffle_norm=False)
        self.deepstack_merger_list = nn.ModuleList(
            Qwen3VLPatchMerger(config, postshuffle_norm=True) for _ in config.deepstack_visual_indexes)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """transformers' init of a fresh tower: normal(0, initializer_range) weights, zero biases, unit norms."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Conv3d, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def check_inputs(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> None:
        """Raise a ``ValueError`` saying what is wrong when ``pixel_values`` and ``grid_thw`` do not fit the tower."""
        c = self.config
        width = c.in_channels * c.temporal_patch_size * c.patch_size ** 2
        if grid_thw.ndim != 2 or grid_thw.shape[-1] != 3 or grid_thw.is_floating_point():
            raise ValueError(f"grid_thw must be an (n, 3) integer tensor of (t, h, w) per item, got "
                             f"{tuple(grid_thw.shape)} {grid_thw.dtype}")
        m = c.spatial_merge_size
        bad = [row for row in grid_thw.tolist() if min(row) < 1 or row[1] % m or row[2] % m]
        if bad:
            raise ValueError(f"grid_thw rows {bad} are not valid: t, h, w must be >= 1 and h, w multiples of "
                             f"spatial_merge_size={m}")
        expected = int(grid_thw.prod(-1).sum())
        if pixel_values.ndim != 2 or tuple(pixel_values.shape) != (expected, width):
            raise ValueError(f"pixel_values must be (sum of t*h*w = {expected}, C*T*P*P = {width}) for grid_thw "
                             f"{grid_thw.tolist()}, got {tuple(pixel_values.shape)}")

    def rotary(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(cos, sin)``, each ``(N, head_dim)``: rows' frequencies then columns', the whole repeated once."""
        freqs = positions[..., None].float() * self.inv_freq  # (N, 2, head_dim / 4)
        angles = freqs.flatten(1)  # (N, head_dim / 2): [row freqs | col freqs]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor,
                condition: torch.Tensor | None = None) -> Qwen3VLVisionOutput:
        """Encode packed images / videos.

        Args:
            pixel_values: ``(N, C * T * P * P)`` the processor's flattened patches of all items
                (``pixel_values`` or ``pixel_values_videos``), in merge-window order.
            grid_thw: ``(n, 3)`` ``(t, h, w)`` in patches per item (``image_grid_thw`` / ``video_grid_thw``),
                ``N = sum(t h w)``.
            condition: ignored (the tower is not prompt-conditioned).

        Returns:
            :class:`Qwen3VLVisionOutput`.
        """
        self.check_inputs(pixel_values, grid_thw)
        positions = merge_order_positions(grid_thw, self.config.spatial_merge_size)
        indices, weights = interpolation_taps(positions, grid_thw, self.num_grid_per_side)
        x_ND = self.patch_embed(pixel_values)
        pos_ND = (self.pos_embed(indices) * weights[..., None]).sum(1)
        x_ND = x_ND + pos_ND.to(x_ND.dtype)
        cos, sin = self.rotary(positions)
        lengths = torch.repeat_interleave(grid_thw[:, 1] * grid_thw[:, 2], grid_thw[:, 0]).tolist()  # per frame
        tapped = {layer: k for k, layer in enumerate(self.config.deepstack_visual_indexes)}
        deepstack = []
        for layer, block in enumerate(self.blocks):
            x_ND = block(x_ND, lengths, cos, sin)
            if layer in tapped:
                deepstack.append(self.deepstack_merger_list[tapped[layer]](x_ND))
        return Qwen3VLVisionOutput(self.merger(x_ND), deepstack, grid_thw, x_ND, self.config.spatial_merge_size)

    def preprocess_spec(self) -> dict[str, Any]:
        """``{"kind": "qwen_vl", "image": {...}, "video": {...}}``: transformers' ``Qwen2VLImageProcessor`` and
        ``Qwen3VLVideoProcessor`` settings of the Qwen3-VL checkpoints, at this tower's patch and merge sizes
        (:mod:`moezoo.processing.qwen_vl` builds them)."""
        from moezoo.processing.qwen_vl import qwen3_vl_spec

        c = self.config
        return qwen3_vl_spec(c.patch_size, c.temporal_patch_size, c.spatial_merge_size)
