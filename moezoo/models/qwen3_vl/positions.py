"""Qwen3-VL's 3-D RoPE positions (time, height, width) of a token sequence with images and videos.

As transformers 5.24's ``Qwen3VLMoeModel.get_rope_index`` / ``get_vision_position_ids``: over each row's real
tokens (left padding skipped), the runs of equal ``mm_token_type_ids`` (0 text, 1 image, 2 video) are placed one
after the other. A text run of ``n`` tokens takes ``p, p+1, ..., p+n-1`` on all three axes and moves ``p`` by ``n``;
a vision run takes the next grid of its modality, ``(t, h, w)`` in patches, and its ``t * h/m * w/m`` merged
tokens (``m`` the spatial merge size) the positions ``(p + i_t, p + i_h, p + i_w)``, then ``p`` moves by
``max(h, w) / m``. A video is split into its ``t`` frames, each a grid of ``t = 1``: the processor writes each
frame's tokens as their own run, behind a timestamp (``<1.5 seconds><|vision_start|>...<|vision_end|>``), so the
timestamps' text tokens carry the time and every frame starts at the position after them.
"""

from __future__ import annotations

import itertools

import torch


def split_video_grids(video_grid_thw: torch.Tensor | None) -> torch.Tensor | None:
    """Each ``(t, h, w)`` video grid as ``t`` frame grids ``(1, h, w)`` (one per timestamped run of tokens).

    Example:
        >>> split_video_grids(torch.tensor([[2, 4, 6]])).tolist()
        [[1, 4, 6], [1, 4, 6]]
    """
    if video_grid_thw is None:
        return None
    grids = torch.repeat_interleave(video_grid_thw, video_grid_thw[:, 0], dim=0)
    grids[:, 0] = 1
    return grids


def vision_positions(start: int, grid_thw: list[int], merge: int) -> torch.Tensor:
    """``(3, t * h/m * w/m)`` positions of one item's merged tokens, in the tower's (time, row, column) order.

    Example:
        >>> vision_positions(5, [1, 4, 6], merge=2).tolist()
        [[5, 5, 5, 5, 5, 5], [5, 5, 5, 6, 6, 6], [5, 6, 7, 5, 6, 7]]
    """
    t, h, w = grid_thw[0], grid_thw[1] // merge, grid_thw[2] // merge
    grid = torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij")
    return torch.stack(grid).reshape(3, -1) + start


def rope_positions(input_ids: torch.Tensor, mm_token_type_ids: torch.Tensor, image_grid_thw: torch.Tensor | None,
                   video_grid_thw: torch.Tensor | None, attention_mask: torch.Tensor | None,
                   spatial_merge_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(position_ids (3, B, T), rope_deltas (B, 1))``, as transformers' ``get_rope_index``.

    Padding keeps position 0. ``rope_deltas`` is ``max position + 1 - real tokens`` per row: a token generated
    after the prompt sits at its index among the real tokens plus the delta, on all three axes.

    Raises:
        ValueError: the runs of image / video tokens need more grids than are given.

    Example:
        >>> from moezoo.processing.qwen_vl import mm_token_types
        >>> ids = torch.tensor([[1, 9, 9, 9, 9, 9, 9, 2]])  # text, an image of 4 x 6 patches (6 tokens), text
        >>> pos, delta = rope_positions(ids, mm_token_types(ids, 9, 8), torch.tensor([[1, 4, 6]]), None, None, 2)
        >>> pos[:, 0].tolist(), delta.tolist()
        ([[0, 1, 1, 1, 1, 1, 1, 4], [0, 1, 1, 1, 2, 2, 2, 4], [0, 1, 2, 3, 1, 2, 3, 4]], [[-3]])
    """
    B, T = input_ids.shape
    grids = {1: iter(image_grid_thw.tolist() if image_grid_thw is not None else []),
             2: iter(split_video_grids(video_grid_thw).tolist() if video_grid_thw is not None else [])}
    names = {1: "image_grid_thw", 2: "video_grid_thw"}
    position_ids = torch.zeros(3, B, T, dtype=torch.long)
    deltas = []
    types_BT = mm_token_type_ids.cpu()  # one copy to the host for the whole batch
    keep_BT = attention_mask.bool().cpu() if attention_mask is not None else torch.ones(B, T, dtype=torch.bool)
    for b in range(B):
        keep = keep_BT[b]
        types = types_BT[b][keep].tolist()
        parts, p = [], 0
        for kind, run in itertools.groupby(types):
            n = len(list(run))
            if kind == 0:
                parts.append(torch.arange(p, p + n).expand(3, n))
                p += n
                continue
            grid = next(grids[kind], None)
            if grid is None:
                raise ValueError(f"row {b} has more runs of {'image' if kind == 1 else 'video'} tokens than "
                                 f"{names[kind]} has grids (a video needs one grid row per video, split by frame)")
            parts.append(vision_positions(p, grid, spatial_merge_size))
            p += max(grid[1], grid[2]) // spatial_merge_size
        row = torch.cat(parts, dim=1) if parts else torch.zeros(3, 0, dtype=torch.long)
        if row.shape[1] != len(types):
            raise ValueError(f"row {b}: its image / video token runs hold {len(types)} tokens but their grids "
                             f"give {row.shape[1]} positions; the placeholders must be expanded per grid")
        position_ids[:, b, keep] = row
        deltas.append((int(row.max()) + 1 if row.numel() else 0) - len(types))
    return position_ids.to(input_ids.device), torch.tensor(deltas, device=input_ids.device)[:, None]
