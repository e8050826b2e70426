"""``load_entropy`` (DESIGN.md: H(topk_frequency) / ln E) on hand-computed cases, and through a tiny real model at
the answer positions of shapes-VQA questions, checked against the routing read off the forward by hand."""

from __future__ import annotations

import math

import pytest
import torch

import moezoo
from moezoo.analysis import (
    answer_load_entropy,
    answer_topk_counts,
    load_entropy,
    normalized_load_entropy,
    selected_topk_counts,
    topk_counts,
)
from moezoo.moe import Routing


def test_an_even_load_is_one_and_a_single_expert_is_zero():
    # 4 tokens, top-2 of 4 experts, each expert chosen twice: topk_frequency = (1/4, 1/4, 1/4, 1/4).
    assert load_entropy(expert_idx=torch.tensor([[0, 1], [2, 3], [1, 0], [3, 2]]), num_experts=4) == 1.0
    # Every token's top-1 is expert 2: topk_frequency = (0, 0, 1, 0), H = 0.
    probs = torch.tensor([[0.1, 0.1, 0.7, 0.1], [0.0, 0.2, 0.5, 0.3], [0.2, 0.2, 0.4, 0.2]])
    assert load_entropy(probs, top_k=1) == 0.0
    assert topk_counts(probs, top_k=1).tolist() == [0, 0, 3, 0]


def test_a_worked_four_expert_example_with_a_tie():
    probs = torch.tensor([[0.50, 0.30, 0.10, 0.10],    # top-2: experts 0, 1
                          [0.10, 0.60, 0.20, 0.10],    # top-2: experts 1, 2
                          [0.25, 0.25, 0.25, 0.25]])   # a four-way tie: the lower indices, 0 and 1
    counts = topk_counts(probs, top_k=2)
    assert counts.tolist() == [2, 3, 1, 0]
    # topk_frequency = counts / (k T) = (2/6, 3/6, 1/6, 0) = (1/3, 1/2, 1/6, 0)
    # H = 1/3 ln 3 + 1/2 ln 2 + 1/6 ln 6 = 0.366204 + 0.346574 + 0.298627 = 1.011404 nats; / ln 4 = 0.729574
    expected = (math.log(3) / 3 + math.log(2) / 2 + math.log(6) / 6) / math.log(4)
    assert load_entropy(probs, top_k=2) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.729574, abs=1e-6)


def test_the_chosen_experts_win_over_the_top_k_of_probs():
    # The sigmoid router's bias (or a capacity drop) sends tokens elsewhere than the top-k of their probs.
    probs = torch.tensor([[0.9, 0.05, 0.03, 0.02], [0.8, 0.1, 0.05, 0.05]])
    chosen = torch.tensor([[2], [3]])
    assert topk_counts(probs, top_k=1, expert_idx=chosen).tolist() == [0, 0, 1, 1]
    assert load_entropy(probs, top_k=1, expert_idx=chosen) == pytest.approx(math.log(2) / math.log(4))
    assert load_entropy(probs, top_k=1) == 0.0


def test_ties_go_to_the_lower_index_and_bad_input_says_what_is_expected():
    assert topk_counts(torch.tensor([[0.4, 0.2, 0.4, 0.0]]), top_k=1).tolist() == [1, 0, 0, 0]
    assert topk_counts(torch.tensor([[0.0, 0.3, 0.3, 0.3]]), top_k=2).tolist() == [0, 1, 1, 0]
    with pytest.raises(ValueError, match="probs .* with top_k, or expert_idx"):
        topk_counts()
    with pytest.raises(ValueError, match="num_experts"):
        topk_counts(expert_idx=torch.tensor([[0, 1]]))
    with pytest.raises(ValueError, match=r"expert ids must be in \[0, 4\)"):
        topk_counts(expert_idx=torch.tensor([[0, 4]]), num_experts=4)
    with pytest.raises(ValueError, match=r"top_k=5 must be in \[1, E=4\]"):
        topk_counts(torch.full((2, 4), 0.25), top_k=5)
    assert math.isnan(normalized_load_entropy(torch.zeros(4, dtype=torch.long)))  # no tokens


def test_mh_moe_sub_tokens_count_for_their_token():
    # 3 tokens x 2 sub-tokens, top-1, rank-major: sub-token s of token t is row 2t + s.
    routing = Routing(token_idx=torch.arange(6), expert_idx=torch.tensor([0, 1, 2, 2, 3, 0]), weight=torch.ones(6),
                      logits=torch.zeros(6, 4), probs=torch.full((6, 4), 0.25))
    assert selected_topk_counts(routing, torch.tensor([[True, False, True]])).tolist() == [2, 1, 0, 1]
    with pytest.raises(ValueError, match="not a multiple"):
        selected_topk_counts(routing, torch.ones(1, 4, dtype=torch.bool))


def _by_hand(model, task_name, limit, batch_size):
    """The answer positions' experts read off the forward's routing directly: ``expert_idx`` is rank-major,
    ``(k, B*T)`` flattened, and left padding puts every prompt's last token in the last column."""
    from moezoo.eval.batching import pad
    from moezoo.eval.prompts import encode_prompts, render_prompts
    from moezoo.eval.tasks import TASKS

    task = TASKS[task_name]
    items = task.items(limit)
    texts, rendered = render_prompts(model, [f"<image>\n{task.prompt(it)}" for it in items])
    ids = encode_prompts(model, texts, rendered)
    layers = None
    model.eval()
    for start in range(0, len(items), batch_size):
        rows = list(range(start, min(start + batch_size, len(items))))
        inputs = model.processor.media_inputs([texts[i] for i in rows], images=[[items[i]["image"]] for i in rows])
        inputs |= pad([ids[i] for i in rows], model.tokenizer.pad_token_id, side="left")
        with torch.no_grad():
            out = model(**inputs)
        B, T = inputs["input_ids"].shape
        counts = []
        for routing in out.routings:
            E = routing.probs.shape[-1]
            h = routing.probs.shape[0] // (B * T)
            k = routing.expert_idx.numel() // (B * T * h)
            by_rank = routing.expert_idx.view(k, B, T, h)  # rank, row, position, sub-token
            counts.append(torch.bincount(by_rank[:, :, -1, :].reshape(-1), minlength=E))
        layers = counts if layers is None else [a + b for a, b in zip(layers, counts)]
    return layers


@pytest.mark.parametrize("overrides", [{}, {"llm": {"moe": {"num_heads": 2}}}], ids=["moe", "mh_moe"])
def test_answer_load_entropy_of_a_tiny_model_matches_the_routing_read_by_hand(overrides):
    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_cnn", **overrides)  # 2 MoE layers, 4 experts, top-2
    heads = overrides.get("llm", {}).get("moe", {}).get("num_heads", 1)
    report = answer_load_entropy(model, "shapes_vqa", limit=6, batch_size=4)  # a batch of 4, then one of 2
    assert report["task"] == "shapes_vqa" and report["num_positions"] == 6
    assert len(report["per_layer"]) == len(report["topk_counts"]) == 2
    for counts, value in zip(report["topk_counts"], report["per_layer"]):
        assert len(counts) == 4 and sum(counts) == 6 * 2 * heads  # N questions x top-2 (x sub-tokens)
        assert 0.0 <= value <= 1.0
        freq = [c / sum(counts) for c in counts]  # topk_frequency, then H / ln E written out
        assert value == pytest.approx(-sum(f * math.log(f) for f in freq if f) / math.log(4), abs=1e-12)
    assert report["load_entropy"] == pytest.approx(sum(report["per_layer"]) / 2)
    expected = _by_hand(model, "shapes_vqa", 6, 4)
    assert report["topk_counts"] == [c.tolist() for c in expected]
    # Asked one question at a time (no padding at all), the positions route as the hand reading says.
    single, n = answer_topk_counts(model, "shapes_vqa", limit=6, batch_size=1)
    assert n == 6 and [c.tolist() for c in single] == [c.tolist() for c in _by_hand(model, "shapes_vqa", 6, 1)]


def test_answer_load_entropy_refuses_what_has_no_answer_position():
    with pytest.raises(ValueError, match="no answer positions"):
        answer_load_entropy(moezoo.create_model("mm_tiny_cnn"), "text_ppl")
    with pytest.raises(ValueError, match="unknown task 'shapes'"):
        answer_load_entropy(moezoo.create_model("mm_tiny_cnn"), "shapes")
    with pytest.raises(ValueError, match="no MoE layer"):
        answer_load_entropy(moezoo.create_model("mm_tiny_cnn", llm={"moe": None}), "shapes_vqa", limit=1)
