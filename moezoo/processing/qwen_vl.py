"""Qwen-VL image and video preprocessing, with transformers' own processors, and the placeholder expansion.

Qwen2-VL / Qwen3-VL feed images at (nearly) their own resolution: ``smart_resize`` rounds each side to a
multiple of ``patch_size * merge_size`` keeping the pixel count in ``[shortest_edge, longest_edge]`` (the
``min_pixels`` / ``max_pixels`` of older configs), then the image is cut into patches, flattened as
``(N, C * T * P * P)`` rows in merge-window order (a still image repeated over the ``temporal_patch_size``
frames) and described by ``grid_thw = (t, h, w)`` in patches. Videos are sampled at ``fps`` frames per second
(at least ``min_frames``), resized jointly and patched every ``temporal_patch_size`` frames.

This module never re-implements those steps: it builds transformers' ``Qwen2VLImageProcessor`` (the class
Qwen3-VL's ``preprocessor_config.json`` names, as ``Qwen2VLImageProcessorFast``) and ``Qwen3VLVideoProcessor``
from their config dicts (no download) and calls them, so ``pixel_values`` and ``grid_thw`` are transformers'.
Inputs go through :func:`~moezoo.processing.image.to_rgb_image` first, like every other moezoo image.

The text side follows ``Qwen3VLProcessor``: an image's ``<|image_pad|>`` becomes ``t h w / merge²`` copies; a
video's ``<|video_pad|>`` becomes, for each temporal patch, ``<{seconds:.1f} seconds><|vision_start|>`` +
``h w / merge²`` ``<|video_pad|>`` + ``<|vision_end|>``, the seconds being the mean time of the patch's frames.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from moezoo.processing.image import to_rgb_image
from moezoo.processing.video import VideoClip, probe_video, read_frames

IMAGE_TOKEN, VIDEO_TOKEN = "<|image_pad|>", "<|video_pad|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
# transformers' fallback frame rate when a video's own is unknown (Qwen3VLProcessor and the video processor).
UNKNOWN_FPS = 24

# Qwen/Qwen3-VL-30B-A3B-Instruct's preprocessor_config.json and video_preprocessor_config.json (patch 16,
# merge 2, temporal 2, mean = std = 0.5); the video processor samples 2 frames a second by its class default.
QWEN3_VL_IMAGE = {"size": {"shortest_edge": 65536, "longest_edge": 16777216}, "patch_size": 16,
                  "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                  "image_std": [0.5, 0.5, 0.5]}
QWEN3_VL_VIDEO = {"size": {"shortest_edge": 4096, "longest_edge": 25165824}, "patch_size": 16,
                  "temporal_patch_size": 2, "merge_size": 2, "image_mean": [0.5, 0.5, 0.5],
                  "image_std": [0.5, 0.5, 0.5], "cap_pixels_per_frame": False}


def qwen3_vl_spec(patch_size: int = 16, temporal_patch_size: int = 2, merge_size: int = 2) -> dict[str, Any]:
    """The preprocessing spec of a Qwen3-VL tower: the checkpoints' processor settings at its patch sizes.

    Example:
        >>> spec = qwen3_vl_spec(patch_size=14)
        >>> spec["kind"], spec["image"]["patch_size"], spec["video"]["merge_size"]
        ('qwen_vl', 14, 2)
    """
    sizes = {"patch_size": patch_size, "temporal_patch_size": temporal_patch_size, "merge_size": merge_size}
    return {"kind": "qwen_vl", "image": {**QWEN3_VL_IMAGE, **sizes}, "video": {**QWEN3_VL_VIDEO, **sizes}}


class QwenVLImageProcessor:
    """Images -> ``{"pixel_values": (N, C*T*P*P), "image_grid_thw": (n, 3)}`` with ``Qwen2VLImageProcessor``.

    Args:
        config: the transformers image-processor dict (a checkpoint's ``preprocessor_config.json``);
            default :data:`QWEN3_VL_IMAGE`.

    Example:
        >>> from PIL import Image
        >>> proc = QwenVLImageProcessor({**QWEN3_VL_IMAGE, "size": {"shortest_edge": 1024, "longest_edge": 4096}})
        >>> out = proc([Image.new("RGB", (40, 30)), Image.new("L", (64, 64))])
        >>> out["image_grid_thw"].tolist(), out["pixel_values"].shape, proc.num_tokens(out["image_grid_thw"])
        ([[1, 2, 2], [1, 4, 4]], torch.Size([20, 1536]), [1, 4])
    """

    def __init__(self, config: dict[str, Any] | None = None):
        from transformers import Qwen2VLImageProcessor

        self.config = dict(QWEN3_VL_IMAGE if config is None else config)
        settings = {k: v for k, v in self.config.items() if k not in ("image_processor_type", "processor_class")}
        self.processor = Qwen2VLImageProcessor.from_dict(settings)
        self.merge_size = int(self.processor.merge_size)

    def __call__(self, images: Sequence[Any] | Any) -> dict[str, torch.Tensor]:
        """Preprocess a list of images (a single image is a list of one); items keep their order."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            width = 3 * self.processor.temporal_patch_size * self.processor.patch_size ** 2
            return {"pixel_values": torch.zeros(0, width), "image_grid_thw": torch.zeros(0, 3, dtype=torch.long)}
        rgb = [to_rgb_image(image, index) for index, image in enumerate(images)]
        out = self.processor(rgb, return_tensors="pt")
        return {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]}

    def num_tokens(self, grid_thw: torch.Tensor) -> list[int]:
        """``<|image_pad|>`` tokens per image: ``t h w / merge²``."""
        return merged_token_counts(grid_thw, self.merge_size)

    def placeholders(self, grid_thw: torch.Tensor) -> list[str]:
        """The text each image's ``<|image_pad|>`` becomes (``Qwen3VLProcessor.replace_image_token``)."""
        return [IMAGE_TOKEN * n for n in self.num_tokens(grid_thw)]


class QwenVLVideoProcessor:
    """Videos -> ``pixel_values_videos``, ``video_grid_thw`` and per-patch timestamps, with ``Qwen3VLVideoProcessor``.

    A video is a list of frames (PIL images, ``(H, W[, C])`` uint8 arrays, ``(C, H, W)`` tensors), one
    ``(F, H, W, C)`` uint8 array, a video file's path, or a :class:`~moezoo.processing.video.VideoClip`. The
    frames are sampled as transformers samples a decoded video (the processor's ``fps`` frames a second, at
    least ``min_frames``, ``linspace``-spaced) from the video's own frame rate, which transformers takes as 24
    when it is unknown; the timestamps use the same rate. A file is read by :meth:`read`, which decodes only
    the frames that sampling picks (the same frames, so the same pixels and timestamps); a clip's frames are
    taken as sampled, stamped by their indices in the file.

    Args:
        config: the transformers video-processor dict (``video_preprocessor_config.json``); default
            :data:`QWEN3_VL_VIDEO`.

    Example:
        >>> proc = QwenVLVideoProcessor({**QWEN3_VL_VIDEO, "size": {"shortest_edge": 1024, "longest_edge": 65536}})
        >>> out = proc([np.zeros((8, 32, 32, 3), np.uint8)], fps=[4.0])  # 2 s at 4 fps -> 4 frames at 2 fps
        >>> out["video_grid_thw"].tolist(), out["timestamps"]
        ([[2, 2, 2]], [[0.25, 1.5]])
    """

    def __init__(self, config: dict[str, Any] | None = None):
        from transformers import Qwen3VLVideoProcessor

        self.config = dict(QWEN3_VL_VIDEO if config is None else config)
        settings = {k: v for k, v in self.config.items() if k not in ("video_processor_type", "processor_class")}
        settings.setdefault("cap_pixels_per_frame", False)  # transformers' current default, said explicitly
        self.processor = Qwen3VLVideoProcessor.from_dict(settings)
        self.merge_size = int(self.processor.merge_size)
        self.temporal_patch_size = int(self.processor.temporal_patch_size)

    def __call__(self, videos: Sequence[Any], fps: Sequence[float | None] | float | None = None,
                 sample_frames: bool = True) -> dict[str, Any]:
        """Preprocess a list of videos.

        Args:
            videos: the videos, each a list of frames or an ``(F, H, W, C)`` uint8 array.
            fps: the frame rate of each video's frames (one number for all); ``None``: unknown, taken as 24
                as transformers does.
            sample_frames: sample the frames at the processor's ``fps`` (transformers' ``do_sample_frames``);
                ``False`` keeps every given frame (frames you sampled yourself).

        Returns:
            ``pixel_values_videos (N, C*T*P*P)``, ``video_grid_thw (n, 3)``, ``timestamps`` (per video, the
            seconds of each temporal patch) and ``frame_indices`` (per video, the frames used).
        """
        rates = list(fps) if isinstance(fps, (list, tuple)) else [fps] * len(videos)
        if len(rates) != len(videos):
            raise ValueError(f"got {len(videos)} videos but {len(rates)} fps values; give one per video")
        pixels, grids, stamps, indices = [], [], [], []
        for index, (video, rate) in enumerate(zip(videos, rates)):
            if isinstance(video, (str, os.PathLike)):
                video = self.read(video)
            sample = sample_frames
            if isinstance(video, VideoClip):  # frames already sampled, stamped by where they sit in the file
                rate = video.fps if rate is None else rate
                rate = UNKNOWN_FPS if rate is None else float(rate)
                frames, sample = _frames(video.frames, index), False
                metadata = {"total_num_frames": video.total_frames, "fps": rate, "frames_indices": list(video.indices)}
            else:
                frames = _frames(video, index)
                rate = UNKNOWN_FPS if rate is None else float(rate)
                metadata = {"total_num_frames": len(frames), "fps": rate, "frames_indices": list(range(len(frames)))}
            out = self.processor(videos=[frames], video_metadata=[metadata], do_sample_frames=sample,
                                 return_metadata=True, return_tensors="pt")
            used = [int(i) for i in out["video_metadata"][0].frames_indices]
            pixels.append(out["pixel_values_videos"])
            grids.append(out["video_grid_thw"])
            stamps.append(timestamps(used, rate, self.temporal_patch_size))
            indices.append(used)
        width = 3 * self.temporal_patch_size * self.processor.patch_size ** 2
        return {"pixel_values_videos": torch.cat(pixels) if pixels else torch.zeros(0, width),
                "video_grid_thw": torch.cat(grids) if grids else torch.zeros(0, 3, dtype=torch.long),
                "timestamps": stamps, "frame_indices": indices}

    def read(self, path: str | os.PathLike) -> VideoClip:
        """The frames of a video file this processor samples (its ``fps`` from the file's own rate, by
        transformers' ``Qwen3VLVideoProcessor.sample_frames``), decoded with PyAV; the rest are never decoded."""
        from transformers.video_utils import VideoMetadata

        total, rate = probe_video(path)
        metadata = VideoMetadata(total_num_frames=total, fps=UNKNOWN_FPS if rate is None else rate)
        indices = [int(i) for i in self.processor.sample_frames(metadata)]
        return VideoClip(read_frames(path, indices), indices, rate, total)

    def num_tokens(self, grid_thw: torch.Tensor) -> list[int]:
        """``<|video_pad|>`` tokens per video: ``t h w / merge²``."""
        return merged_token_counts(grid_thw, self.merge_size)

    def placeholders(self, grid_thw: torch.Tensor, stamps: list[list[float]]) -> list[str]:
        """The text each video's ``<|video_pad|>`` becomes (``Qwen3VLProcessor.replace_video_token``)."""
        out = []
        for (t, h, w), seconds in zip(grid_thw.tolist(), stamps):
            frame = VISION_START + VIDEO_TOKEN * (h * w // self.merge_size ** 2) + VISION_END
            out.append("".join(f"<{seconds[i]:.1f} seconds>" + frame for i in range(t)))
        return out


def merged_token_counts(grid_thw: torch.Tensor, spatial_merge_size: int) -> list[int]:
    """Output tokens of each item: ``t * h * w / m²`` (the number of ``<|image_pad|>`` / ``<|video_pad|>``).

    Example:
        >>> merged_token_counts(torch.tensor([[1, 4, 6], [3, 8, 4]]), 2)
        [6, 24]
    """
    return (grid_thw.prod(-1) // spatial_merge_size ** 2).tolist()


def mm_token_types(input_ids: torch.Tensor, image_token_id: int, video_token_id: int) -> torch.Tensor:
    """transformers' ``mm_token_type_ids`` of ``input_ids``: 0 text, 1 ``<|image_pad|>``, 2 ``<|video_pad|>``
    (``ProcessorMixin.create_mm_token_type_ids``).

    Example:
        >>> mm_token_types(torch.tensor([[5, 9, 9, 6, 8]]), image_token_id=9, video_token_id=8).tolist()
        [[0, 1, 1, 0, 2]]
    """
    types = torch.zeros_like(input_ids)
    return types.masked_fill(input_ids == image_token_id, 1).masked_fill(input_ids == video_token_id, 2)


def timestamps(frame_indices: Sequence[int], fps: float, temporal_patch_size: int) -> list[float]:
    """Seconds of each temporal patch: the mean time of its first and last frame (the last frame repeated to
    fill the final patch), as ``Qwen3VLProcessor._calculate_timestamps``.

    Example:
        >>> timestamps([0, 4, 8], fps=4.0, temporal_patch_size=2)
        [0.5, 2.0]
    """
    indices = list(frame_indices)
    indices += [indices[-1]] * (-len(indices) % temporal_patch_size)
    seconds = [i / fps for i in indices]
    step = temporal_patch_size
    return [(seconds[i] + seconds[i + step - 1]) / 2 for i in range(0, len(seconds), step)]


def _frames(video: Any, index: int) -> np.ndarray:
    """One video as an ``(F, H, W, 3)`` uint8 RGB array."""
    if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim == 4:
        video = list(video)
    if not isinstance(video, (list, tuple)) or not video:
        raise ValueError(f"video {index} must be a non-empty list of frames or an (F, H, W, C) array, "
                         f"got {type(video).__name__}")
    frames = [np.asarray(to_rgb_image(frame, i)) for i, frame in enumerate(video)]
    if len({f.shape for f in frames}) != 1:
        raise ValueError(f"the frames of video {index} differ in size: {sorted({f.shape for f in frames})}")
    return np.stack(frames)
