"""Qwen3-VL videos from files: only the frames its processor samples are decoded, with the pixels, grids and
timestamps transformers' sampling over every frame gives; a video sample in a shard becomes a training batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import moezoo
from moezoo.data.shards import DatasetIndex, encode_json, write_split
from moezoo.processing.video import probe_video, read_frames
from moezoo.train.datamodule import ShardDataModule

pytest.importorskip("av")

FPS, FRAMES, SIZE = 8, 27, 32  # 3.4 s at 8 fps: Qwen3-VL's 2 fps sampling keeps 6 of the 27 frames


def _write_mp4(path) -> bytes:
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        for _ in range(FRAMES):
            pixels = np.repeat(np.repeat(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8), 8, 0), 8, 1)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    from moezoo.convert.qwen3_vl_testing import tiny_qwen3_vl_checkpoint

    path = tmp_path_factory.mktemp("qwen3_vl")
    tiny_qwen3_vl_checkpoint(path)
    return moezoo.load(path)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    _write_mp4(path)
    return path


def test_a_file_gives_what_sampling_every_decoded_frame_gives(qwen, video):
    """transformers samples a decoded video at the processor's fps from the video's own rate; reading the file
    decodes only those frames, so pixels, grid and timestamps are the same, and so are the encoded ids."""
    assert probe_video(video) == (FRAMES, float(FPS))
    every = read_frames(video, list(range(FRAMES)))
    videos = qwen.processor.video_processor
    clip = qwen.processor.read_video_file(video)
    assert clip.indices == np.linspace(0, FRAMES - 1, 6).round().astype(int).tolist() and len(clip.frames) == 6
    want = videos([every], fps=[FPS])
    for got in (videos([clip]), videos([str(video)])):
        torch.testing.assert_close(got["pixel_values_videos"], want["pixel_values_videos"], rtol=0, atol=0)
        assert torch.equal(got["video_grid_thw"], want["video_grid_thw"])
        assert got["timestamps"] == want["timestamps"] and got["frame_indices"] == want["frame_indices"]
    conversation = [{"role": "user", "content": "<|video_pad|>\nw4 w5"}, {"role": "assistant", "content": "w7"}]
    mine = qwen.processor.encode_example(conversation, videos=[clip])
    theirs = qwen.processor.encode_example(conversation, videos=[every], fps=[FPS])
    assert all(torch.equal(mine[k], theirs[k]) for k in theirs)


def test_a_video_sample_in_a_shard_trains(qwen, video, tmp_path):
    """A ``KEY.mp4`` member with a ``<video>`` turn reaches the batch as transformers would encode it (nothing
    skipped), and the model takes the batch."""
    turns = [{"from": "human", "value": "<video>\nw4 w5"}, {"from": "gpt", "value": "w7"}]
    sample = {"__key__": "clip", "json": encode_json({"conversations": turns}), "mp4": video.read_bytes()}
    DatasetIndex("videos", {"val": write_split(tmp_path, "val", [sample], samples_per_shard=1)}).save(tmp_path)
    dm = ShardDataModule(tmp_path, processor=qwen, batch_size=1, train_split=None, test_split=None, warn_first=0)
    (batch,) = list(dm.val_dataloader())
    assert not any(dm.skipped().values())
    every = read_frames(video, list(range(FRAMES)))
    want = qwen.processor.encode_example([{"role": "user", "content": "<|video_pad|>\nw4 w5"},
                                          {"role": "assistant", "content": "w7"}], videos=[every], fps=[FPS])
    for key in ("input_ids", "labels", "pixel_values_videos", "video_grid_thw"):
        assert torch.equal(batch[key], want[key]), key
    out = qwen(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    assert torch.isfinite(out.loss)
