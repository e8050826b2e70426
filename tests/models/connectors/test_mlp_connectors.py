"""linear / mlp2x_gelu against transformers' LLaVA projector, and the FiLM connector."""

import pytest
import torch

from moezoo.models.connectors.base import build_connector
from moezoo.models.connectors.linear import FiLMConfig, FiLMConnector, LinearConfig, MLPConfig, MLPConnector


def _llava_projector(vision_dim, text_dim, act, bias):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    config = LlavaConfig(vision_config=CLIPVisionConfig(hidden_size=vision_dim, intermediate_size=32,
                                                        num_hidden_layers=1, num_attention_heads=2),
                         text_config=LlamaConfig(hidden_size=text_dim, intermediate_size=32, num_hidden_layers=1,
                                                 num_attention_heads=2, vocab_size=64),
                         projector_hidden_act=act, multimodal_projector_bias=bias)
    return LlavaMultiModalProjector(config).eval()


@pytest.mark.parametrize("act, bias", [("gelu", True), ("gelu", False), ("quick_gelu", True),
                                       ("gelu_pytorch_tanh", True), ("silu", True), ("relu", True)])
def test_mlp2x_gelu_matches_transformers_llava_projector(act, bias):
    hf = _llava_projector(24, 40, act, bias)
    ours = build_connector({"kind": "mlp2x_gelu", "activation": act, "bias": bias}, in_dim=24, out_dim=40).eval()
    # strict: the same parameter names and shapes as transformers' projector.
    ours.load_state_dict(hf.state_dict(), strict=True)
    # A checkpoint's multi_modal_projector.* keys map by a prefix rename.
    checkpoint = {f"multi_modal_projector.{k}": v for k, v in hf.state_dict().items()}
    renamed = {k.removeprefix("multi_modal_projector."): v for k, v in checkpoint.items()}
    assert set(renamed) == set(ours.state_dict())
    features = torch.randn(2, 9, 24)
    with torch.no_grad():
        torch.testing.assert_close(ours(features), hf(features), atol=1e-6, rtol=0)


def test_linear_is_one_linear_layer():
    connector = build_connector({"kind": "linear"}, in_dim=6, out_dim=8)
    assert sorted(connector.state_dict()) == ["linear_1.bias", "linear_1.weight"]
    features = torch.randn(2, 3, 6)
    w, b = connector.linear_1.weight, connector.linear_1.bias
    torch.testing.assert_close(connector(features), features @ w.t() + b)
    assert "linear_1.bias" not in build_connector(LinearConfig(bias=False), in_dim=6, out_dim=8).state_dict()


def _film_inputs():
    gen = torch.Generator().manual_seed(1)
    mask = torch.tensor([[True, True, True, False, False], [False, True, True, True, True]])
    return torch.randn(2, 6, 8, generator=gen), torch.randn(2, 5, 12, generator=gen), mask


def _trained_film():
    film = FiLMConnector(FiLMConfig(), in_dim=8, out_dim=16, prompt_dim=12).eval()
    with torch.no_grad():  # as if trained: a non-zero modulation
        film.film.weight.normal_(std=0.5)
        film.film.bias.normal_(std=0.5)
    return film


def test_film_starts_as_the_plain_mlp():
    film = FiLMConnector(FiLMConfig(), in_dim=8, out_dim=16, prompt_dim=12)
    mlp = MLPConnector(MLPConfig(), in_dim=8, out_dim=16)
    mlp.load_state_dict({k: v for k, v in film.state_dict().items() if k.startswith("linear_")})
    features, prompt, mask = _film_inputs()
    torch.testing.assert_close(film(features, prompt, mask), mlp(features), atol=0, rtol=0)


def test_film_reads_only_the_masked_in_prompt():
    film = _trained_film()
    features, prompt, mask = _film_inputs()
    with torch.no_grad():
        base = film(features, prompt, mask)
        padded = prompt.clone()
        padded[~mask] = torch.randn(int((~mask).sum()), 12) * 100  # the answer or padding: anything
        torch.testing.assert_close(film(features, padded, mask), base, atol=0, rtol=0)
        padded[~mask] = float("nan")
        torch.testing.assert_close(film(features, padded, mask), base, atol=0, rtol=0)
        changed = prompt.clone()
        changed[1, 2] += torch.randn(12)  # a real prompt token of sample 1 (not a constant: LayerNorm removes that)
        out = film(features, changed, mask)
    torch.testing.assert_close(out[0], base[0], atol=0, rtol=0)  # rows are independent
    assert (out[1] - base[1]).abs().max() > 1e-3


def test_film_conditions_on_the_masked_mean():
    """The FiLM connector sees the prompt only through its masked mean (a bag of words)."""
    film = _trained_film()
    features, prompt, mask = _film_inputs()
    permuted = prompt.clone()
    permuted[1, 1:] = prompt[1, 1:].flip(0)  # reorder sample 1's real tokens
    full = torch.ones_like(mask)
    mean = torch.stack([prompt[i][mask[i]].mean(0) for i in range(2)])[:, None]  # (N, 1, 12)
    with torch.no_grad():
        base = film(features, prompt, mask)
        torch.testing.assert_close(film(features, permuted, mask), base, atol=1e-6, rtol=0)
        torch.testing.assert_close(film(features, mean, full[:, :1]), base, atol=1e-6, rtol=0)
        # No mask means every token is real.
        torch.testing.assert_close(film(features, prompt), film(features, prompt, full), atol=0, rtol=0)
