"""``routing_stats`` on records worked out by hand (every key, ties, the chosen experts against the top-k of probs,
expert choice, MH-MoE sub-tokens), and through a tiny Mixtral checkpoint with hand-set router weights."""

from __future__ import annotations

import math

import pytest
import torch

import moezoo
from moezoo.analysis import chosen_experts, routing_stats, site_routings
from moezoo.moe import MoEConfig, MoELayer


def H(*p: float) -> float:
    """Shannon entropy in nats, written out: -sum p ln p (0 ln 0 = 0)."""
    return -sum(x * math.log(x) for x in p if x > 0)


# T = 4 tokens, E = 4 experts, top-2.
PROBS = torch.tensor([[0.5, 0.3, 0.1, 0.1],    # top-2: 0, 1        g = (0.5, 0.3) / 0.8 = (0.625, 0.375)
                      [0.1, 0.6, 0.2, 0.1],    # top-2: 1, 2        g = (0.6, 0.2) / 0.8 = (0.75, 0.25)
                      [0.4, 0.4, 0.1, 0.1],    # a tie: 0, then 1   g = (0.5, 0.5)
                      [0.2, 0.1, 0.6, 0.1]],   # top-2: 2, 0        g = (0.6, 0.2) / 0.8 = (0.75, 0.25)
                     dtype=torch.float64)   # float64, so that 0.1 is the 0.1 of the arithmetic below


def test_every_key_of_a_worked_four_token_example():
    s = routing_stats(PROBS, top_k=2, correct=[True, False, True, False], modality=["text", "image", "image", "text"])
    # Top-k memberships: expert 0 in t0, t2, t3; expert 1 in t0, t1, t2; expert 2 in t1, t3; expert 3 nowhere.
    assert s["topk_counts"].tolist() == [3, 3, 2, 0]
    # First choices: t0 -> 0, t1 -> 1, t2 -> 0 (the tie goes to the lower index), t3 -> 2.
    assert s["top1_counts"].tolist() == [2, 1, 1, 0]
    assert s["expert_frequency"].tolist() == [2 / 4, 1 / 4, 1 / 4, 0.0]        # top-1 / T
    assert s["topk_frequency"].tolist() == [3 / 8, 3 / 8, 2 / 8, 0.0]          # top-k / (k T), k T = 8
    assert s["activation_rate"].tolist() == [3 / 4, 3 / 4, 2 / 4, 0.0]         # top-k / T: sums to k = 2
    assert s["never_activated"] == [3]
    # gate_entropy: the mean of H(p_t) / ln 4.
    gate = [H(.5, .3, .1, .1), H(.1, .6, .2, .1), H(.4, .4, .1, .1), H(.2, .1, .6, .1)]
    assert s["gate_entropy"] == pytest.approx(sum(gate) / 4 / math.log(4), abs=1e-12)
    # topk_entropy: the mean of H(g_t) / ln 2 over the renormalised pairs above.
    topk = [H(.625, .375), H(.75, .25), H(.5, .5), H(.75, .25)]
    assert s["topk_entropy"] == pytest.approx(sum(topk) / 4 / math.log(2), abs=1e-12)
    assert s["topk_entropy"] == pytest.approx((0.954434 + 0.811278 + 1.0 + 0.811278) / 4, abs=1e-6)
    # load_entropy: H(3/8, 3/8, 2/8, 0) / ln 4.
    assert s["load_entropy"] == pytest.approx(H(3 / 8, 3 / 8, 2 / 8) / math.log(4), abs=1e-12)
    # margin, renormalised: (0.625 - 0.375 + 0.75 - 0.25 + 0.5 - 0.5 + 0.75 - 0.25) / 4 = (0.25 + 0.5 + 0 + 0.5) / 4.
    assert s["margin"] == pytest.approx(1.25 / 4, abs=1e-12)
    # correct = t0, t2. Expert 0 (t0, t2, t3): 2/3; expert 1 (t0, t1, t2): 2/3; expert 2 (t1, t3): 0; expert 3: NaN.
    acc = s["expert_accuracy"].tolist()
    assert acc[:3] == pytest.approx([2 / 3, 2 / 3, 0.0]) and math.isnan(acc[3])
    # First choices: expert 0 (t0, t2): 1; expert 1 (t1): 0; expert 2 (t3): 0; expert 3: NaN.
    top1 = s["expert_accuracy_top1"].tolist()
    assert top1[:3] == [1.0, 0.0, 0.0] and math.isnan(top1[3])
    # Text = t0 {0, 1} and t3 {2, 0}: counts (2, 1, 1, 0) of 4. Image = t1 {1, 2} and t2 {0, 1}: (1, 2, 1, 0) of 4.
    assert s["modality_frequency"]["text"].tolist() == [0.5, 0.25, 0.25, 0.0]
    assert s["modality_frequency"]["image"].tolist() == [0.25, 0.5, 0.25, 0.0]
    assert (s["num_tokens"], s["num_experts"], s["top_k"]) == (4, 4, 2)


def test_raw_margin_and_what_is_left_out_without_labels():
    s = routing_stats(PROBS, top_k=2, renormalize=False)
    # Raw weights: (0.5 - 0.3 + 0.6 - 0.2 + 0.4 - 0.4 + 0.6 - 0.2) / 4 = (0.2 + 0.4 + 0 + 0.4) / 4 = 0.25.
    assert s["margin"] == pytest.approx(0.25, abs=1e-7)
    # Everything else is the same as renormalised (topk_entropy always renormalises).
    assert s["topk_entropy"] == routing_stats(PROBS, top_k=2)["topk_entropy"]
    assert not {"expert_accuracy", "expert_accuracy_top1", "modality_frequency"} & set(s)


def test_an_unused_expert_has_nan_accuracy_and_no_share():
    s = routing_stats(PROBS, top_k=1, correct=torch.tensor([1, 1, 0, 1]))
    # Top-1: t0 -> 0, t1 -> 1, t2 -> 0 (tie), t3 -> 2; expert 3 never chosen.
    assert s["topk_counts"].tolist() == s["top1_counts"].tolist() == [2, 1, 1, 0]
    acc = s["expert_accuracy"].tolist()
    assert acc[:3] == [0.5, 1.0, 1.0] and math.isnan(acc[3])   # expert 0: t0 right, t2 wrong
    assert torch.equal(s["expert_accuracy"].isnan(), s["expert_accuracy_top1"].isnan())
    assert s["never_activated"] == [3] and s["activation_rate"].sum() == 1.0   # sums to k = 1


def test_top1_margin_and_entropy_are_defined_for_k_equal_one():
    # k = 1: the renormalised weight is always 1, so the margin is p(chosen) minus the best other p.
    # t0: 0.5 - 0.3; t1: 0.6 - 0.2; t2: 0.4 - 0.4 (tie); t3: 0.6 - 0.2. Mean: (0.2 + 0.4 + 0 + 0.4) / 4 = 0.25.
    for renormalize in (True, False):
        s = routing_stats(PROBS, top_k=1, renormalize=renormalize)
        assert s["margin"] == pytest.approx(0.25, abs=1e-7)
        assert math.isnan(s["topk_entropy"])  # one weight: H / ln 1 is undefined
    # With the chosen experts given (a biased sigmoid router took expert 1 for t0): 0.3 - 0.5 = -0.2 there.
    s = routing_stats(PROBS, top_k=1, expert_idx=torch.tensor([[1], [1], [0], [2]]))
    assert s["margin"] == pytest.approx((-0.2 + 0.4 + 0.0 + 0.4) / 4, abs=1e-7)


def test_ties_go_to_the_lower_index():
    uniform = torch.full((3, 4), 0.25)
    s = routing_stats(uniform, top_k=2)
    assert s["topk_counts"].tolist() == [3, 3, 0, 0] and s["top1_counts"].tolist() == [3, 0, 0, 0]
    assert s["gate_entropy"] == pytest.approx(1.0, abs=1e-12)   # H(uniform) = ln 4
    assert s["topk_entropy"] == pytest.approx(1.0, abs=1e-12)   # g = (1/2, 1/2)
    assert s["margin"] == 0.0 and s["never_activated"] == [2, 3]
    # load: (3/6, 3/6, 0, 0) -> H = ln 2, over ln 4 = 1/2.
    assert s["load_entropy"] == pytest.approx(0.5, abs=1e-12)


def test_the_chosen_experts_win_over_the_top_k_of_probs():
    # A sigmoid router's balancing bias sent t0 to experts 2 and 1 (rank order) rather than 0 and 1.
    chosen = torch.tensor([[2, 1], [1, 2], [0, 1], [2, 0]])
    s = routing_stats(PROBS, top_k=2, expert_idx=chosen)
    assert s["topk_counts"].tolist() == [2, 3, 3, 0]
    assert s["top1_counts"].tolist() == [1, 1, 2, 0]   # the first in rank order: 2, 1, 0, 2
    # t0's weights are p2 = 0.1, p1 = 0.3: g = (0.25, 0.75), sorted margin 0.5 (not p(rank 1) - p(rank 2) < 0).
    assert s["margin"] == pytest.approx((0.5 + 0.5 + 0.0 + 0.5) / 4, abs=1e-7)
    assert s["topk_entropy"] == pytest.approx((3 * H(.75, .25) + H(.5, .5)) / 4 / math.log(2), abs=1e-12)
    assert s["gate_entropy"] == routing_stats(PROBS, top_k=2)["gate_entropy"]   # over probs, whatever was chosen


def test_expert_choice_counts_pairs_and_takes_entropies_over_probs():
    probs = torch.tensor([[0.6, 0.3, 0.1],
                          [0.2, 0.2, 0.6],
                          [0.5, 0.25, 0.25]], dtype=torch.float64)
    # Each expert picked tokens: expert 0 -> t0, t2; expert 1 -> t0; expert 2 -> t0. t1 got no expert.
    mask = torch.tensor([[True, True, True], [False, False, False], [True, False, False]])
    s = routing_stats(probs, top_k=1, expert_idx=mask, correct=[True, True, False])
    assert s["topk_counts"].tolist() == [2, 1, 1]
    assert s["top1_counts"].tolist() == [2, 0, 0]   # t0's likeliest chosen expert is 0; t2's only one is 0
    assert s["expert_frequency"].tolist() == [1.0, 0.0, 0.0]    # over the 2 tokens that got an expert
    assert s["topk_frequency"].tolist() == [2 / 4, 1 / 4, 1 / 4]    # over the 4 pairs
    assert s["activation_rate"].tolist() == [2 / 3, 1 / 3, 1 / 3]   # per token: 4 pairs / 3 tokens
    assert s["expert_accuracy"].tolist() == [0.5, 1.0, 1.0]   # expert 0: t0 right, t2 wrong
    # Margin and entropies over probs: the top-1 of each row minus the second: 0.3, 0.4, 0.25.
    assert s["margin"] == pytest.approx((0.3 + 0.4 + 0.25) / 3, abs=1e-7)
    assert s["gate_entropy"] == pytest.approx((H(.6, .3, .1) + H(.2, .2, .6) + H(.5, .25, .25)) / 3 / math.log(3))
    s2 = routing_stats(probs, top_k=2, expert_idx=mask)   # top-2 of probs: (0.6, 0.3), (0.6, 0.2), (0.5, 0.25)
    assert s2["topk_entropy"] == pytest.approx((H(2 / 3, 1 / 3) * 2 + H(.75, .25)) / 3 / math.log(2))


def test_mh_moe_sub_tokens_count_as_tokens_and_inherit_their_token_labels():
    # 2 tokens x 2 sub-tokens, rows t*h + s; top-1.
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8], [0.9, 0.1], [0.6, 0.4]])
    s = routing_stats(probs, top_k=1, correct=[True, False], modality=["image", "text"])
    assert s["num_tokens"] == 4 and s["topk_counts"].tolist() == [3, 1]
    # Sub-tokens 0, 1 are right (token 0); expert 0 has rows 0, 2, 3 -> 1/3; expert 1 has row 1 -> 1.
    assert s["expert_accuracy"].tolist() == pytest.approx([1 / 3, 1.0])
    assert s["modality_frequency"] == {"image": pytest.approx(torch.tensor([0.5, 0.5], dtype=torch.float64)),
                                       "text": pytest.approx(torch.tensor([1.0, 0.0], dtype=torch.float64))}


def test_bad_records_say_what_is_expected():
    with pytest.raises(ValueError, match=r"probs must be \(T, E\)"):
        routing_stats(torch.ones(4), top_k=1)
    with pytest.raises(ValueError, match=r"top_k=5 must be in \[1, E=4\]"):
        routing_stats(PROBS, top_k=5)
    with pytest.raises(ValueError, match=r"expert_idx must be \(T, k\) = \(4, 2\)"):
        routing_stats(PROBS, top_k=2, expert_idx=torch.zeros(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"expert ids must be in \[0, 4\)"):
        routing_stats(PROBS, top_k=1, expert_idx=torch.full((4, 1), 4))
    with pytest.raises(ValueError, match=r"expert-choice mask must be \(T, E\)"):
        routing_stats(PROBS, top_k=1, expert_idx=torch.ones(4, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="correct has 3 values; probs has 4 rows"):
        routing_stats(PROBS, top_k=1, correct=[True] * 3)


@pytest.mark.parametrize("kwargs", [{}, {"num_heads": 2}, {"router": "expert_choice"}, {"router": "sigmoid"}],
                         ids=["softmax", "mh_moe", "expert_choice", "sigmoid"])
def test_chosen_experts_of_a_layer_routing(kwargs):
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(dim=8, expert_dim=16, num_experts=4, top_k=2, **kwargs))
    routing = layer(torch.randn(5, 8)).routing
    chosen = chosen_experts(routing)
    pairs = sorted(zip(routing.token_idx.tolist(), routing.expert_idx.tolist()))
    if routing.token_choice:
        T = 5 * kwargs.get("num_heads", 1)
        assert chosen.shape == (T, 2)
        assert sorted((t, e) for t in range(T) for e in chosen[t].tolist()) == pairs
        assert chosen[:, 0].tolist() == routing.expert_idx[:T].tolist()   # rank 1 first
    else:
        assert chosen.dtype == torch.bool and chosen.shape == (5, 4)
        assert sorted(map(tuple, chosen.nonzero().tolist())) == pairs
    s = routing_stats(routing.probs, 2, expert_idx=chosen)
    assert s["topk_counts"].tolist() == torch.bincount(routing.expert_idx, minlength=4).tolist()


# --- through the model: a tiny Mixtral checkpoint with hand-set router weights --------------------------------

def _mixtral(tmp_path, edit) -> torch.nn.Module:
    """A tiny transformers Mixtral (2 layers, 4 experts, top-2) with ``edit(hf_model)`` applied, saved in its
    own format and loaded by moezoo."""
    from moezoo.convert.testing import tiny_hf_model, tiny_tokenizer

    hf = tiny_hf_model("mixtral", seed=0)
    with torch.no_grad():
        edit(hf)
    hf.save_pretrained(str(tmp_path))
    tiny_tokenizer().save_pretrained(str(tmp_path))
    return moezoo.load(tmp_path)


def _ids() -> torch.Tensor:
    return torch.randint(4, 96, (2, 9), generator=torch.Generator().manual_seed(0))


def test_a_zero_router_is_uniform(tmp_path):
    def zero(hf):
        for layer in hf.model.layers:
            layer.mlp.gate.weight.zero_()

    model = _mixtral(tmp_path, zero)
    with torch.no_grad():
        out = model(input_ids=_ids())
    routings = site_routings(model, out)
    assert list(routings) == ["llm.0", "llm.1"]
    for (routing,) in routings.values():
        s = routing_stats(routing.probs, top_k=2)   # logits 0: p = 1/4 for each of 18 tokens
        assert s["gate_entropy"] == pytest.approx(1.0, abs=1e-7)
        assert s["topk_entropy"] == pytest.approx(1.0, abs=1e-7) and s["margin"] == pytest.approx(0.0, abs=1e-7)
        assert s["topk_counts"].tolist() == [18, 18, 0, 0]   # the ties go to experts 0 and 1


def test_a_router_scaled_toward_one_expert_sends_every_token_there(tmp_path):
    expert = 2

    def toward(hf):
        # Channel 0 of every embedding is 1, so the router's input (the normed residual stream) is positive
        # there, about sqrt(32) = 5.7 times the norm weight; the gate reads only that channel, x 1e4, for expert 2:
        # its logit is ~5e4, the others' 0, and the softmax is one-hot in float32.
        hf.model.embed_tokens.weight[:, 0] = 1.0
        for layer in hf.model.layers:
            layer.mlp.gate.weight.zero_()
            layer.mlp.gate.weight[expert, 0] = 1e4

    model = _mixtral(tmp_path, toward)
    with torch.no_grad():
        out = model(input_ids=_ids())
    for routing in out.routings:
        s = routing_stats(routing.probs, top_k=2, expert_idx=chosen_experts(routing))
        assert s["gate_entropy"] == pytest.approx(0.0, abs=1e-9)
        assert s["expert_frequency"][expert] == 1.0 and s["top1_counts"][expert] == 18
        assert s["margin"] == pytest.approx(1.0, abs=1e-6)   # renormalised weights (1, 0)
