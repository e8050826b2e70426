"""Router behaviour: capacity, balancing bias, hypernetwork, temperatures, stats."""

import math

import pytest
import torch

from moezoo.moe import MoEConfig, MoELayer, create_router, list_routers


def cfg(**overrides) -> MoEConfig:
    return MoEConfig(**{"dim": 16, "expert_dim": 8, "num_experts": 4, "top_k": 2, **overrides})


def test_known_routers():
    assert {"softmax", "noisy_topk", "cosine", "sigmoid", "hyper", "perturbed_cosine",
            "expert_choice"} <= set(list_routers())


@pytest.mark.parametrize("router", list_routers())
def test_every_router_cites_its_paper(router):
    doc = type(create_router(cfg(router=router))).__doc__
    assert doc and ("arXiv" in doc or "et al." in doc), router


@pytest.mark.parametrize("tokens,factor", [(10, None), (33, 1.0), (33, 1.5), (7, 0.25)])
def test_expert_choice_respects_capacity(tokens, factor):
    config = cfg(router="expert_choice", num_experts=4, top_k=2, capacity_factor=factor)
    routing = create_router(config)(torch.randn(tokens, 16))
    capacity = max(1, min(tokens, math.ceil((factor or 1.0) * tokens * 2 / 4)))
    counts = torch.bincount(routing.expert_idx, minlength=4)
    assert counts.tolist() == [capacity] * 4
    for e in range(4):  # each expert picks distinct tokens, its highest-probability ones
        picked = routing.token_idx[routing.expert_idx == e]
        assert picked.unique().numel() == capacity
        assert torch.equal(picked.sort().values, routing.probs[:, e].topk(capacity).indices.sort().values)


def test_token_choice_capacity_drops_lowest_priority():
    layer = MoELayer(cfg(num_experts=4, top_k=2, capacity_factor=0.5))
    out = layer(torch.randn(40, 16))
    capacity = math.ceil(0.5 * 40 * 2 / 4)
    counts = out.stats.tokens_per_expert
    assert counts.max() <= capacity
    wanted = torch.bincount(out.routing.expert_idx, minlength=4)
    assert torch.equal(counts, wanted.clamp(max=capacity))
    assert math.isclose(out.stats.dropped_fraction.item(), (wanted.sum() - counts.sum()).item() / 80, rel_tol=1e-6)


def test_dropless_by_default():
    out = MoELayer(cfg())(torch.randn(50, 16))
    assert out.stats.tokens_per_expert.sum().item() == 100 and out.stats.dropped_fraction.item() == 0


@pytest.mark.parametrize("router", ["softmax", "cosine", "hyper", "noisy_topk", "perturbed_cosine"])
def test_renormalised_top_k_weights(router):
    routing = create_router(cfg(router=router)).eval()(torch.randn(9, 16))
    assert torch.allclose(routing.weight.view(2, 9).sum(0), torch.ones(9))
    raw = create_router(cfg(router=router, norm_topk_prob=False)).eval()(torch.randn(9, 16))
    assert (raw.weight.view(2, 9).sum(0) < 1).all()


def test_sigmoid_bias_balances_outside_the_gradient():
    router = create_router(cfg(router="sigmoid", bias_update_rate=0.05)).train()
    with torch.no_grad():
        router.weight.zero_()
        router.weight[0, 0] = router.weight[1, 0] = 3.0  # experts 0 and 1 win every token
    x = torch.randn(64, 16).abs()
    routing = router(x)
    assert not router.bias.requires_grad
    assert (router.bias[:2] < 0).all() and (router.bias[2:] > 0).all()
    for _ in range(200):
        routing = router(x)
    load = torch.bincount(routing.expert_idx, minlength=4).float()
    assert load.max() / load.mean() < 1.5  # the bias alone has spread the load
    # The bias picks experts but never weights them: weights are normalised sigmoid scores.
    scores = torch.sigmoid(x @ router.weight.t())
    picked = scores.gather(1, routing.expert_idx.view(2, 64).t())
    assert torch.allclose(routing.weight.view(2, 64).t(), picked / picked.sum(1, keepdim=True))


def test_hyper_router_trains_only_its_embedding():
    router = create_router(cfg(router="hyper"))
    assert [name for name, _ in router.named_parameters()] == ["hyper_embedding"]
    assert {"hyper_w1", "hyper_w2"} <= set(router.state_dict())
    routing = router(torch.randn(5, 16))
    routing.weight.sum().backward()
    assert router.hyper_embedding.grad.abs().sum() > 0
    weight, bias = router.generated()
    assert weight.shape == (4, 16) and bias.shape == (4,)


@pytest.mark.parametrize("router", ["cosine", "perturbed_cosine"])
def test_cosine_logits_bounded_by_temperature(router):
    r = create_router(cfg(router=router)).eval()
    routing = r(torch.randn(20, 16) * 100)
    bound = 1 / r.log_temperature.exp().item()
    assert routing.logits.abs().max() <= bound + 1e-4
    routing.weight.sum().backward()
    assert r.log_temperature.grad is not None and r.expert_embeddings.grad is not None


@pytest.mark.parametrize("router", ["noisy_topk", "perturbed_cosine"])
def test_noise_only_in_training(router):
    r = create_router(cfg(router=router))
    with torch.no_grad():
        if router == "noisy_topk":
            r.noise_weight.normal_()
    x = torch.randn(30, 16)
    r.eval()
    assert torch.equal(r(x).logits, r(x).logits)
    r.train()
    assert not torch.equal(r(x).logits, r(x).logits)


def test_stats():
    out = MoELayer(cfg(num_experts=8, top_k=2))(torch.randn(64, 16))
    assert 0.0 <= out.stats.router_entropy.item() <= 1.0
    assert out.stats.tokens_per_expert.shape == (8,)
    uniform = MoELayer(cfg(num_experts=8))
    with torch.no_grad():
        uniform.router.weight.zero_()
    assert math.isclose(uniform(torch.randn(8, 16)).stats.router_entropy.item(), 1.0, rel_tol=1e-5)


def test_expert_choice_reports_unpicked_tokens():
    layer = MoELayer(cfg(router="expert_choice", num_experts=2, top_k=1, capacity_factor=0.5))
    out = layer(torch.randn(8, 16))
    picked = out.routing.token_idx.unique().numel()
    assert math.isclose(out.stats.dropped_fraction.item(), 1 - picked / 8, rel_tol=1e-6)
    assert out.aux_loss.item() == 0.0
