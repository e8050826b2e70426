"""The learned-query resampler and the instruction-aware one: shapes, and the prompt mask honoured exactly."""

import torch

from moezoo.models.connectors.resampler import (InstructResampler, InstructResamplerConfig, Resampler,
                                                ResamplerConfig)


def _instruct(**overrides):
    config = InstructResamplerConfig(**{"num_queries": 3, "num_layers": 2, "num_heads": 2, **overrides})
    return InstructResampler(config, in_dim=8, out_dim=16, prompt_dim=12).eval()


def _inputs():
    gen = torch.Generator().manual_seed(2)
    mask = torch.tensor([[True, True, True, False, False], [False, False, True, True, True]])
    return torch.randn(2, 7, 8, generator=gen), torch.randn(2, 5, 12, generator=gen), mask


def test_resampler_compresses_any_token_count():
    resampler = Resampler(ResamplerConfig(num_queries=4, num_layers=1, num_heads=4), in_dim=8, out_dim=16)
    assert resampler.queries.shape == (4, 16) and 0.005 < resampler.queries.std().item() < 0.04
    for tokens in (1, 7, 33):
        out = resampler(torch.randn(2, tokens, 8))
        assert out.shape == (2, 4, 16) and resampler.num_output_tokens(tokens) == 4


def test_resampler_is_permutation_invariant_and_rows_independent():
    """Cross-attention reads the features as a set (positions come from the encoder), one row per input."""
    resampler = Resampler(ResamplerConfig(num_queries=4, num_layers=2, num_heads=2), in_dim=8, out_dim=16).eval()
    features = torch.randn(3, 6, 8)
    with torch.no_grad():
        out = resampler(features)
        torch.testing.assert_close(resampler(features[:, torch.randperm(6)]), out, atol=1e-5, rtol=0)
        torch.testing.assert_close(resampler(features[1:2]), out[1:2], atol=1e-5, rtol=0)
        changed = features.clone()
        changed[0, 3] += 1.0
        assert (resampler(changed)[0] - out[0]).abs().max() > 1e-4


def test_attention_matches_a_plain_softmax_attention():
    block = Resampler(ResamplerConfig(num_queries=2, num_layers=1, num_heads=2), in_dim=8, out_dim=8).blocks[0]
    attn = block.cross_attn
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    key_mask = torch.tensor([[True] * 5, [True, True, False, True, False]])
    q = attn.q_proj(x).view(2, 3, 2, 4).transpose(1, 2)
    k, v = attn.kv_proj(ctx).view(2, 5, 2, 2, 4).permute(2, 0, 3, 1, 4)
    scores = (q @ k.transpose(-1, -2)) / 2.0  # sqrt(head_dim=4)
    scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    ref = attn.out_proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(2, 3, 8))
    torch.testing.assert_close(attn(x, ctx, key_mask), ref, atol=1e-6, rtol=0)


def test_instruct_ignores_everything_outside_the_prompt_mask():
    connector = _instruct()
    features, prompt, mask = _inputs()
    with torch.no_grad():
        base = connector(features, prompt, mask)
        assert base.shape == (2, 3, 16)
        hidden = prompt.clone()
        hidden[~mask] = torch.randn(int((~mask).sum()), 12) * 100  # e.g. answer tokens: never seen
        torch.testing.assert_close(connector(features, hidden, mask), base, atol=0, rtol=0)
        hidden[~mask] = float("nan")
        torch.testing.assert_close(connector(features, hidden, mask), base, atol=0, rtol=0)
        for row, col in ((0, 1), (1, 4)):  # a real prompt token of each sample
            changed = prompt.clone()
            changed[row, col] += torch.randn(12)  # not a constant shift: the prompt LayerNorm removes that
            out = connector(features, changed, mask)
            assert (out[row] - base[row]).abs().max() > 1e-4
            torch.testing.assert_close(out[1 - row], base[1 - row], atol=1e-6, rtol=0)


def test_instruct_padding_side_does_not_matter_and_order_does():
    connector = _instruct()
    features, prompt, _ = _inputs()
    right = torch.tensor([[True, True, True, False, False]] * 2)
    left = right.flip(1)
    with torch.no_grad():
        out_right = connector(features, prompt, right)
        out_left = connector(features, prompt.roll(2, dims=1), left)  # the same 3 tokens, left-padded
        torch.testing.assert_close(out_left, out_right, atol=1e-5, rtol=0)
        swapped = prompt.clone()
        swapped[:, [0, 1]] = prompt[:, [1, 0]]
        assert (connector(features, swapped, right) - out_right).abs().max() > 1e-4
        # Without positions the prompt is a bag of words.
        bag = _instruct(prompt_positions=False)
        torch.testing.assert_close(bag(features, swapped, right), bag(features, prompt, right), atol=1e-5, rtol=0)


def test_instruct_with_an_empty_prompt_row():
    connector = _instruct()
    features, prompt, mask = _inputs()
    mask[1] = False  # a sample with no prompt tokens: the queries still read the features
    with torch.no_grad():
        out = connector(features, prompt, mask)
    assert torch.isfinite(out).all()
