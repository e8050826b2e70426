"""MoEMLP (experts with biases) against a per-expert mask loop, upcycling, and the routing contract."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from moezoo.moe import MoEConfig, MoEOutput, load_balancing_loss, router_z_loss
from moezoo.moe.mlp_experts import ACTIVATIONS, MoEMLP, activation_fn
from moezoo.moe.recording import SiteRecorder


def routed(moe: torch.nn.Module, *args, **kwargs):
    """``moe(*args)`` with its calls recorded: ``(output, records)``."""
    with SiteRecorder(moe) as recorder:
        out = moe(*args, **kwargs)
    return out, recorder.records

REFERENCE_ACT = {"gelu": F.gelu, "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
                 "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu, "relu": F.relu}


def mask_loop(moe: MoEMLP, x_TD: torch.Tensor, act) -> torch.Tensor:
    """Every expert on every token, masked by its routing weight (0 where not routed); no gather or sort."""
    routing = moe.router(x_TD)
    out = 0.0
    for e in range(moe.config.num_experts):
        mine = routing.expert_idx == e
        gate_T = x_TD.new_zeros(x_TD.shape[0]).index_put((routing.token_idx[mine],), routing.weight[mine],
                                                         accumulate=True)
        y = act(x_TD @ moe.fc1_weight[e].t() + moe.fc1_bias[e]) @ moe.fc2_weight[e].t() + moe.fc2_bias[e]
        out = out + gate_T[:, None] * y
    return out


def _moe(router: str, top_k: int, activation: str = "gelu") -> MoEMLP:
    moe = MoEMLP(16, 24, 20, num_experts=4, top_k=top_k, activation=activation, router=router).eval()
    with torch.no_grad():  # unit-scale weights so that 1e-5 is a meaningful tolerance
        for p in moe.parameters():
            p.normal_(std=0.3)
    return moe


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("router", ["softmax", "cosine", "sigmoid"])
def test_matches_mask_loop_outputs_and_gradients(router, top_k):
    moe = _moe(router, top_k)
    x = torch.randn(3, 5, 16, requires_grad=True)
    upstream = torch.randn(3, 5, 20)
    params = [x, *moe.parameters()]
    out = moe(x)
    ref = mask_loop(moe, x.reshape(-1, 16), F.gelu).reshape(3, 5, 20)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    grads = torch.autograd.grad((out * upstream).sum(), params)
    ref_grads = torch.autograd.grad((ref * upstream).sum(), params)
    names = ["x", *(n for n, _ in moe.named_parameters())]
    assert "router.weight" in names or "router.proj" in names  # the router's gradient is compared too
    for name, g, r in zip(names, grads, ref_grads):
        assert r.abs().sum() > 0, name
        torch.testing.assert_close(g, r, atol=1e-5, rtol=0, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("activation", sorted(REFERENCE_ACT))
def test_activations(activation):
    moe = _moe("softmax", 2, activation)
    x = torch.randn(6, 16)
    torch.testing.assert_close(moe(x), mask_loop(moe, x, REFERENCE_ACT[activation]), atol=1e-5, rtol=0)


def test_activation_names_follow_transformers():
    from transformers.activations import ACT2FN

    x = torch.linspace(-6, 6, 101)
    for name in ("gelu", "gelu_pytorch_tanh", "quick_gelu", "silu", "swish", "relu"):
        torch.testing.assert_close(activation_fn(name)(x), ACT2FN[name](x), atol=1e-7, rtol=0)
    assert set(REFERENCE_ACT) <= set(ACTIVATIONS)


def _dense(bias=True):
    gen = torch.Generator().manual_seed(0)
    fc1, fc2 = nn.Linear(16, 32, bias=bias), nn.Linear(32, 12, bias=bias)
    with torch.no_grad():
        for p in [*fc1.parameters(), *fc2.parameters()]:
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return fc1, fc2


@pytest.mark.parametrize("router", ["softmax", "cosine", "sigmoid", "perturbed_cosine", "hyper"])
def test_upcycled_equals_dense_exactly(router):
    fc1, fc2 = _dense()
    moe = MoEMLP.from_dense(fc1, "quick_gelu", fc2, num_experts=4, top_k=2, router=router).train()
    x = torch.randn(2, 7, 16)
    dense = fc2(REFERENCE_ACT["quick_gelu"](fc1(x)))
    out, (record,) = routed(moe, x)
    torch.testing.assert_close(out, dense, atol=1e-6, rtol=0)
    assert record.output.tokens_per_expert.sum() == 2 * 7 * 2


def test_upcycling_without_bias_top1_and_noise():
    fc1, fc2 = _dense(bias=False)
    x = torch.randn(9, 16)
    dense = fc2(F.gelu(fc1(x)))
    moe = MoEMLP.from_dense(fc1, "gelu", fc2, num_experts=3, top_k=2)
    assert moe.fc1_bias.abs().sum() == 0 and moe.fc2_bias.abs().sum() == 0
    torch.testing.assert_close(moe(x), dense, atol=1e-6, rtol=0)
    # Top-1 softmax keeps the probability as the weight (nothing to renormalise): scaled copies.
    moe1 = MoEMLP.from_dense(fc1, "gelu", fc2, num_experts=3, top_k=1)
    p_max = moe1.router(x).weight  # (T,): one assignment per token, in token order
    torch.testing.assert_close(moe1(x), dense * p_max[:, None], atol=1e-6, rtol=0)
    noisy = MoEMLP.from_dense(fc1, "gelu", fc2, num_experts=3, top_k=2, noise_std=0.1)
    delta = noisy.fc1_weight - fc1.weight
    assert not torch.allclose(noisy.fc1_weight[0], noisy.fc1_weight[1])
    assert 0.05 < (delta.std() / fc1.weight.std()).item() < 0.15
    assert not torch.allclose(noisy(x), dense, atol=1e-4)


def test_from_dense_is_seeded_and_leaves_the_dense_mlp_alone():
    fc1, fc2 = _dense()
    before = fc1.weight.clone()
    a = MoEMLP.from_dense(fc1, "gelu", fc2, 4, 2, noise_std=0.01, seed=3)
    b = MoEMLP.from_dense(fc1, "gelu", fc2, 4, 2, noise_std=0.01, seed=3)
    c = MoEMLP.from_dense(fc1, "gelu", fc2, 4, 2, noise_std=0.01, seed=4)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(p, q), name
    assert not torch.equal(a.router.weight, c.router.weight)
    assert torch.equal(fc1.weight, before)


def test_routing_contract():
    """Each call's routing reaches the open recorder with the losses its owner adds; the module keeps nothing."""
    moe = MoEMLP(16, 24, 20, num_experts=4, top_k=2, aux_loss_coef=0.05, z_loss_coef=1e-3).train()
    x = torch.randn(2, 6, 16)
    out, (record,) = routed(moe, x)
    assert (record.site, record.modality, record.call) == ("", None, 0)  # the recording root itself
    assert torch.equal(record.output.hidden_states, out.reshape(12, 20))  # (T, out_dim): tokens flattened
    assert record.output.num_dropped == 0 and record.config is moe.config
    r = record.output.routing
    torch.testing.assert_close(record.output.aux_loss, load_balancing_loss(r.probs, r.expert_idx))
    torch.testing.assert_close(record.output.z_loss, router_z_loss(r.logits))
    torch.testing.assert_close(record.weighted_loss, 0.05 * record.output.aux_loss + 1e-3 * record.output.z_loss)
    assert record.output.stats.tokens_per_expert.tolist() == torch.bincount(r.expert_idx, minlength=4).tolist()
    (out.square().mean() + record.weighted_loss).backward()
    assert moe.router.weight.grad.abs().sum() > 0
    assert not any(isinstance(v, MoEOutput) for v in vars(moe).values())  # no side channel on the module


def test_expert_choice_router():
    moe = MoEMLP(16, 24, num_experts=4, top_k=2, router="expert_choice", capacity_factor=1.0)
    x = torch.randn(10, 16)
    out, (record,) = routed(moe, x)
    assert out.shape == (10, 16) and record.output.tokens_per_expert.tolist() == [5, 5, 5, 5]
    assert record.output.aux_loss == 0
    torch.testing.assert_close(out, mask_loop(moe, x, F.gelu), atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_replaces_a_transformers_tower_mlp(family):
    """An upcycled MoEMLP drops into a CLIP / SigLIP encoder layer and keeps its output."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, SiglipVisionConfig, SiglipVisionModel

    cfg_cls, model_cls = (CLIPVisionConfig, CLIPVisionModel) if family == "clip" else (
        SiglipVisionConfig, SiglipVisionModel)
    cfg = cfg_cls(hidden_size=32, intermediate_size=48, num_hidden_layers=1, num_attention_heads=2,
                  image_size=32, patch_size=8)
    model = model_cls(cfg).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=pixels).last_hidden_state
        layer = model.encoder.layers[0]  # transformers 5: the tower is the model
        layer.mlp = MoEMLP.from_dense(layer.mlp.fc1, cfg.hidden_act, layer.mlp.fc2, num_experts=4, top_k=2,
                                      router="cosine")
        after, records = routed(model, pixel_values=pixels)
    torch.testing.assert_close(after.last_hidden_state, before, atol=1e-5, rtol=0)
    (record,) = records
    assert record.site == "encoder.layers.0.mlp"
    assert record.output.tokens_per_expert.sum() == before.shape[0] * before.shape[1] * 2  # CLIP: + CLS


def test_errors():
    moe = MoEMLP(16, 24, 20, num_experts=4, top_k=2)
    with pytest.raises(ValueError, match=r"expected input of shape \(\.\.\., 16\), got \(3, 8\)"):
        moe(torch.randn(3, 8))
    with pytest.raises(ValueError, match="dropless"):
        MoEMLP(16, 24, capacity_factor=1.25)
    with pytest.raises(ValueError, match="num_heads=1"):
        MoEMLP(16, 24, num_heads=2)
    with pytest.raises(ValueError, match="unknown activation 'gleu'"):
        MoEMLP(16, 24, activation="gleu")
    with pytest.raises(ValueError, match="MoEConfig.top_k=5"):
        MoEMLP(16, 24, num_experts=4, top_k=5)
    with pytest.raises(ValueError, match="MoEConfig.router='cosnie'"):
        MoEMLP(16, 24, router="cosnie")
    with pytest.raises(ValueError, match="fc2 must take fc1's 32 features"):
        MoEMLP.from_dense(nn.Linear(16, 32), "gelu", nn.Linear(30, 16), 4, 2)
    assert isinstance(moe.config, MoEConfig) and moe.config.dim == 16 and moe.config.expert_dim == 24
