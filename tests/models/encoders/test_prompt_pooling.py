"""The prompt pools a FiLM encoder reads: masked tokens never count, scores learn, the CNN's choice of pool."""

import pytest
import torch

from moezoo.models.encoders.cnn import CNNEncoder, CNNEncoderConfig
from moezoo.models.prompt_pooling import AttentionPooling, ContextualPooling, masked_mean


def test_attention_pooling_ignores_masked_tokens_and_learns_where_to_look():
    torch.manual_seed(0)
    pool = AttentionPooling(16)
    prompt, mask = torch.randn(3, 6, 16), torch.ones(3, 6, dtype=torch.bool)
    mask[0, 4:], mask[2] = False, False  # row 2: no prompt at all
    with torch.no_grad():
        pool.score.weight.normal_()  # a trained pool: scores differ by token
    out = pool(prompt, mask)
    changed = prompt.clone()
    changed[0, 4:] += 100.0
    torch.testing.assert_close(pool(changed, mask), out)
    assert torch.equal(out[2], torch.zeros(16))  # no NaN from an empty softmax
    assert not torch.allclose(out[1], masked_mean(prompt, mask)[1])  # no longer the plain mean
    out.sum().backward()
    assert pool.score.weight.grad.abs().sum() > 0
    # one token scored far above the rest takes the whole weight
    with torch.no_grad():
        pool.score.bias.zero_()
        pool.score.weight.copy_(pool.score_norm(prompt[1, 3:4]) * 50)
    torch.testing.assert_close(pool(prompt, mask)[1], prompt[1, 3], atol=1e-3, rtol=0)


def test_cnn_pools_the_prompt_as_configured_and_normalises_the_condition():
    torch.manual_seed(0)
    prompt, mask = torch.randn(2, 5, 32) * 0.02, torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]).bool()
    mean_cnn = CNNEncoder(CNNEncoderConfig(channels=[8, 16], image_size=16, condition_dim=32, condition_pooling="mean"))
    torch.testing.assert_close(mean_cnn.pool_condition(prompt, mask), masked_mean(prompt, mask))
    attention_cnn = CNNEncoder(CNNEncoderConfig(channels=[8, 16], image_size=16, condition_dim=32))
    assert attention_cnn.config.condition_pooling == "attention"
    torch.testing.assert_close(attention_cnn.pool_condition(prompt, mask), masked_mean(prompt, mask))  # untrained
    # FiLM reads a unit-scale condition, though the embeddings are at an LM's 0.02 scale
    seen = {}
    mean_cnn.stages[1].film.gamma.register_forward_hook(lambda m, args, out: seen.update(condition=args[0]))
    mean_cnn(torch.randn(2, 3, 16, 16), mean_cnn.pool_condition(prompt, mask))
    torch.testing.assert_close(seen["condition"].std(-1), torch.ones(2), atol=0.05, rtol=0)


def test_contextual_pooling_tells_the_two_objects_of_a_question_apart():
    """A bag-of-words pool gives "X relative to Y" and "Y relative to X" one condition; the contextual one
    does not, and what the placeholders (masked out) hold never reaches it."""
    torch.manual_seed(0)
    pool = ContextualPooling(16, num_heads=2)
    words = torch.randn(6, 16)  # where is the | red circle | relative to the | blue square
    x_then_y = torch.stack([words[0], words[1], words[2], words[3], words[4], words[5]])[None]
    y_then_x = torch.stack([words[0], words[4], words[5], words[3], words[1], words[2]])[None]
    mask = torch.ones(1, 6, dtype=torch.bool)
    torch.testing.assert_close(masked_mean(x_then_y, mask), masked_mean(y_then_x, mask))  # the bag of words
    assert (pool(x_then_y, mask) - pool(y_then_x, mask)).abs().max() > 1e-3
    # masked-out tokens (image placeholders) change nothing, wherever they sit; an empty prompt pools to 0
    padded = torch.cat([x_then_y[:, :2], torch.randn(1, 3, 16) * 100, x_then_y[:, 2:]], dim=1)
    padded_mask = torch.tensor([[1, 1, 0, 0, 0, 1, 1, 1, 1]]).bool()
    torch.testing.assert_close(pool(padded, padded_mask), pool(x_then_y, mask), atol=1e-5, rtol=1e-5)
    assert torch.equal(pool(padded, torch.zeros_like(padded_mask)), torch.zeros(1, 16))
    cnn = CNNEncoder(CNNEncoderConfig(channels=[8, 16], image_size=16, condition_dim=16,
                                      condition_pooling="contextual"))
    assert isinstance(cnn.condition_pool, ContextualPooling)
    cnn.pool_condition(x_then_y, mask).sum().backward()
    assert cnn.condition_pool.layer.self_attn.in_proj_weight.grad.abs().sum() > 0


def test_a_multi_query_pool_keeps_several_words_apart():
    torch.manual_seed(0)
    prompt, mask = torch.randn(2, 6, 8), torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]).bool()
    pool = AttentionPooling(8, num_queries=3)
    assert pool(prompt, mask).shape == (2, 8)
    # Untrained, every query is the mean: the output is the projection of three copies of it.
    mean = masked_mean(prompt, mask)
    torch.testing.assert_close(pool(prompt, mask), pool.proj(mean.repeat(1, 3)))
    # Trained apart, each query settles on its own word, and the projection sees the words side by side.
    with torch.no_grad():
        pool.score.weight.copy_(1000 * torch.eye(3, 8))
    scores = pool.score_norm(prompt)[..., :3].masked_fill(~mask[..., None], float("-inf"))
    picked = torch.stack([prompt[n, scores[n].argmax(0)] for n in range(2)])  # (2, 3 queries, 8)
    torch.testing.assert_close(pool(prompt, mask), pool.proj(picked.flatten(1)), atol=1e-4, rtol=0)
    torch.testing.assert_close(pool(prompt, torch.zeros_like(mask)), pool.proj.bias.expand(2, 8))  # no prompt
    # Saved single-query pools keep their layout: no projection.
    assert AttentionPooling(8).proj is None and "proj.weight" not in AttentionPooling(8).state_dict()
    with pytest.raises(ValueError, match="at least one query"):
        AttentionPooling(8, num_queries=0)
    cnn = CNNEncoder(CNNEncoderConfig(condition_dim=8, condition_pooling="contextual", condition_queries=2))
    assert cnn.pool_condition(prompt, mask).shape == (2, 8)
