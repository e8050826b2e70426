"""Aux losses against values computed by hand."""

import math

import torch

from moezoo.moe import MoEConfig, MoELayer, load_balancing_loss, router_z_loss


def test_load_balancing_loss_by_hand():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]])
    # Top-1: token 0 -> expert 0, token 1 -> expert 1: f = [1/2, 1/2, 0], P = [0.4, 0.4, 0.2].
    assert math.isclose(load_balancing_loss(probs, torch.tensor([0, 1])).item(), 3 * (0.5 * 0.4 + 0.5 * 0.4), rel_tol=1e-6)
    # Top-2 (rank-major): f counts both slots per token, f = [1/2, 1, 1/2].
    loss = load_balancing_loss(probs, torch.tensor([0, 1, 1, 2]))
    assert math.isclose(loss.item(), 3 * (0.5 * 0.4 + 1.0 * 0.4 + 0.5 * 0.2), rel_tol=1e-6)


def test_balanced_routing_gives_top_k():
    probs = torch.full((8, 4), 0.25)
    expert_idx = torch.arange(8).repeat(2) % 4  # 2 slots, every expert chosen 4 times
    assert math.isclose(load_balancing_loss(probs, expert_idx).item(), 2.0, rel_tol=1e-6)


def test_z_loss_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, 1.0]])
    expected = (math.log(1 + 3) ** 2 + (1 + math.log(2)) ** 2) / 2
    assert math.isclose(router_z_loss(logits).item(), expected, rel_tol=1e-6)


def test_layer_aux_loss_uses_probabilities_once():
    """The layer's loss is E * sum f_i P_i with P = softmax(logits), not softmax(softmax(logits))."""
    layer = MoELayer(MoEConfig(dim=4, expert_dim=8, num_experts=3, top_k=1))
    with torch.no_grad():
        layer.router.weight.copy_(torch.tensor([[4.0, 0, 0, 0], [0, 4.0, 0, 0], [0, 0, 4.0, 0]]))
    x = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    out = layer(x)
    probs = torch.softmax(x @ layer.router.weight.t(), -1)
    f = torch.tensor([2 / 3, 1 / 3, 0.0])
    expected = 3 * (f * probs.mean(0)).sum()
    twice = 3 * (f * torch.softmax(probs, -1).mean(0)).sum()
    assert torch.allclose(out.aux_loss, expected)
    assert not torch.allclose(out.aux_loss, twice, atol=1e-2)
    assert torch.allclose(out.z_loss, router_z_loss(x @ layer.router.weight.t()))


def test_aux_loss_gradient_reaches_router():
    layer = MoELayer(MoEConfig(dim=8, expert_dim=8, num_experts=4, top_k=2))
    layer(torch.randn(16, 8)).aux_loss.backward()
    assert layer.router.weight.grad.abs().sum() > 0


def test_token_weights_exclude_padding():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    expert_idx, token_idx = torch.tensor([0, 1, 2]), torch.tensor([0, 1, 2])
    masked = load_balancing_loss(probs, expert_idx, token_idx, torch.tensor([1.0, 1.0, 0.0]))
    assert torch.allclose(masked, load_balancing_loss(probs[:2], expert_idx[:2]))
