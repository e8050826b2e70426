"""``ablate``'s three modes on routings worked out by hand (raw against renormalised weights, the sigmoid router's
bias, expert choice), against a router built without the expert, on both kinds of MoE site, and through tiny
Mixtral (renormalised) and OLMoE (raw weights) checkpoints with hand-set router weights."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import moezoo
from moezoo.analysis import ablate, ablated_routing, chosen_experts, site_names, site_routings
from moezoo.moe import MoEConfig, MoELayer, create_router
from moezoo.moe.mlp_experts import MoEMLP

P0 = [0.4, 0.3, 0.2, 0.1]   # token 0: top-2 experts 0, 1; expert 3 never chosen
P1 = [0.3, 0.4, 0.2, 0.1]   # token 1: top-2 experts 1, 0


def _routed(router: nn.Module, logits_TE: torch.Tensor):
    """The routing ``router`` gives tokens whose logits are ``logits_TE``: the tokens are one-hot, the gate's
    columns the logits."""
    with torch.no_grad():
        router.weight.copy_(logits_TE.t())
    return router(torch.eye(logits_TE.shape[0]))


def _softmax_router(norm: bool, **kwargs) -> nn.Module:
    return create_router(MoEConfig(dim=2, expert_dim=8, num_experts=4, top_k=2, norm_topk_prob=norm, **kwargs)).eval()


def _weights(routing) -> dict[tuple[int, int], float]:
    """``{(token, expert): weight}`` of a routing."""
    return {(t, e): w for t, e, w in zip(routing.token_idx.tolist(), routing.expert_idx.tolist(),
                                         routing.weight.tolist())}


LOGP = torch.tensor([P0, P1]).log()   # softmax(ln p) = p


def test_a_never_chosen_expert_raw_against_renormalised_weights():
    raw = _routed(_softmax_router(norm=False), LOGP)
    assert _weights(raw) == pytest.approx({(0, 0): 0.4, (0, 1): 0.3, (1, 1): 0.4, (1, 0): 0.3})
    # Reroute expert 3 (never chosen): p'_j = p_j / (1 - 0.1). The choice stands, but raw weights grow by 1/0.9.
    rerouted = ablated_routing(_softmax_router(norm=False), raw, 3, "reroute")
    assert chosen_experts(rerouted).tolist() == [[0, 1], [1, 0]]
    assert _weights(rerouted) == pytest.approx({(0, 0): 0.4 / 0.9, (0, 1): 0.3 / 0.9, (1, 1): 0.4 / 0.9,
                                                (1, 0): 0.3 / 0.9})
    # Renormalised weights keep their ratio: 0.4 / 0.7 and 0.3 / 0.7 before and after.
    router = _softmax_router(norm=True)
    norm = _routed(router, LOGP)
    assert _weights(ablated_routing(router, norm, 3, "reroute")) == pytest.approx(_weights(norm))
    assert _weights(norm) == pytest.approx({(0, 0): 4 / 7, (0, 1): 3 / 7, (1, 1): 4 / 7, (1, 0): 3 / 7})
    # Drop and zero only touch the tokens that chose the expert: none.
    for routing in (raw, norm):
        for mode in ("drop", "zero"):
            assert torch.equal(ablated_routing(router, routing, 3, mode).weight, routing.weight)


def test_a_chosen_expert_in_each_mode_raw_and_renormalised():
    raw_router, norm_router = _softmax_router(norm=False), _softmax_router(norm=True)
    raw, norm = _routed(raw_router, LOGP), _routed(norm_router, LOGP)
    # reroute 0. Token 0: p' = (0, 0.3, 0.2, 0.1) / 0.6 = (0, 1/2, 1/3, 1/6) -> experts 1, 2 enter.
    #            Token 1: p' = (0, 0.4, 0.2, 0.1) / 0.7 = (0, 4/7, 2/7, 1/7) -> experts 1, 2.
    rerouted = ablated_routing(raw_router, raw, 0, "reroute")
    assert chosen_experts(rerouted).tolist() == [[1, 2], [1, 2]]
    assert _weights(rerouted) == pytest.approx({(0, 1): 1 / 2, (0, 2): 1 / 3, (1, 1): 4 / 7, (1, 2): 2 / 7})
    assert rerouted.probs[:, 0].tolist() == [0.0, 0.0]
    # Renormalised: token 0 (1/2, 1/3) / (5/6) = (0.6, 0.4); token 1 (4/7, 2/7) / (6/7) = (2/3, 1/3).
    assert _weights(ablated_routing(norm_router, norm, 0, "reroute")) == pytest.approx(
        {(0, 1): 0.6, (0, 2): 0.4, (1, 1): 2 / 3, (1, 2): 1 / 3})
    # drop 0: the rest is rescaled to the token's total. Raw: total 0.7, rest 0.3 -> 0.3 * 0.7 / 0.3 = 0.7
    # (token 1: 0.4 * 0.7 / 0.4). Renormalised: total 1 -> the remaining expert gets 1.
    assert _weights(ablated_routing(raw_router, raw, 0, "drop")) == pytest.approx(
        {(0, 0): 0.0, (0, 1): 0.7, (1, 1): 0.7, (1, 0): 0.0})
    assert _weights(ablated_routing(norm_router, norm, 0, "drop")) == pytest.approx(
        {(0, 0): 0.0, (0, 1): 1.0, (1, 1): 1.0, (1, 0): 0.0})
    # zero 0: the term goes, the rest stays.
    assert _weights(ablated_routing(raw_router, raw, 0, "zero")) == pytest.approx(
        {(0, 0): 0.0, (0, 1): 0.3, (1, 1): 0.4, (1, 0): 0.0})
    assert _weights(ablated_routing(norm_router, norm, 0, "zero")) == pytest.approx(
        {(0, 0): 0.0, (0, 1): 3 / 7, (1, 1): 4 / 7, (1, 0): 0.0})
    # Drop and zero keep the router's choice (weight 0) and the (T, k) shape; k = 1 drop leaves nothing.
    assert chosen_experts(ablated_routing(raw_router, raw, 0, "drop")).tolist() == [[0, 1], [1, 0]]
    top1 = create_router(MoEConfig(dim=2, expert_dim=8, num_experts=4, top_k=1)).eval()
    # (token 0's only expert is 0: no weight left; token 1 chose expert 1, 0.4, untouched)
    assert ablated_routing(top1, _routed(top1, LOGP), 0, "drop").weight.tolist() == pytest.approx([0.0, 0.4])


def test_the_sigmoid_router_reroutes_past_its_bias():
    router = create_router(MoEConfig(dim=1, expert_dim=8, num_experts=4, top_k=2, router="sigmoid",
                                     norm_topk_prob=False)).eval()
    router.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    s = torch.sigmoid(torch.tensor([2.0, 1.0, 0.0, -1.0])).tolist()   # 0.881, 0.731, 0.5, 0.269
    routing = _routed(router, torch.tensor([[2.0, 1.0, 0.0, -1.0]]))
    # Selection by score + bias = (0.881, 0.731, 0.5, 1.269): experts 3, 0; weights are the scores alone.
    assert chosen_experts(routing).tolist() == [[3, 0]]
    assert routing.weight.tolist() == pytest.approx([s[3], s[0]])
    # Reroute 3: its score is 0 and it cannot be selected whatever its bias; the others' scores stand.
    rerouted = ablated_routing(router, routing, 3, "reroute")
    assert chosen_experts(rerouted).tolist() == [[0, 1]]
    assert rerouted.weight.tolist() == pytest.approx([s[0], s[1]])
    assert rerouted.probs[0].tolist() == pytest.approx([s[0] / sum(s[:3]), s[1] / sum(s[:3]), s[2] / sum(s[:3]), 0])
    # Drop 3: total s3 + s0, rest s0 -> s0 gets s3 + s0. Zero 3: s0 stays.
    assert ablated_routing(router, routing, 3, "drop").weight.tolist() == pytest.approx([0.0, s[3] + s[0]])
    assert ablated_routing(router, routing, 3, "zero").weight.tolist() == pytest.approx([0.0, s[0]])


def test_expert_choice_in_each_mode():
    # 3 tokens A, B, C; 3 experts, top_k 2 -> each expert picks C = ceil(3 * 2 / 3) = 2 tokens.
    router = create_router(MoEConfig(dim=3, expert_dim=8, num_experts=3, top_k=2, router="expert_choice")).eval()
    p = torch.tensor([[0.8, 0.15, 0.05],   # A
                      [0.1, 0.2, 0.7],     # B
                      [0.3, 0.35, 0.35]])  # C
    routing = _routed(router, p.log())
    # Expert 0 picks A (0.8), C (0.3); expert 1 C (0.35), B (0.2); expert 2 B (0.7), C (0.35).
    assert _weights(routing) == pytest.approx({(0, 0): .8, (2, 0): .3, (2, 1): .35, (1, 1): .2, (1, 2): .7,
                                               (2, 2): .35})
    # Reroute 0: p' = A (0, 0.75, 0.25), B (0, 2/9, 7/9), C (0, 0.5, 0.5). Expert 0 picks nothing; expert 1 now
    # picks A (0.75) and C (0.5) over B (2/9); expert 2 picks B (7/9) and C (0.5) over A (0.25).
    assert _weights(ablated_routing(router, routing, 0, "reroute")) == pytest.approx(
        {(0, 1): .75, (2, 1): .5, (1, 2): 7 / 9, (2, 2): .5})
    # Drop 0: A had only expert 0 -> nothing left; C's total 1.0 goes to experts 1 and 2: 0.35 / 0.7 each = 0.5.
    assert _weights(ablated_routing(router, routing, 0, "drop")) == pytest.approx(
        {(0, 0): 0, (2, 0): 0, (2, 1): .5, (1, 1): .2, (1, 2): .7, (2, 2): .5})
    assert _weights(ablated_routing(router, routing, 0, "zero")) == pytest.approx(
        {(0, 0): 0, (2, 0): 0, (2, 1): .35, (1, 1): .2, (1, 2): .7, (2, 2): .35})


def _without(router: nn.Module, e: int) -> nn.Module:
    """The same router with expert ``e``'s parameters removed: one expert fewer."""
    c = router.config
    other = create_router(c.replace(num_experts=c.num_experts - 1)).eval()
    keep = [j for j in range(c.num_experts) if j != e]
    state = router.state_dict()
    for name in ("weight", "expert_embeddings", "bias", "noise_weight"):
        if name in state:
            state[name] = state[name][keep]
    other.load_state_dict(state)
    return other


@pytest.mark.parametrize("router_name", ["softmax", "noisy_topk", "cosine", "perturbed_cosine", "sigmoid",
                                         "deepspeed_top2"])
@pytest.mark.parametrize("norm", [False, True], ids=["raw", "renormalised"])
def test_reroute_is_the_router_without_the_expert(router_name, norm):
    if router_name == "deepspeed_top2" and not norm:
        pytest.skip("DeepSpeed's top-2 gate always renormalises")
    torch.manual_seed(0)
    router = create_router(MoEConfig(dim=8, expert_dim=8, num_experts=5, top_k=2, router=router_name,
                                     norm_topk_prob=norm)).eval()
    if router_name == "sigmoid":
        router.bias.copy_(torch.tensor([0.0, 0.3, -0.2, 0.5, 0.1]))
    x = torch.randn(7, 8)
    with torch.no_grad():
        for e in (0, 2, 4):
            rerouted = ablated_routing(router, router(x), e, "reroute")
            ref = _without(router, e)(x)
            ids = [j for j in range(5) if j != e]  # the smaller router's expert j is expert ids[j]
            assert chosen_experts(rerouted).tolist() == [[ids[j] for j in row] for row in chosen_experts(ref).tolist()]
            torch.testing.assert_close(rerouted.weight, ref.weight, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(rerouted.probs[:, ids], ref.probs, atol=1e-6, rtol=1e-5)


def test_reroute_of_the_hyper_router_masks_its_generated_logits():
    torch.manual_seed(0)
    router = create_router(MoEConfig(dim=8, expert_dim=8, num_experts=5, top_k=2, router="hyper",
                                     norm_topk_prob=False)).eval()
    x = torch.randn(7, 8)
    with torch.no_grad():
        weight, bias = router.generated()
        logits = F.linear(x, weight, bias)
        logits[:, 1] = -math.inf
        p = logits.softmax(-1)
        rerouted = ablated_routing(router, router(x), 1, "reroute")
    top = torch.topk(p, 2)
    assert chosen_experts(rerouted).tolist() == top.indices.tolist()
    torch.testing.assert_close(rerouted.weight.view(2, 7).t(), top.values, atol=1e-6, rtol=1e-5)


# --- both kinds of site, every router: the forward uses the ablation, and exit restores it exactly ---------

ROUTERS = ["softmax", "noisy_topk", "cosine", "perturbed_cosine", "hyper", "sigmoid", "expert_choice", "deepspeed_top2",
           "deepspeed_top2+capacity"]


def _expert_out(layer: nn.Module, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert ``e`` of a site on tokens ``x``, written out from its weights."""
    if isinstance(layer, MoEMLP):
        return F.linear(F.gelu(F.linear(x, layer.fc1_weight[e], layer.fc1_bias[e])), layer.fc2_weight[e],
                        layer.fc2_bias[e])
    gate, up = F.linear(x, layer.experts.gate_up_proj[e]).chunk(2, dim=-1)
    return F.linear(F.silu(gate) * up, layer.experts.down_proj[e])


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("kind", ["MoELayer", "MoEMLP"])
def test_every_router_on_both_kinds_of_site(router, kind):
    torch.manual_seed(0)
    router, _, capacity = router.partition("+")  # "+capacity": drops by position (capacity 2 of 6 tokens' 12)
    if kind == "MoELayer":
        site = MoELayer(MoEConfig(dim=8, expert_dim=16, num_experts=4, top_k=2, router=router,
                                  capacity_factor=0.5 if capacity else None))
    elif capacity:
        pytest.skip("MoEMLP sites take no capacity")
    else:
        site = MoEMLP(8, 16, 8, num_experts=4, top_k=2, router=router)
    model = nn.ModuleDict({"moe": site}).eval()
    x = torch.randn(6, 8)

    def run():
        out = site(x)
        if kind == "MoEMLP":
            return out, None
        return out.hidden_states, out.routing

    with torch.no_grad():
        before, _ = run()
        for mode in ("reroute", "drop", "zero"):
            with ablate(model, "moe", 1, mode) as handle:
                assert repr(handle) == f"Ablation(site='moe', expert=1, mode={mode!r})"
                routing = site.router(x)   # what the site's forward routes by
                y, layer_routing = run()
            if layer_routing is not None:
                assert torch.equal(layer_routing.weight, routing.weight)
            hit = routing.expert_idx == 1
            assert not hit.any() if mode == "reroute" else (routing.weight[hit] == 0).all()
            # The site's output is the ablated weights times the experts, written out.
            expected = torch.zeros_like(before)
            for t, e, w in zip(routing.token_idx.tolist(), routing.expert_idx.tolist(), routing.weight.tolist()):
                expected[t] += w * _expert_out(site, e, x[t])
            torch.testing.assert_close(y, expected, atol=1e-5, rtol=1e-4)
            assert torch.equal(run()[0], before)   # restored exactly


def test_mh_moe_sub_tokens_are_rerouted_like_tokens():
    torch.manual_seed(0)
    model = moezoo.create_model("moe_lm_tiny", moe={"num_heads": 2}).eval()
    ids = torch.tensor([[1, 5, 9, 2, 7]])
    with torch.no_grad(), ablate(model, "llm.1", 0, "reroute"):
        out = model(input_ids=ids)
    assert out.routings[1].probs.shape[0] == 2 * 5 and not (out.routings[1].expert_idx == 0).any()


def test_sites_are_named_as_reports_name_them_and_bad_requests_say_what_exists():
    from moezoo.models.multimodal.upcycle import upcycle_multimodal

    torch.manual_seed(0)
    dense = moezoo.create_model("mm_tiny_cnn", llm={"moe": None})
    model = upcycle_multimodal(dense, num_experts=4, top_k=2, targets=("llm", "connector")).eval()
    assert site_names(model) == {"llm.layers.0.mlp": "llm.0", "llm.layers.1.mlp": "llm.1",
                                 "connectors.image.mlp": "connector"}
    ids = torch.tensor([[1] + [4] * model.num_tokens["image"] + [9]])
    with torch.no_grad():
        out = model(input_ids=ids, pixel_values=torch.randn(1, 3, 32, 32))
    routings = site_routings(model, out)   # the LLM's from out.routings, the connector's from out.site_outputs
    assert list(routings) == ["llm.0", "llm.1", "connector"]
    assert routings["connector"][0].probs.shape[0] == model.num_tokens["image"]
    with pytest.raises(ValueError, match=r"no MoE site 'llm.9'; its sites: llm.0 \(4 experts\), llm.1 \(4 experts\), "
                                         r"connector \(4 experts\)"):
        ablate(model, "llm.9", 0)
    with pytest.raises(ValueError, match=r"expert=4 is not an expert of site 'connector': it has experts 0..3"):
        ablate(model, "connectors.image.mlp", 4)
    with pytest.raises(ValueError, match=r"unknown ablation mode 'remove'; "
                                         r"choose one of \('reroute', 'drop', 'zero'\)"):
        ablate(model, "connector", 0, "remove")
    with pytest.raises(ValueError, match="has no MoE site"):
        ablate(nn.Linear(2, 2), "llm.0", 0)


def test_the_upcycled_connector_of_a_zoo_model():
    """Upcycled with identical experts f and renormalised top-2 weights, the connector computes f (weights sum
    to 1). Dropping an expert renormalises the rest to 1: still f. Zeroing it leaves (1 - w_e) f for its tokens."""
    from moezoo.models.multimodal.upcycle import upcycle_multimodal

    torch.manual_seed(0)
    dense = moezoo.create_model("mm_tiny_cnn", llm={"moe": None})
    model = upcycle_multimodal(dense, num_experts=4, top_k=2, targets=("connector",)).eval()
    ids = torch.tensor([[1] + [4] * model.num_tokens["image"] + [9, 10]])
    pixels = torch.randn(1, 3, 32, 32)

    def connector():
        out = model(input_ids=ids, pixel_values=pixels)
        (record,) = [r for r in out.site_outputs if r.site == "connectors.image.mlp"]
        return record.output.hidden_states, record.output.routing, out.logits

    with torch.no_grad():
        y, routing, logits = connector()
        expert = int(routing.expert_idx[0])   # an expert the first image token chose
        w_e = torch.zeros(y.shape[0]).index_add(0, routing.token_idx, routing.weight * (routing.expert_idx == expert))
        with ablate(model, "connector", expert, "drop"):
            y_drop, _, logits_drop = connector()
        with ablate(model, "connector", expert, "zero"):
            y_zero, _, logits_zero = connector()
    assert w_e[0] > 0
    torch.testing.assert_close(y_drop, y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits_drop, logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(y_zero, y * (1 - w_e)[:, None], atol=1e-5, rtol=1e-5)
    assert (logits_zero - logits).abs().max() > 1e-3


# --- through tiny checkpoints with hand-set routers -----------------------------------------------------------

def _checkpoint(tmp_path, family: str, rows: dict[int, float]) -> nn.Module:
    """A tiny transformers ``family`` checkpoint whose every embedding has 1 in channel 0 (so the routers' input,
    the normed residual stream, is positive there: about sqrt(32) = 5.7 times the norm weight), with the last
    layer's gate rows ``rows`` (expert -> the weight of channel 0, the row's only one), loaded by moezoo.

    The last layer's experts are scaled up (``gate_up_proj`` x 10, ``down_proj`` x 100) so that their output is
    not lost beside the residual stream: with std 0.02 weights a change in their weights barely reaches the logits.
    """
    from moezoo.convert.testing import tiny_hf_model, tiny_tokenizer

    hf = tiny_hf_model(family, seed=0)
    with torch.no_grad():
        hf.model.embed_tokens.weight[:, 0] = 1.0
        hf.model.layers[-1].mlp.experts.gate_up_proj.mul_(10.0)
        hf.model.layers[-1].mlp.experts.down_proj.mul_(100.0)
        gate = hf.model.layers[-1].mlp.gate.weight
        for e, w in rows.items():
            gate[e] = 0.0
            gate[e, 0] = w
    hf.save_pretrained(str(tmp_path))
    tiny_tokenizer().save_pretrained(str(tmp_path))
    return moezoo.load(tmp_path)


IDS = torch.randint(4, 96, (2, 9), generator=torch.Generator().manual_seed(0))


def test_mixtral_a_never_firing_expert_changes_nothing_with_renormalised_weights(tmp_path):
    # Mixtral renormalises the top-2. Expert 3's logit is about -1e4 * 5.7: p_3 = 0 in float32, it never fires.
    model = _checkpoint(tmp_path, "mixtral", {3: -1e4})
    assert model.config.moe.norm_topk_prob
    with torch.no_grad():
        out = model(input_ids=IDS)
        assert not (out.routings[-1].expert_idx == 3).any()
        for mode in ("drop", "zero", "reroute"):
            with ablate(model, "llm.1", 3, mode):
                assert torch.equal(model(input_ids=IDS).logits, out.logits), mode


def _last_layer(model: nn.Module) -> dict[str, torch.Tensor]:
    """Hooks that keep the last layer's MoE output ``y`` and the layer's output ``z = x + y``."""
    kept: dict[str, torch.Tensor] = {}
    layer = model.layers[-1]
    layer.mlp.register_forward_hook(lambda m, a, out: kept.__setitem__("y", out.hidden_states))
    layer.register_forward_hook(lambda m, a, out: kept.__setitem__("z", out[0]))
    return kept


def test_olmoe_reroute_around_a_never_firing_expert_scales_the_raw_weights(tmp_path):
    # OLMoE keeps the raw top-k softmax weights (norm_topk_prob=False). Expert 5's logit is about -0.3 * 5.7 = -1.7:
    # p_5 is about e^-1.7 / (7 + e^-1.7) = 0.025, never in a top-2 of 8 experts whose other logits are near 0.
    model = _checkpoint(tmp_path, "olmoe", {5: -0.3})
    assert not model.config.moe.norm_topk_prob
    kept = _last_layer(model)
    with torch.no_grad():
        out = model(input_ids=IDS)
        y, z = kept["y"], kept["z"]
        p5 = out.routings[-1].probs[:, 5].view(2, 9)
        assert not (out.routings[-1].expert_idx == 5).any() and (p5 > 0.01).all()
        with ablate(model, "llm.1", 5, "drop"):
            assert torch.equal(model(input_ids=IDS).logits, out.logits)   # no token chose it: nothing to drop
        with ablate(model, "llm.1", 5, "reroute"):
            rerouted = model(input_ids=IDS).logits
        # Reroute: p'_j = p_j / (1 - p_5) and the top-2 stays, so every token's raw weights, hence the MoE output,
        # grow by 1 / (1 - p_5): z' = z + y * p_5 / (1 - p_5), then the final norm and the head.
        z_new = z + y * (p5 / (1 - p5))[..., None]
        expected = F.linear(model.norm(z_new), model.output_weight)
    torch.testing.assert_close(rerouted, expected, atol=1e-6, rtol=1e-5)
    assert (rerouted - out.logits).abs().max() > 5e-4   # and the change is real: hundreds of times the tolerance


def test_olmoe_reroute_of_a_firing_expert_is_the_checkpoint_whose_router_never_picks_it(tmp_path):
    # Model A: expert 0's gate row reads channel 0 strongly (+0.5 * 5.7 = 2.8): it fires for every token.
    # Model B: the same checkpoint with that row at -1e4: p_0 = 0 exactly, the next-best expert enters.
    a = _checkpoint(tmp_path / "a", "olmoe", {0: 0.5})
    b = _checkpoint(tmp_path / "b", "olmoe", {0: -1e4})
    with torch.no_grad():
        out_a = a(input_ids=IDS)
        assert (chosen_experts(out_a.routings[-1])[:, 0] == 0).all()
        with ablate(a, "llm.1", 0, "reroute"):
            rerouted = a(input_ids=IDS)
        out_b = b(input_ids=IDS)
    assert torch.equal(rerouted.routings[-1].expert_idx, out_b.routings[-1].expert_idx)
    torch.testing.assert_close(rerouted.logits, out_b.logits, atol=1e-5, rtol=1e-4)
    assert (out_a.logits - out_b.logits).abs().max() > 0.1   # expert 0 mattered


def test_reroute_refuses_an_imported_checkpoints_routing_rules():
    router = create_router(MoEConfig(dim=4, expert_dim=8, num_experts=4, top_k=2, router="sigmoid",
                                     router_convention="libmoe_v1")).eval()
    site = nn.ModuleDict({"moe": MoELayer(router.config)})
    with pytest.raises(ValueError, match="router_convention='libmoe_v1'.*'drop' and 'zero' work"):
        ablate(site, "moe", 0, "reroute")
    with ablate(site, "moe", 0, "drop"):
        site["moe"](torch.randn(3, 4))
