"""A video encoder: sampled frames through an image encoder, pooled in time or concatenated.

Video-LLaVA (arXiv 2311.10122) and Uni-MoE (arXiv 2405.11273) encode a video as a few
uniformly sampled frames, each through the image tower. ``"frames"`` keeps every
frame's tokens in time order (Video-LLaVA: ``F * T`` tokens, the LLM sees the motion);
``"pool"`` averages them over time (``T`` tokens, as cheap as one image, the pooling of
Video-ChatGPT's spatial features).

The image encoder is shared, not copied: the video path trains and upcycles the same
weights as the image path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from moezoo.models.encoders.base import Encoder
from moezoo.utils.checks import check_min, require
from moezoo.utils.config import Config

MODES = ("pool", "frames")


@dataclass
class VideoConfig(Config):
    """How videos are encoded.

    Args:
        num_frames: frames sampled per video (``F``); the processor and the encoder agree on it.
        mode: ``"pool"`` (mean over frames, ``T`` tokens) or ``"frames"`` (all frames'
            tokens concatenated in time order, ``F * T`` tokens).

    Example:
        >>> VideoConfig(num_frames=4, mode="frames").to_dict()
        {'num_frames': 4, 'mode': 'frames'}
        >>> VideoConfig(mode="mean")
        Traceback (most recent call last):
        ...
        ValueError: VideoConfig.mode='mean' must be one of ('pool', 'frames')
    """

    num_frames: int = 8
    mode: str = "pool"

    def __post_init__(self) -> None:
        check_min(self, num_frames=1)
        require(self, "mode", self.mode in MODES, f"must be one of {MODES}")


class VideoEncoder(nn.Module):
    """``pixel_values_videos (N, F, C, H, W)`` -> ``(N, T, D)`` (``pool``) or ``(N, F * T, D)`` (``frames``).

    Args:
        config: a :class:`VideoConfig`.
        image_encoder: the image :class:`~moezoo.models.encoders.base.Encoder` the frames go
            through; held by reference, so its weights are shared with the image path.

    Attributes:
        modality: ``"video"``.
        out_dim: the image encoder's width ``D``.
        num_tokens: tokens per video: ``T`` or ``F * T``.
        conditioned: whether the image encoder reads ``condition``.

    Example:
        >>> class Flat(Encoder):  # a stand-in image encoder: one token of 12 pixels
        ...     out_dim, num_tokens = 12, 1
        ...     def forward(self, x, condition=None):
        ...         return x.flatten(1)[:, None]
        >>> video = VideoEncoder(VideoConfig(num_frames=2, mode="frames"), Flat())
        >>> video(torch.zeros(5, 2, 3, 2, 2)).shape, video.num_tokens
        (torch.Size([5, 2, 12]), 2)
    """

    modality = "video"

    def __init__(self, config: VideoConfig, image_encoder: Encoder):
        super().__init__()
        self.config = config
        self.image_encoder = image_encoder
        self.out_dim = image_encoder.out_dim
        self.conditioned = image_encoder.conditioned
        per_frame = image_encoder.num_tokens
        self.num_tokens = per_frame if config.mode == "pool" else config.num_frames * per_frame

    def pool_condition(self, prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The image encoder's pooling of the prompt."""
        return self.image_encoder.pool_condition(prompt, mask)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``x (N, F, C, H, W)`` -> ``(N, num_tokens, out_dim)``; ``condition (N, Dc)`` is given to every frame."""
        frames = self.config.num_frames
        if x.dim() != 5 or x.shape[1] != frames:
            raise ValueError(f"expected pixel_values_videos of shape (N, {frames}, C, H, W), got {tuple(x.shape)}")
        n = x.shape[0]
        if condition is not None and self.conditioned:
            condition = condition.repeat_interleave(frames, dim=0)  # (N*F, Dc), row n*F + f for frame f of video n
        # One (N*F)-image batch through the tower: one kernel launch per layer, not one per frame.
        feats_BTD = self.image_encoder(x.flatten(0, 1), condition if self.conditioned else None)
        feats_NFTD = feats_BTD.unflatten(0, (n, frames))
        if self.config.mode == "pool":
            return feats_NFTD.mean(dim=1)
        return feats_NFTD.flatten(1, 2)
