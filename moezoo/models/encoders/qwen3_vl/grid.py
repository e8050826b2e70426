"""Per-patch bookkeeping of packed Qwen-VL inputs, from ``grid_thw`` alone: token counts, patch positions in
merge-window order, and the bilinear taps that resample the learned position grid (transformers'
``vision_utils.get_vision_position_ids`` / ``get_vision_interpolation_indices_and_weights``)."""

from __future__ import annotations

import torch

from moezoo.processing.qwen_vl import merged_token_counts  # noqa: F401  (re-exported: the tower counts alike)


def merge_order_positions(grid_thw: torch.Tensor, spatial_merge_size: int) -> torch.Tensor:
    """``(N, 2)`` long: each patch's ``(row, col)`` in its frame, in the processor's merge-window order.

    Rows of an item are its frames in time order; in a frame, the ``m × m`` windows go row-major and so do
    the patches inside a window (transformers' ``get_vision_position_ids``).

    Example:
        >>> merge_order_positions(torch.tensor([[1, 2, 4]]), 2).T
        tensor([[0, 0, 1, 1, 0, 0, 1, 1],
                [0, 1, 0, 1, 2, 3, 2, 3]])
    """
    m = spatial_merge_size
    out = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h, device=grid_thw.device).view(h // m, 1, m, 1).expand(h // m, w // m, m, m)
        cols = torch.arange(w, device=grid_thw.device).view(1, w // m, 1, m).expand(h // m, w // m, m, m)
        out.append(torch.stack([rows.reshape(-1), cols.reshape(-1)], dim=-1).repeat(t, 1))
    return torch.cat(out)


def interpolation_taps(positions: torch.Tensor, grid_thw: torch.Tensor, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear resampling of a ``side × side`` table to each frame's ``(h, w)`` grid, as gather taps.

    ``F.interpolate(mode="bilinear", align_corners=True)`` written per output patch: the patch at
    ``(row, col)`` of an ``h × w`` frame sits at ``row * (side - 1) / (h - 1)`` in the table (0 when ``h = 1``),
    between rows ``floor`` and ``floor + 1`` (clamped to the border), weighted by the distance; the same on
    columns. transformers' ``get_vision_interpolation_indices_and_weights`` computes the same numbers.

    Args:
        positions: ``(N, 2)`` from :func:`merge_order_positions`.
        grid_thw: ``(n, 3)`` the items' grids.
        side: the table's side (``sqrt(num_position_embeddings)``).

    Returns:
        ``(indices (N, 4), weights (N, 4))``: rows of the flattened table and their weights (summing to 1).
    """
    counts = grid_thw.prod(-1)
    sizes = torch.repeat_interleave(grid_thw[:, 1:], counts, dim=0)  # (N, 2) the frame's (h, w) per patch
    src = positions.float() * (side - 1) / (sizes - 1).clamp(min=1)
    floor = src.floor()
    offsets = torch.arange(2, device=positions.device)
    taps = (floor.long()[..., None] + offsets).clamp(0, side - 1)  # (N, 2 axes, 2 taps)
    weights = (1 - (src[..., None] - floor[..., None] - offsets).abs()).clamp(min=0)
    indices = taps[:, 0, :, None] * side + taps[:, 1, None, :]  # (N, 2, 2): (row tap, col tap)
    return indices.reshape(-1, 4), (weights[:, 0, :, None] * weights[:, 1, None, :]).reshape(-1, 4)
