"""Generation: greedy parity with transformers, stop tokens, left padding, sampling."""

import contextlib

import pytest
import torch

import moezoo
from moezoo.convert.testing import TINY_FAMILIES, TINY_VOCAB, tiny_hf_checkpoint
from moezoo.models.lm import sample_next
from moezoo.moe.threads import decoding_split


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """family -> (transformers model, moezoo model) with the same weights."""
    out = {}
    for family in TINY_FAMILIES:
        path = tmp_path_factory.mktemp(family)
        hf = tiny_hf_checkpoint(family, path)
        out[family] = (hf, moezoo.load(path))
    return out


def _prompt(length=6, seed=0, batch=1):
    return torch.randint(4, TINY_VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("split_weights", [False, True], ids=["plain", "split"])
@pytest.mark.parametrize("family", list(TINY_FAMILIES))
def test_greedy_32_tokens_match_transformers(pairs, family, split_weights, set_threads):
    """``split``: every projection of the tiny model is read on 2 threads, as a real model's are."""
    if split_weights:
        set_threads(2)
    hf, model = pairs[family]
    ids = _prompt(seed=list(TINY_FAMILIES).index(family))
    ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False,
                      eos_token_id=None, pad_token_id=0)
    with decoding_split(0) if split_weights else contextlib.nullcontext():
        out = model.generate(ids, max_new_tokens=32, eos_token_id=[])
    assert out.shape == (1, 6 + 32)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("family", ["olmoe", "qwen3_moe"])
def test_stop_tokens_and_padding_match_transformers(pairs, family):
    hf, model = pairs[family]
    ids = _prompt(length=5, seed=7, batch=2)
    free = model.generate(ids, max_new_tokens=12, eos_token_id=[])
    stop = int(free[0, 5 + 3])  # row 0 emits it at step 4: use it as the stop token
    ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                      eos_token_id=stop, pad_token_id=0)
    out = model.generate(ids, max_new_tokens=12, eos_token_id=stop, pad_token_id=0)
    assert torch.equal(out, ref)
    after = (out[0, 5:] == stop).nonzero()[0, 0].item()
    assert (out[0, 5 + after + 1:] == 0).all()  # finished rows are padded


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe", "llama"])
def test_batched_left_padded_equals_per_prompt(pairs, family):
    _, model = pairs[family]
    prompts = [_prompt(length=n, seed=n)[0] for n in (3, 7, 5)]
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, 1
    batched = model.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[])
    for i, p in enumerate(prompts):
        alone = model.generate(p[None], max_new_tokens=16, eos_token_id=[])
        assert torch.equal(batched[i, width:], alone[0, len(p):]), f"prompt {i}"


def test_left_padded_batch_matches_transformers(pairs):
    hf, model = pairs["qwen3_moe"]
    ids = _prompt(length=6, seed=3, batch=2)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    ids[1, :2] = 0
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, eos_token_id=None, pad_token_id=0)
    assert torch.equal(model.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=[]), ref)


def test_sampling(pairs):
    _, model = pairs["olmoe"]
    ids = _prompt(seed=4)

    def sample(seed, **kw):
        return model.generate(ids, max_new_tokens=12, do_sample=True, eos_token_id=[],
                              generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(sample(0, temperature=0.7), sample(0, temperature=0.7))  # reproducible
    assert not torch.equal(sample(0, temperature=5.0), sample(1, temperature=5.0))
    greedy = model.generate(ids, max_new_tokens=12, eos_token_id=[])
    assert torch.equal(sample(2, top_k=1), greedy)
    assert torch.equal(sample(3, top_p=1e-6), greedy)


def test_top_k_top_p_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, -5.0]]).repeat(2000, 1)
    gen = torch.Generator().manual_seed(0)
    assert set(sample_next(logits, True, top_k=2, generator=gen).tolist()) == {0, 1}
    # probs ~ [0.665, 0.245, 0.09, 0.0002]: top_p=0.8 keeps the first two tokens only.
    assert set(sample_next(logits, True, top_p=0.8, generator=gen).tolist()) == {0, 1}
    assert set(sample_next(logits, True, top_p=0.95, generator=gen).tolist()) == {0, 1, 2}


def test_kv_cache_decoding_equals_full_forward(pairs):
    from moezoo.models.lm import KVCache

    _, model = pairs["qwen2_moe"]
    ids = _prompt(length=9, seed=5)
    with torch.no_grad():
        full = model(input_ids=ids).logits
        cache = KVCache.for_model(model.config, 1, 9, torch.float32, ids.device)
        steps = [model(input_ids=ids[:, :4], cache=cache).logits]
        steps += [model(input_ids=ids[:, t:t + 1], cache=cache).logits for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="KVCache is full"):
        model(input_ids=ids[:, :1], cache=cache)
