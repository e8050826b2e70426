"""Video input: sample frames uniformly, decode them with PyAV, and preprocess each as an image.

Video-LLaVA (Lin et al. 2023, arXiv 2311.10122) and Uni-MoE (arXiv 2405.11273) feed a
video to the LLM as a fixed number of frames spread uniformly over the clip, each
preprocessed exactly as a still image for the same image encoder. Here a video is a
list of frames (PIL images, ``(H, W, C)`` uint8 arrays or ``(C, H, W)`` tensors) or a
file path, decoded through PyAV (the optional ``moezoo[video]`` extra).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

Video = Union[str, os.PathLike, Sequence[Any], np.ndarray, torch.Tensor]


def sample_frame_indices(num_frames_total: int, num_frames: int) -> list[int]:
    """``num_frames`` frame indices spread uniformly over a clip of ``num_frames_total`` frames.

    The clip is cut into ``num_frames`` equal segments and the frame at the centre of
    each is taken: index ``i`` is ``floor((i + 0.5) * num_frames_total / num_frames)``.
    The samples sit symmetric in the clip, in time order, and keep clear of the first
    and last frames (often black, or a fade) when the clip has frames to spare. A clip with fewer frames than
    requested repeats frames by the same rule (nearest-neighbour stretching:
    ``[0, 0, 1, 1, 2, 2]`` for 3 frames stretched to 6), so every video yields exactly
    ``num_frames`` frames and the encoder's token count never changes.

    Example:
        >>> sample_frame_indices(100, 4)
        [12, 37, 62, 87]
        >>> sample_frame_indices(3, 6)
        [0, 0, 1, 1, 2, 2]
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames_total < 1:
        raise ValueError(f"the video has no frames (num_frames_total={num_frames_total})")
    # Integer arithmetic: (2i + 1) * total // (2 * num_frames) is the exact floor, with no float rounding.
    return [(2 * i + 1) * num_frames_total // (2 * num_frames) for i in range(num_frames)]


def _import_av():
    try:
        import av
    except ImportError:
        raise ImportError("reading video files needs PyAV: `pip install av` (or `pip install 'moezoo[video]'`); "
                          "a video given as a list of frames needs nothing extra") from None
    return av


@dataclass
class VideoClip:
    """Frames decoded from a video file, with where they sit in it: what a processor that samples by time
    (Qwen3-VL's, at its ``fps``) needs to stamp them.

    Attributes:
        frames: ``(H, W, 3)`` uint8 RGB frames, in time order.
        indices: each frame's index in the file.
        fps: the file's average frame rate; ``None`` when the container does not say.
        total_frames: the file's frame count.
    """

    frames: list[np.ndarray]
    indices: list[int]
    fps: float | None
    total_frames: int


def probe_video(path: str | os.PathLike) -> tuple[int, float | None]:
    """``(frames, average fps)`` of a video file, from the container's header, or from counting packets
    (no decoding) when the header has no count; the rate is ``None`` when the container gives none.
    """
    av = _import_av()
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no video file {path!r}")
    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path!r} has no video stream")
        stream = container.streams.video[0]
        total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
        rate = stream.average_rate
    return total, (float(rate) if rate else None)


def read_frames(path: str | os.PathLike, indices: Sequence[int]) -> list[np.ndarray]:
    """The frames at ``indices`` (sorted, repeats allowed) of a video file, as ``(H, W, 3)`` uint8 RGB arrays.

    Frames are decoded in order and only the wanted ones are converted to RGB; decoding stops after the last
    one. A stream that ends before an index (a header that over-counts) gives its last frame there.
    """
    av = _import_av()
    path = os.fspath(path)
    if not indices:
        raise ValueError(f"no frame indices to read from {path!r}")
    wanted, last_index = set(indices), max(indices)
    decoded: dict[int, np.ndarray] = {}
    last_frame = None
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            last_frame = frame
            if i in wanted:
                decoded[i] = frame.to_ndarray(format="rgb24")
            if i >= last_index:
                break
    if last_frame is None:
        raise ValueError(f"no frame of {path!r} could be decoded")
    # Decoding is sequential, so an index not reached lies past the stream's real end.
    tail = last_frame.to_ndarray(format="rgb24") if wanted - decoded.keys() else None
    return [decoded.get(i, tail) for i in indices]


def read_video(path: str | os.PathLike, num_frames: int) -> list[np.ndarray]:
    """Decode ``num_frames`` uniformly sampled frames (:func:`sample_frame_indices`) of a video file
    (:func:`probe_video`, then :func:`read_frames`).

    Args:
        path: a video file PyAV (FFmpeg) can open: MP4, MKV, WebM, AVI, ...
        num_frames: frames to return.

    Returns:
        ``num_frames`` RGB frames, each a ``(H, W, 3)`` uint8 array, in time order.
    """
    total, _ = probe_video(path)
    return read_frames(path, sample_frame_indices(total, num_frames))


class VideoProcessor:
    """Videos -> ``pixel_values_videos (N, num_frames, 3, H, W)``, every frame through an image processor.

    Args:
        image_processor: maps a list of images to ``(n, 3, H, W)`` (the image encoder's
            processor from :mod:`moezoo.processing.image`), so frames get exactly the
            preprocessing of still images.
        num_frames: frames per video, sampled by :func:`sample_frame_indices`.

    Example:
        >>> to_tensor = lambda frames: torch.stack([torch.as_tensor(f).permute(2, 0, 1) / 255.0 for f in frames])
        >>> proc = VideoProcessor(to_tensor, num_frames=4)
        >>> proc([np.zeros((10, 8, 8, 3), np.uint8)]).shape
        torch.Size([1, 4, 3, 8, 8])
    """

    def __init__(self, image_processor: Callable[[list], torch.Tensor], num_frames: int):
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        self.image_processor = image_processor
        self.num_frames = num_frames

    def frames(self, video: Video, index: int = 0) -> list:
        """The ``num_frames`` sampled frames of one video (a path is decoded); ``index`` names it in errors."""
        if isinstance(video, (str, os.PathLike)):
            return read_video(video, self.num_frames)
        if isinstance(video, (np.ndarray, torch.Tensor)) and video.ndim != 4:
            raise ValueError(f"video {index}: expected a frame stack of 4 dims ((F, H, W, C) array or "
                             f"(F, C, H, W) tensor), got shape {tuple(video.shape)}")
        if len(video) == 0:
            raise ValueError(f"video {index} has no frames")
        return [video[i] for i in sample_frame_indices(len(video), self.num_frames)]

    def __call__(self, videos: Sequence[Video]) -> torch.Tensor:
        """``pixel_values_videos (len(videos), num_frames, 3, H, W)`` float32."""
        out = []
        for index, video in enumerate(videos):
            pixels = self.image_processor(self.frames(video, index))
            if pixels.dim() != 4 or pixels.shape[0] != self.num_frames:
                raise ValueError(f"video {index}: the image processor gave {tuple(pixels.shape)} for "
                                 f"{self.num_frames} frames; expected ({self.num_frames}, 3, H, W)")
            out.append(pixels)
        if not out:
            size = getattr(self.image_processor, "size", None)
            if size is None:
                raise ValueError("no videos given, and the image processor has no `size` to shape an empty batch")
            return torch.zeros(0, self.num_frames, 3, *size)
        return torch.stack(out)
