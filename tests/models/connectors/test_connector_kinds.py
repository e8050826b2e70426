"""Every registered connector kind: forward + backward, token count, config round trip, clear errors."""

import pytest
import torch

import moezoo.models.connectors.linear  # noqa: F401  (registers linear, mlp2x_gelu, film)
import moezoo.models.connectors.moe  # noqa: F401  (registers moe)
import moezoo.models.connectors.resampler  # noqa: F401  (registers resampler, instruct)
from moezoo.models.connectors.base import CONNECTORS, build_connector

IN_DIM, OUT_DIM, PROMPT_DIM = 12, 16, 10
SMALL = {"resampler": {"num_queries": 3, "num_heads": 2, "num_layers": 2},
         "instruct": {"num_queries": 3, "num_heads": 2, "num_layers": 2},
         "moe": {"num_experts": 3, "top_k": 2}}
KINDS = ["film", "instruct", "linear", "mlp2x_gelu", "moe", "resampler"]


def _build(kind):
    return build_connector({"kind": kind, **SMALL.get(kind, {})}, in_dim=IN_DIM, out_dim=OUT_DIM,
                           prompt_dim=PROMPT_DIM)


def _inputs(n=2, t=5, p=4):
    gen = torch.Generator().manual_seed(0)
    mask = torch.ones(n, p, dtype=torch.bool)
    mask[0, -1] = False
    return torch.randn(n, t, IN_DIM, generator=gen), torch.randn(n, p, PROMPT_DIM, generator=gen), mask


def test_all_kinds_are_registered():
    assert set(KINDS) <= set(CONNECTORS.kinds())


@pytest.mark.parametrize("kind", KINDS)
def test_forward_backward_and_token_count(kind):
    connector = _build(kind).train()
    features, prompt, mask = _inputs()
    features.requires_grad_(True)
    out = connector(features, prompt, mask)
    queries = SMALL[kind]["num_queries"] if kind in ("resampler", "instruct") else None
    assert out.shape == (2, queries or 5, OUT_DIM)
    assert connector.num_output_tokens(5) == (queries or 5) and connector.num_output_tokens(7) == (queries or 7)
    out.square().mean().backward()
    assert features.grad is not None and features.grad.abs().sum() > 0
    # Every parameter is reachable from the output (zero-initialised FiLM gets its gradient too).
    silent = [name for name, p in connector.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert silent == [], silent


@pytest.mark.parametrize("kind", KINDS)
def test_config_round_trip(kind):
    config = CONNECTORS.config_from_dict({"kind": kind, **SMALL.get(kind, {})})
    data = config.to_dict()
    assert data["kind"] == kind
    back = CONNECTORS.config_from_dict(data)
    assert back == config and type(back) is type(config)
    assert _build(kind).config == config


@pytest.mark.parametrize("kind", KINDS)
def test_wrong_feature_width_is_a_clear_error(kind):
    connector = _build(kind)
    _, prompt, mask = _inputs()
    with pytest.raises(ValueError, match=r"expected features of shape \(N, T, 12\) \(in_dim=12\), got \(2, 5, 9\)"):
        connector(torch.randn(2, 5, 9), prompt, mask)
    with pytest.raises(ValueError, match=r"got \(5, 12\)"):
        connector(torch.randn(5, IN_DIM), prompt, mask)


@pytest.mark.parametrize("kind", ["film", "instruct"])
def test_prompt_connectors_need_a_well_shaped_prompt(kind):
    connector = _build(kind)
    features, prompt, mask = _inputs()
    assert connector.uses_prompt
    with pytest.raises(ValueError, match="reads the prompt"):
        connector(features)
    with pytest.raises(ValueError, match=r"expected prompt of shape \(2, P, 10\).*got \(2, 4, 16\)"):
        connector(features, torch.randn(2, 4, OUT_DIM), mask)
    with pytest.raises(ValueError, match=r"expected prompt of shape \(2, P, 10\).*got \(3, 4, 10\)"):
        connector(features, torch.randn(3, 4, PROMPT_DIM), mask)
    with pytest.raises(ValueError, match=r"expected prompt_mask of shape \(2, 4\), got \(2, 5\)"):
        connector(features, prompt, torch.ones(2, 5, dtype=torch.bool))


@pytest.mark.parametrize("kind", ["linear", "mlp2x_gelu", "moe", "resampler"])
def test_prompt_free_connectors_ignore_the_prompt(kind):
    connector = _build(kind).eval()
    features, prompt, mask = _inputs()
    assert not connector.uses_prompt
    torch.testing.assert_close(connector(features, prompt, mask), connector(features), atol=0, rtol=0)


@pytest.mark.parametrize("data, match", [
    ({"kind": "mlp2x_gelu", "activation": "tanh"}, "MLPConfig.activation='tanh' must be one of"),
    ({"kind": "film", "activation": "gleu"}, "FiLMConfig.activation='gleu' must be one of"),
    ({"kind": "resampler", "num_queries": 0}, "ResamplerConfig.num_queries=0 must be >= 1"),
    ({"kind": "resampler", "num_layers": 0}, "ResamplerConfig.num_layers=0 must be >= 1"),
    ({"kind": "instruct", "num_heads": 0}, "InstructResamplerConfig.num_heads=0 must be >= 1"),
    ({"kind": "resampler", "mlp_ratio": 0.0}, "ResamplerConfig.mlp_ratio=0.0 must be > 0"),
    ({"kind": "moe", "num_experts": 0}, "MoEConnectorConfig.num_experts=0 must be >= 1"),
    ({"kind": "moe", "top_k": 5}, r"MoEConnectorConfig.top_k=5 must be in \[1, num_experts=4\]"),
    ({"kind": "moe", "router": "cosnie"}, "MoEConnectorConfig.router='cosnie' is unknown"),
    ({"kind": "moe", "hidden_dim": 0}, "MoEConnectorConfig.hidden_dim=0 must be >= 1"),
    ({"kind": "moe", "aux_loss_coef": -1.0}, "MoEConnectorConfig.aux_loss_coef=-1.0 must be >= 0"),
    ({"kind": "linear", "biass": False}, r"LinearConfig got unknown keys \['biass'\]"),
    ({"kind": "mlp_2x_gelu"}, r"unknown connector kind 'mlp_2x_gelu'.*Did you mean \['mlp2x_gelu'\]"),
])
def test_bad_configs_name_the_field(data, match):
    with pytest.raises(ValueError, match=match):
        CONNECTORS.config_from_dict(data)


def test_heads_must_divide_the_width():
    with pytest.raises(ValueError, match="ResamplerConfig.num_heads=3 must divide the connector width out_dim=16"):
        build_connector({"kind": "resampler", "num_heads": 3}, in_dim=IN_DIM, out_dim=OUT_DIM)
