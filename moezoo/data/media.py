"""The members of a webdataset sample that hold its media, and image decoding.

**Sample layout.** A chat sample is ``KEY.json`` with LLaVA ``conversations`` whose turns
place each medium with a placeholder (``<image>``, ``<audio>``, ``<video>``), plus one
member per medium, named by webdataset's ``KEY.EXT`` rule:

* one medium of a kind: ``KEY.png`` (or ``jpg``, ``jpeg``, ``webp``, ``bmp``), ``KEY.wav``
  (or ``flac``), ``KEY.mp4`` (or ``webm``, ``mkv``, ``avi``, ``mov``), or a video as frames
  ``KEY.frames.0.png``, ``KEY.frames.1.png``, ...;
* several: the same with a leading index, in placeholder order: ``KEY.0.png``,
  ``KEY.1.png``; ``KEY.0.wav``; ``KEY.0.mp4`` or ``KEY.0.frames.0.png``, ... Indices run
  0, 1, ... with no gap; frames are ordered by their number and sampled uniformly to the
  processor's ``video_frames``. A processor that samples by time (Qwen3-VL's: its ``fps`` from the
  file's own rate) decodes a video file's frames its own way (``read_video_file``); frames given as
  images have no rate, so it takes transformers' 24 fps for them.

The text must hold one placeholder per medium (a single image without a placeholder is
put before the first user turn, as LLaVA does). Audio is read with
:func:`moezoo.processing.audio.load_audio` at its own sample rate and resampled by the
processor; an mp4 is decoded through :mod:`moezoo.processing.video` (PyAV). A text
sample is ``KEY.txt``, cut into ``max_length`` windows.
"""

from __future__ import annotations

import re
from typing import Any

from moezoo.data.robust import SampleError
from moezoo.processing.processor import MODALITIES

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp")
AUDIO_EXTS = ("wav", "flac")
VIDEO_EXTS = ("mp4", "webm", "mkv", "avi", "mov")


def _member_re(exts: tuple[str, ...], middle: str = "") -> re.Pattern:
    return re.compile(rf"^(?:(\d+)\.)?{middle}({'|'.join(exts)})$")


_MEMBERS = {"image": _member_re(IMAGE_EXTS), "audio": _member_re(AUDIO_EXTS), "video": _member_re(VIDEO_EXTS)}
_FRAME = _member_re(IMAGE_EXTS, middle=r"frames\.(\d+)\.")


def decode_image(data: bytes):
    """Decode an image member with :func:`moezoo.processing.image.load_image`, the loader inference uses
    (transparency composited onto white); a broken file raises ``SampleError('corrupt_image')``.

    Example:
        >>> from moezoo.data.shards import encode_png
        >>> from PIL import Image
        >>> decode_image(encode_png(Image.new("L", (3, 2)))).mode
        'RGB'
        >>> decode_image(b"not a png")
        Traceback (most recent call last):
        ...
        moezoo.data.robust.SampleError: corrupt_image: UnidentifiedImageError
    """
    from moezoo.processing.image import load_image

    try:
        return load_image(data)
    except ValueError as err:  # load_image chains PIL's error, whose name says what was wrong
        raise SampleError("corrupt_image", type(err.__cause__ or err).__name__) from None


def media_members(sample: dict[str, Any]) -> dict[str, list]:
    """Modality -> its members in placeholder order (see the module docstring for the names).

    An image or audio clip is one member name; a video is a file member name or the list
    of its frame members in frame order.

    Raises:
        SampleError: ``media_mismatch`` when the names do not form one item per index
            0, 1, ... (a gap, ``png`` beside ``0.png``, a video as a file and as frames).

    Example:
        >>> media_members({"__key__": "k", "json": b"", "1.png": b"", "0.png": b"", "frames.1.jpg": b"",
        ...                "frames.0.jpg": b""})
        {'image': ['0.png', '1.png'], 'audio': [], 'video': [['frames.0.jpg', 'frames.1.jpg']]}
    """
    return {modality: in_order(modality, items) for modality, items in group_members(sample).items()}


def group_members(sample: dict[str, Any]) -> dict[str, dict[str | None, list]]:
    """Modality -> index (``None`` when unindexed) -> its member names (``(frame, name)`` for frames)."""
    found: dict[str, dict[str | None, list]] = {m: {} for m in MODALITIES}
    for name in sample:
        if name.startswith("__"):
            continue
        for modality, pattern in _MEMBERS.items():
            if match := pattern.match(name):
                found[modality].setdefault(match[1], []).append(name)
                break
        else:
            if match := _FRAME.match(name):
                found["video"].setdefault(match[1], []).append((int(match[2]), name))
    return found


def in_order(modality: str, items: dict[str | None, list]) -> list:
    if not items:
        return []
    if None in items and len(items) > 1:
        names = sorted(n if isinstance(n, str) else n[1] for group in items.values() for n in group)
        raise SampleError("media_mismatch", f"{modality} members both with and without an index: {names}")
    indices = sorted(items, key=lambda i: -1 if i is None else int(i))
    if None not in items and [int(i) for i in indices] != list(range(len(indices))):
        raise SampleError("media_mismatch", f"{modality} member indices {[int(i) for i in indices]} are not 0..n-1")
    out = []
    for index in indices:
        names = items[index]
        files = [n for n in names if isinstance(n, str)]
        frames = [n for n in names if not isinstance(n, str)]
        if len(files) + bool(frames) != 1:
            raise SampleError("media_mismatch", f"{modality} {index or 0} has several members: "
                                                f"{sorted(files + [n for _, n in frames])}")
        out.append(files[0] if files else [n for _, n in sorted(frames)])
    return out
