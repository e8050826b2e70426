"""The from-scratch FiLM CNN: token shapes, conditioning, zero-init identity, gradients, errors."""

import json

import pytest
import torch

from moezoo.models.encoders.base import build_encoder
from moezoo.models.encoders.cnn import CNNEncoder, CNNEncoderConfig
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
