"""Frame sampling, PyAV decoding and the video processor, on tiny clips written here."""

import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from moezoo.processing.video import VideoProcessor, read_video, sample_frame_indices

# One distinct colour per frame, far apart so lossy YUV 4:2:0 coding keeps them recognisable.
PALETTE = np.array([[250, 10, 10], [10, 250, 10], [10, 10, 250], [250, 250, 10], [10, 250, 250], [250, 10, 250],
                    [128, 128, 128], [250, 250, 250], [10, 10, 10], [250, 128, 10], [10, 128, 250], [128, 10, 250]],
                   dtype=np.uint8)


def write_video(path, colours, codec="libx264", size=32):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for colour in colours:
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), colour, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


class ResizeToTensor:
    """A stand-in image processor: RGB, resize to ``size``, scale to [0, 1]; ``(n, 3, H, W)``."""

    size = (16, 16)

    def __call__(self, images):
        out = []
        for image in images:
            array = np.asarray(image.convert("RGB") if isinstance(image, Image.Image) else image)
            x = torch.from_numpy(array.copy()).permute(2, 0, 1).float()[None] / 255.0
            out.append(F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)[0])
        return torch.stack(out)


@pytest.mark.parametrize("total, n, expected", [
    (100, 4, [12, 37, 62, 87]),   # segment centres
    (8, 8, list(range(8))),       # exactly enough: every frame once
    (9, 3, [1, 4, 7]),
    (1, 3, [0, 0, 0]),            # a still: repeated
    (3, 6, [0, 0, 1, 1, 2, 2]),   # fewer frames: each repeated in order
    (5, 8, [0, 0, 1, 2, 2, 3, 4, 4]),
])
def test_sample_frame_indices(total, n, expected):
    assert sample_frame_indices(total, n) == expected


def test_sample_frame_indices_are_segment_centres_for_any_length():
    for total in range(1, 60):
        for n in (1, 2, 3, 5, 8, 16):
            idx = sample_frame_indices(total, n)
            assert len(idx) == n and idx == sorted(idx) and 0 <= idx[0] and idx[-1] < total
            # Each index is the frame whose span holds the centre of its segment of the clip.
            for i, j in enumerate(idx):
                centre = (i + 0.5) * total / n
                assert j <= centre < j + 1
            if total >= n:
                assert len(set(idx)) == n  # no frame repeats while there are enough
    with pytest.raises(ValueError, match="no frames"):
        sample_frame_indices(0, 4)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        sample_frame_indices(10, 0)


@pytest.mark.parametrize("suffix", ["mp4", "mkv"])  # mkv headers carry no frame count: packets are counted
def test_read_video_decodes_the_sampled_frames(tmp_path, suffix):
    path = tmp_path / f"clip.{suffix}"
    write_video(path, PALETTE)
    for n in (4, 12, 20):
        frames = read_video(path, n)
        assert len(frames) == n
        for frame, index in zip(frames, sample_frame_indices(len(PALETTE), n)):
            assert frame.shape == (32, 32, 3) and frame.dtype == np.uint8
            np.testing.assert_allclose(frame.reshape(-1, 3).mean(0), PALETTE[index], atol=12)


def test_read_video_errors(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no video file"):
        read_video(tmp_path / "missing.mp4", 4)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 10)
    with pytest.raises(ValueError):  # PyAV's InvalidDataError is a ValueError
        read_video(bad, 4)
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(ImportError, match=r"pip install av.*moezoo\[video\]"):
        read_video(bad, 4)


def test_video_processor_on_frames_arrays_and_files(tmp_path):
    proc = VideoProcessor(ResizeToTensor(), num_frames=4)
    colours = PALETTE[:6]
    as_pil = [Image.fromarray(np.full((20, 24, 3), c, np.uint8)) for c in colours]
    as_stack = np.stack([np.full((20, 24, 3), c, np.uint8) for c in PALETTE[:10]])
    path = tmp_path / "clip.mp4"
    write_video(path, PALETTE)
    out = proc([as_pil, as_stack, str(path), list(as_stack[:2])])
    assert out.shape == (4, 4, 3, 16, 16) and out.dtype == torch.float32
    for row, (video_colours, total) in enumerate([(colours, 6), (PALETTE, 10), (PALETTE, 12), (PALETTE, 2)]):
        want = torch.tensor(video_colours[sample_frame_indices(total, 4)], dtype=torch.float32) / 255
        got = out[row].mean(dim=(2, 3))  # (F, 3) mean colour per frame
        torch.testing.assert_close(got, want, atol=0.05 if row == 2 else 1e-6, rtol=0)
    # Frames are exactly what the image processor makes of them.
    torch.testing.assert_close(out[0], ResizeToTensor()([as_pil[i] for i in sample_frame_indices(6, 4)]))
    assert proc([]).shape == (0, 4, 3, 16, 16)


def test_video_processor_errors():
    proc = VideoProcessor(ResizeToTensor(), num_frames=2)
    with pytest.raises(ValueError, match="video 1 has no frames"):
        proc([[np.zeros((8, 8, 3), np.uint8)], []])
    with pytest.raises(ValueError, match=r"video 0: expected a frame stack of 4 dims.*got shape \(8, 8, 3\)"):
        proc([np.zeros((8, 8, 3), np.uint8)])
    one_image = VideoProcessor(lambda frames: torch.zeros(1, 3, 8, 8), num_frames=2)
    with pytest.raises(ValueError, match=r"image processor gave \(1, 3, 8, 8\) for 2 frames"):
        one_image([[np.zeros((8, 8, 3), np.uint8)]])
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        VideoProcessor(ResizeToTensor(), num_frames=0)
