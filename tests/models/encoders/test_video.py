"""The video encoder: frames through a shared image encoder, pooled or concatenated in time."""

import numpy as np
import pytest
import torch
from torch import nn

from moezoo.models.encoders.base import Encoder
from moezoo.models.encoders.video import VideoConfig, VideoEncoder
from moezoo.processing.video import VideoProcessor

WIDTH, PATCH, SIZE = 16, 8, 32
TOKENS = (SIZE // PATCH) ** 2


class PatchEncoder(Encoder):
    """A minimal image encoder: patch conv -> tokens; optionally FiLM-conditioned on ``condition``."""

    def __init__(self, condition_dim: int | None = None):
        super().__init__()
        self.patch = nn.Conv2d(3, WIDTH, PATCH, stride=PATCH)
        self.film = nn.Linear(condition_dim, WIDTH) if condition_dim else None
        self.conditioned = condition_dim is not None
        self.out_dim, self.num_tokens = WIDTH, TOKENS
        self.seen_condition = []

    def forward(self, x, condition=None):
        self.seen_condition.append(condition)
        feats = self.patch(x).flatten(2).transpose(1, 2)  # (N, T, D)
        if self.film is not None and condition is not None:
            feats = feats * (1 + self.film(condition)[:, None])
        return torch.tanh(feats)

    def preprocess_spec(self):
        return {"kind": "simple", "size": [SIZE, SIZE], "mean": [0.5] * 3, "std": [0.5] * 3, "resize": "squash"}


def _videos(n=2, frames=4, seed=0):
    return torch.randn(n, frames, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("mode", ["pool", "frames"])
def test_matches_frame_by_frame_image_encoding(mode):
    image = PatchEncoder()
    video = VideoEncoder(VideoConfig(num_frames=4, mode=mode), image)
    x = _videos(n=3)
    out = video(x)
    per_frame = torch.stack([torch.stack([image(x[n, f:f + 1])[0] for f in range(4)]) for n in range(3)])  # (N,F,T,D)
    expected = per_frame.mean(1) if mode == "pool" else per_frame.flatten(1, 2)
    assert out.shape == (3, video.num_tokens, WIDTH)
    assert video.num_tokens == (TOKENS if mode == "pool" else 4 * TOKENS) and video.out_dim == WIDTH
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    if mode == "frames":  # time order: frame f's tokens sit at [f*T, (f+1)*T)
        torch.testing.assert_close(out[1, 2 * TOKENS:3 * TOKENS], image(x[1, 2:3])[0])


def test_image_encoder_is_shared_not_copied():
    image = PatchEncoder()
    video = VideoEncoder(VideoConfig(num_frames=2), image)
    assert video.image_encoder is image
    assert {id(p) for p in video.parameters()} == {id(p) for p in image.parameters()}
    video(_videos(frames=2)).sum().backward()
    assert image.patch.weight.grad is not None and image.patch.weight.grad.abs().sum() > 0
    with torch.no_grad():
        image.patch.bias += 1.0  # a change through the image path shows in the video path
    torch.testing.assert_close(video(_videos(frames=2)), image(_videos(frames=2).flatten(0, 1)).unflatten(0, (2, 2))
                               .mean(1))


def test_condition_is_broadcast_to_every_frame():
    image = PatchEncoder(condition_dim=6)
    video = VideoEncoder(VideoConfig(num_frames=3, mode="frames"), image)
    assert video.conditioned
    x, cond = _videos(n=2, frames=3), torch.randn(2, 6)
    out = video(x, cond)
    for n in range(2):
        for f in range(3):
            torch.testing.assert_close(out[n, f * TOKENS:(f + 1) * TOKENS], image(x[n, f:f + 1], cond[n:n + 1])[0])
    changed = cond.clone()
    changed[1] += 1
    out2 = video(x, changed)
    torch.testing.assert_close(out2[0], out[0])  # video 0 keeps its own condition
    assert not torch.allclose(out2[1], out[1])


def test_unconditioned_image_encoder_gets_no_condition():
    image = PatchEncoder()
    video = VideoEncoder(VideoConfig(num_frames=2), image)
    video(_videos(frames=2), torch.randn(2, 5))
    assert image.seen_condition == [None] and not video.conditioned


def test_wrong_frame_count_or_rank_is_an_error():
    video = VideoEncoder(VideoConfig(num_frames=4), PatchEncoder())
    expected = r"expected pixel_values_videos of shape \(N, 4, C, H, W\), got \(2, 3, 3, 32, 32\)"
    with pytest.raises(ValueError, match=expected):
        video(_videos(frames=3))
    with pytest.raises(ValueError, match=r"got \(2, 3, 32, 32\)"):
        video(torch.zeros(2, 3, SIZE, SIZE))


def test_config_checks_and_round_trip():
    cfg = VideoConfig(num_frames=6, mode="frames")
    assert VideoConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="VideoConfig.num_frames=0 must be >= 1"):
        VideoConfig(num_frames=0)
    with pytest.raises(ValueError, match=r"VideoConfig.mode='concat' must be one of \('pool', 'frames'\)"):
        VideoConfig(mode="concat")


def test_processor_output_feeds_the_encoder():
    def to_pixels(frames):  # (n, 3, 32, 32) in [-1, 1], as a "simple" spec would give
        return torch.stack([torch.from_numpy(np.asarray(f)).permute(2, 0, 1).float() / 127.5 - 1 for f in frames])

    clips = [np.random.default_rng(s).integers(0, 255, (7 + s, SIZE, SIZE, 3), dtype=np.uint8) for s in range(2)]
    pixels = VideoProcessor(to_pixels, num_frames=4)(clips)
    video = VideoEncoder(VideoConfig(num_frames=4, mode="frames"), PatchEncoder())
    assert video(pixels).shape == (2, 4 * TOKENS, WIDTH)
