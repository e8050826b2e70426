"""Log-likelihood scoring, perplexity and multiple choice against hand-rolled, unbatched references."""

from __future__ import annotations

import math

import pytest
import torch

from moezoo.convert.testing import tiny_tokenizer
from moezoo.eval.language import encode_pair, multiple_choice, perplexity
from moezoo.eval.scoring import context_length, loglikelihoods, rolling_loglikelihood, rolling_windows
from moezoo.models.lm import LMConfig, MoEForCausalLM
from moezoo.moe import MoEConfig

VOCAB, CONTEXT, BOS = 96, 16, 1


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = LMConfig(vocab_size=VOCAB, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=64,
                   moe=MoEConfig(dim=32, expert_dim=16, num_experts=4, top_k=2), moe_layers=[1],
                   max_position_embeddings=CONTEXT, bos_token_id=BOS, eos_token_id=2, pad_token_id=0,
                   init_std=0.2)  # large weights: peaked distributions, so argmax and acc_norm matter
    return MoEForCausalLM(cfg, tokenizer=tiny_tokenizer(VOCAB)).eval()


def reference(model, context, continuation, max_length=CONTEXT):
    """One sequence, no padding, float64 log-softmax: (log p(continuation | context), greedy)."""
    ids = (list(context) + list(continuation))[-(max_length + 1):]
    with torch.no_grad():
        logp = model(input_ids=torch.tensor([ids[:-1]])).logits[0].double().log_softmax(-1)
    n = len(continuation)
    rows = range(len(ids) - 1 - n, len(ids) - 1)  # position t predicts ids[t + 1]
    targets = ids[-n:]
    return (sum(logp[r, t].item() for r, t in zip(rows, targets)),
            all(logp[r].argmax().item() == t for r, t in zip(rows, targets)))


def random_ids(n, seed):
    return torch.randint(3, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_loglikelihoods_equal_unbatched_reference(model):
    requests = [
        (random_ids(3, 0), random_ids(2, 1)),
        ([BOS], random_ids(5, 2)),
        (random_ids(9, 3), random_ids(1, 4)),
        (random_ids(9, 3), random_ids(1, 5)),  # the same input row as the one before: shared forward
        (random_ids(20, 6), random_ids(4, 7)),  # longer than the context: cut on the left
        (random_ids(1, 8), random_ids(16, 9)),  # a continuation filling the whole context
        (random_ids(6, 10), random_ids(3, 11)),
    ]
    got = loglikelihoods(model, requests, batch_size=3)
    want = [reference(model, c, x) for c, x in requests]
    assert [g for _, g in got] == [g for _, g in want]
    assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-4)
    assert len({round(ll, 3) for ll, _ in got}) == len(requests)  # order kept, nothing swapped or reused


def test_greedy_flag(model):
    context = random_ids(4, 12)
    greedy = model.generate(torch.tensor([context]), max_new_tokens=3, eos_token_id=[])[0, 4:].tolist()
    other = greedy[:2] + [(greedy[2] + 1) % VOCAB]
    (ll_greedy, is_greedy), (ll_other, is_other) = loglikelihoods(model, [(context, greedy), (context, other)])
    assert is_greedy and not is_other
    assert ll_greedy > ll_other
    assert loglikelihoods(model, [(context, other[:2])])[0][1]  # its first two tokens are still greedy


def test_rolling_is_the_sum_over_windows_and_plain_scoring_when_it_fits(model):
    doc = random_ids(40, 13)
    windows = rolling_windows(doc, BOS, CONTEXT)
    assert [t for _, cont in windows for t in cont] == doc  # every token predicted once
    assert all(len(ctx) + len(cont) <= CONTEXT + 1 for ctx, cont in windows)
    assert [len(ctx) + len(cont) for ctx, cont in windows] == [CONTEXT + 1] * 3  # later windows: full context
    by_hand = sum(reference(model, ctx, cont)[0] for ctx, cont in windows)
    assert rolling_loglikelihood(model, doc) == pytest.approx(by_hand, abs=1e-4)
    short = random_ids(CONTEXT, 14)
    assert rolling_loglikelihood(model, short) == pytest.approx(reference(model, [BOS], short)[0], abs=1e-4)
    assert rolling_loglikelihood(model, short, max_length=5) != pytest.approx(
        reference(model, [BOS], short)[0], abs=1e-3)  # smaller windows do see less context


def test_windows_carry_full_context():
    # 7 tokens in windows of 3: after the first, each window's inputs are the 3 tokens before its last target.
    assert rolling_windows([10, 11, 12, 13, 14, 15, 16], BOS, 3) == [
        ([BOS], [10, 11, 12]), ([12], [13, 14, 15]), ([13, 14, 15], [16])]
    assert rolling_windows([10, 11], None, 3) == [([10], [11])]  # no prefix: the first token is context only


def test_multimodal_model_scores_text_as_its_llm():
    import moezoo

    torch.manual_seed(0)
    mm = moezoo.create_model("mm_tiny_cnn")
    requests = [([BOS, 5, 6], [7, 8]), ([BOS], [9])]
    assert context_length(mm) == mm.config.llm.max_position_embeddings
    assert loglikelihoods(mm, requests) == loglikelihoods(mm.llm, requests)


def test_training_flag_restored_and_bad_requests(model):
    model.train()
    try:
        loglikelihoods(model, [([BOS], [5])])
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="non-empty context"):
        loglikelihoods(model, [([], [5])])
    with pytest.raises(ValueError, match="batch_size"):
        loglikelihoods(model, [([BOS], [5])], batch_size=0)


def test_perplexity_is_exp_mean_nll(model):
    tok = model.tokenizer
    texts = ["w1 w2 w3 w4", "w10 w20", "w5 w6 w7 w8 w9 w10 w11"]
    nll = count = 0.0
    for text in texts:
        ids = tok.encode(text)  # this tokenizer adds no BOS: the model's BOS conditions the first token
        nll -= reference(model, [BOS], ids)[0]
        count += len(ids)
    out = perplexity(model, texts, batch_size=2)
    assert out["tokens"] == count == 13
    assert out["nll_per_token"] == pytest.approx(nll / count, abs=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-5)

    long = " ".join(f"w{i % 50}" for i in range(3 * CONTEXT))  # rolling windows
    ids = tok.encode(long)
    assert perplexity(model, [long])["nll_per_token"] == pytest.approx(
        -rolling_loglikelihood(model, ids) / len(ids), abs=1e-5)


def test_perplexity_takes_the_tokenizers_own_bos(model):
    from tokenizers.processors import TemplateProcessing

    tok = tiny_tokenizer(VOCAB)
    tok._tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", BOS)])
    assert tok.encode("w1 w2")[0] == BOS
    texts = ["w1 w2 w3", "w4 w5"]
    assert perplexity(model, texts, tokenizer=tok) == pytest.approx(perplexity(model, texts))


def test_multiple_choice_acc_and_acc_norm_by_hand(model):
    tok = model.tokenizer
    items = [
        {"context": "w3 w4 w5", "choices": ["w6", "w7 w8 w9 w10 w11", "w12 w13"], "label": 0},
        {"context": "w20 w21", "choices": ["w22 w23 w24 w25 w26 w27", "w28"], "label": 0},
        {"context": "w30 ", "choices": ["w31", "w32 w33", "w34 w35 w36 w37"], "label": 2},
        {"context": "w40 w41 w42 w43", "choices": ["w44 w45 w46 w47", "w48"], "label": 1},
    ]
    hits = hits_norm = 0
    preds, preds_norm = [], []
    for item in items:
        lls = [loglikelihoods(model, [encode_pair(tok, item["context"], " " + c)])[0][0] for c in item["choices"]]
        norm = [ll / len(c) for ll, c in zip(lls, item["choices"])]
        preds.append(lls.index(max(lls)))
        preds_norm.append(norm.index(max(norm)))
        hits += preds[-1] == item["label"]
        hits_norm += preds_norm[-1] == item["label"]
    assert preds != preds_norm  # the items tell the two metrics apart
    assert multiple_choice(model, items, batch_size=4) == {"acc": hits / 4, "acc_norm": hits_norm / 4}


def test_encode_pair_moves_trailing_space_and_handles_empty_context(model):
    tok = model.tokenizer
    assert encode_pair(tok, "w3 w4 ", "w5") == encode_pair(tok, "w3 w4", " w5") == ([7, 8], [9])
    assert encode_pair(tok, "", " w5 w6", prefix_token_id=BOS) == ([BOS], [9, 10])
    with pytest.raises(ValueError, match="label"):
        multiple_choice(model, [{"context": "w1", "choices": ["w2"], "label": 1}])
