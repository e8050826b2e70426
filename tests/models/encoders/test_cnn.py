"""The from-scratch FiLM CNN: token shapes, conditioning, zero-init identity, gradients, errors."""

import json

import pytest
import torch

from moezoo.models.encoders.base import build_encoder
from moezoo.models.encoders.cnn import CNNEncoder, CNNEncoderConfig, SpatialSoftArgmax
from moezoo.models.prompt_pooling import sincos_2d
from moezoo.processing.image import build_image_processor


def _condition(n, dim=16, seed=0):
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("overrides, size, tokens, width", [
    ({}, 64, 16, 128),  # the quickstart: 64 px -> 4x4 tokens
    ({"channels": [8, 16, 24], "image_size": 50}, 50, 49, 24),  # 50 -> 25 -> 13 -> 7
    ({"coord_channels": True, "norm": "group", "convs_per_stage": 2}, 64, 16, 128),
    ({"film": False, "norm": "none"}, 64, 16, 128),
])
def test_tokens_and_width(pixels, overrides, size, tokens, width):
    enc = build_encoder({"kind": "cnn", "condition_dim": 16, **overrides})
    assert isinstance(enc, CNNEncoder) and (enc.num_tokens, enc.out_dim) == (tokens, width)
    assert enc.conditioned == overrides.get("film", True)
    assert enc(pixels(3, size), _condition(3)).shape == (3, tokens, width)


def test_film_starts_as_the_plain_cnn(pixels):
    torch.manual_seed(0)
    film = CNNEncoder(CNNEncoderConfig(condition_dim=16)).eval()
    plain = CNNEncoder(CNNEncoderConfig(film=False)).eval()
    missing, unexpected = plain.load_state_dict(film.state_dict(), strict=False)
    assert not missing and unexpected and all(".film." in k or k.startswith("condition_") for k in unexpected)
    x = pixels(4, 64)
    with torch.no_grad():
        want = plain(x)
        for seed in range(3):  # any condition: gamma = beta = 0
            torch.testing.assert_close(film(x, _condition(4, seed=seed)), want, rtol=0, atol=0)


def test_training_reaches_film_and_makes_features_depend_on_the_condition(pixels, without_grad):
    enc = CNNEncoder(CNNEncoderConfig(channels=[8, 16, 16, 16], condition_dim=16))
    x, prompt, mask = pixels(4, 64), torch.randn(4, 6, 16), torch.ones(4, 6, dtype=torch.bool)
    condition = enc.pool_condition(prompt, mask)  # as the multimodal model conditions it: the prompt pooled
    enc(x, condition).square().mean().backward()
    assert without_grad(enc) == []  # the attention pool's scores too
    for stage in enc.stages[1:]:  # FiLM after stages 2-4 only
        assert stage.film.gamma.weight.grad.abs().sum() > 0 and stage.film.beta.weight.grad.abs().sum() > 0
    assert enc.stages[0].film is None
    torch.optim.SGD(enc.parameters(), lr=0.5).step()
    enc.eval()
    with torch.no_grad():
        a, b = enc(x, enc.pool_condition(prompt, mask)), enc(x, _condition(4, seed=1))
    assert (a - b).abs().max() > 1e-3  # the same image, another question: other features


def test_preprocess_spec_builds_a_processor(pil_image):
    spec = json.loads(json.dumps(CNNEncoder(CNNEncoderConfig(film=False)).preprocess_spec()))
    assert spec == {"kind": "simple", "size": [64, 64], "mean": [0.5] * 3, "std": [0.5] * 3, "resize": "squash"}
    out = build_image_processor(spec)([pil_image])
    assert out.shape == (1, 3, 64, 64) and out.min() >= -1 and out.max() <= 1


def test_errors_name_what_was_expected(pixels):
    with pytest.raises(ValueError, match="condition_dim=None must be set when film=True"):
        CNNEncoder(CNNEncoderConfig())
    enc = CNNEncoder(CNNEncoderConfig(condition_dim=16))
    with pytest.raises(ValueError, match=r"forward needs condition \(N, 16\), got None"):
        enc(pixels(2, 64))
    with pytest.raises(ValueError, match=r"expected condition of shape \(2, 16\), got \(2, 8\)"):
        enc(pixels(2, 64), torch.zeros(2, 8))
    with pytest.raises(ValueError, match=r"expected pixel_values of shape \(N, 3, 64, 64\), got \(2, 1, 64, 64\)"):
        enc(torch.zeros(2, 1, 64, 64), _condition(2))
    with pytest.raises(ValueError, match="CNNEncoderConfig.norm='layer' must be one of"):
        CNNEncoderConfig(norm="layer")
    with pytest.raises(ValueError, match="CNNEncoderConfig.channels=\\[\\] must be a non-empty list"):
        CNNEncoderConfig(channels=[])


def test_builds_on_the_meta_device():
    with torch.device("meta"):  # FSDP's deferred init: no weights, shapes only
        enc = CNNEncoder(CNNEncoderConfig(condition_dim=16))
    assert next(enc.parameters()).is_meta and (enc.num_tokens, enc.out_dim) == (16, 128)


def test_token_positions_add_each_cells_2d_code_and_save_nothing(pixels):
    torch.manual_seed(0)
    plain = CNNEncoder(CNNEncoderConfig(condition_dim=16)).eval()
    placed = CNNEncoder(CNNEncoderConfig(condition_dim=16, token_positions=True)).eval()
    assert placed.state_dict().keys() == plain.state_dict().keys()  # a buffer rebuilt from the config
    placed.load_state_dict(plain.state_dict())
    x, c = pixels(2, 64), _condition(2)
    with torch.no_grad():
        delta = placed(x, c) - plain(x, c)
    torch.testing.assert_close(delta, sincos_2d(4, 4, 128).expand(2, -1, -1))
    # Row-major cells: the code's row half changes down a column, its column half along a row.
    code = sincos_2d(4, 4, 128)
    assert torch.equal(code[1, :64], code[0, :64]) and not torch.equal(code[1, 64:], code[0, 64:])
    assert torch.equal(code[4, 64:], code[0, 64:]) and not torch.equal(code[4, :64], code[0, :64])
    assert len({tuple(row.tolist()) for row in code}) == 16  # every cell its own code


def test_keypoints_add_one_token_that_reads_where_each_map_peaks(pixels):
    """The spatial soft-argmax finds a sharp peak at its cell's (x, y), at sub-cell precision between two."""
    head = SpatialSoftArgmax(in_channels=1, keypoints=1, out_dim=4)
    with torch.no_grad():
        head.maps.weight.fill_(50.0), head.maps.bias.zero_()
    h = torch.zeros(2, 1, 16, 16)
    h[0, 0, 3, 12] = 1.0  # row 3, column 12: right of centre, above it
    h[1, 0, 8, 4] = h[1, 0, 8, 6] = 1.0  # two equal peaks: their midpoint
    step = 2 / 15
    xy = head.positions(h)[:, 0]
    torch.testing.assert_close(xy[0], torch.tensor([-1 + 12 * step, -1 + 3 * step]), atol=1e-4, rtol=0)
    torch.testing.assert_close(xy[1], torch.tensor([-1 + 5 * step, -1 + 8 * step]), atol=1e-4, rtol=0)
    enc = CNNEncoder(CNNEncoderConfig(condition_dim=16, keypoints=4))
    out = enc(pixels(3, 64), _condition(3))
    assert enc.num_tokens == 17 and out.shape == (3, 17, 128)
    out[:, -1].sum().backward()  # the keypoint token trains the maps and the stages below them
    assert enc.keypoint_head.maps.weight.grad.abs().sum() > 0 and enc.stages[0].convs[0].weight.grad.abs().sum() > 0
    assert not enc.stages[3].convs[0].weight.grad.any()  # stage 4 is above the keypoint stage (2)
    with pytest.raises(ValueError, match=r"keypoint_stage=5 must be a stage number in \[1, 4\]"):
        CNNEncoderConfig(keypoints=2, keypoint_stage=5)
