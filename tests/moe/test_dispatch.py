"""The fast dispatch must equal the mask-loop reference: outputs and every gradient."""

import copy
import itertools

import pytest
import torch

import moezoo.moe.dispatch as dispatch_module
import moezoo.moe.threads as threads_module
from moezoo.moe import MoEConfig, MoELayer, list_routers
from moezoo.moe.threads import record_splits

ROUTERS = list_routers()


def _layer(**overrides) -> MoELayer:
    config = MoEConfig(**{"dim": 32, "expert_dim": 12, "num_experts": 6, "top_k": 2, **overrides})
    layer = MoELayer(config).train()
    with torch.no_grad():  # unit-scale weights so that 1e-5 is a meaningful tolerance
        for p in layer.parameters():
            p.normal_(std=0.3)
    return layer


def _run(layer: MoELayer, x: torch.Tensor, grad: torch.Tensor, dispatch: str, seed: int = 1):
    x = x.detach().clone().requires_grad_(True)
    torch.manual_seed(seed)  # noisy routers draw the same noise for both paths
    out = layer(x, dispatch=dispatch)
    loss = (out.hidden_states * grad).sum() + out.aux_loss + out.z_loss
    loss.backward()
    grads = {name: p.grad for name, p in layer.named_parameters()}
    return out, x.grad, grads


def assert_matches_reference(layer: MoELayer, x: torch.Tensor, dispatch: str = "fused", tol: float = 1e-5):
    reference = copy.deepcopy(layer)
    grad = torch.randn_like(x)
    fast, fast_dx, fast_grads = _run(layer, x, grad, dispatch)
    ref, ref_dx, ref_grads = _run(reference, x, grad, "loop")
    scale = ref.hidden_states.abs().max().item()
    torch.testing.assert_close(fast.hidden_states, ref.hidden_states, atol=tol * scale, rtol=tol)
    torch.testing.assert_close(fast.stats.tokens_per_expert, ref.stats.tokens_per_expert)
    torch.testing.assert_close(fast.stats.dropped_fraction, ref.stats.dropped_fraction)
    torch.testing.assert_close(fast_dx, ref_dx, atol=tol * ref_dx.abs().max().item(), rtol=tol)
    assert fast_grads.keys() == ref_grads.keys()
    for name, ref_g in ref_grads.items():
        if ref_g is None:  # e.g. noise weights in eval, or an idle expert choice
            assert fast_grads[name] is None or not fast_grads[name].any(), name
            continue
        assert fast_grads[name] is not None, f"{name} got no gradient"
        torch.testing.assert_close(fast_grads[name], ref_g, atol=tol * max(ref_g.abs().max().item(), 1e-6),
                                   rtol=tol, msg=lambda m, n=name: f"{n}: {m}")


CASES = list(itertools.product(ROUTERS, [0, 2], [1, 2], [None, 1.0]))


@pytest.mark.parametrize("router,shared,heads,capacity", CASES,
                         ids=[f"{r}-shared{s}-heads{h}-cap{c}" for r, s, h, c in CASES])
def test_fused_matches_reference(router, shared, heads, capacity):
    layer = _layer(router=router, num_shared_experts=shared, shared_expert_gate=bool(shared),
                   num_heads=heads, capacity_factor=capacity)
    assert_matches_reference(layer, torch.randn(2, 20, 32))


@pytest.mark.parametrize("router", ["softmax", "expert_choice", "sigmoid"])
@pytest.mark.parametrize("capacity", [None, 0.5])
def test_grouped_mm_matches_reference(router, capacity):
    """The single-segment ``torch._grouped_mm`` path (CUDA's default) also runs on CPU."""
    layer = _layer(router=router, capacity_factor=capacity, expert_dim=16)
    assert_matches_reference(layer, torch.randn(40, 32), dispatch="grouped_mm")


def test_gelu_experts_match_reference():
    assert_matches_reference(_layer(activation="gelu", num_shared_experts=1), torch.randn(30, 32))


@pytest.mark.parametrize("dispatch", ["fused", "grouped_mm"])
@pytest.mark.parametrize("activation", ["swiglu", "gelu_tanh", "relu"])
def test_biased_experts_match_reference(activation, dispatch):
    """Experts with biases (MoE-LLaVA-Phi2's fc1 / fc2), any activation, with capacity drops and a residual MLP."""
    layer = _layer(activation=activation, expert_bias=True, expert_dim=16, capacity_factor=0.75, use_residual=True,
                   num_shared_experts=1)
    assert_matches_reference(layer, torch.randn(40, 32), dispatch=dispatch)
    layer.zero_grad(set_to_none=True)
    assert_matches_reference(layer.eval(), torch.randn(3, 32), dispatch="auto")  # few tokens


@pytest.mark.parametrize("tokens,threads", [(2, 1), (2, 2), (1, 1), (1, 2)])
def test_biased_experts_decode_like_the_reference(tokens, threads, set_threads):
    """A decoding step (dropless, no gradients, a few tokens: the direct path, its weights in row blocks over the
    threads) with biased experts: the biases are not skipped."""
    set_threads(threads)
    layer = _layer(num_experts=8, activation="gelu_tanh", expert_bias=True).eval()
    x = torch.randn(1, tokens, 32)
    with torch.no_grad():
        fast, ref = layer(x).hidden_states, layer(x, dispatch="loop").hidden_states
    torch.testing.assert_close(fast, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)


def test_biased_experts_on_threads_match_reference(set_threads):
    set_threads(2)
    layer = _layer(num_experts=8, top_k=2, activation="gelu_tanh", expert_bias=True, router="deepspeed_top2")
    with record_splits() as workers:
        assert_matches_reference(layer, torch.randn(300, 32))
    assert len(workers) >= 2 and all(n == 2 for n in workers)


def test_threaded_experts_match_reference(set_threads):
    """With 2 intra-op threads the experts run on 2 threads, forward and backward, as the reference computes."""
    set_threads(2)
    layer = _layer(num_experts=8, top_k=4)
    with record_splits() as workers:
        assert_matches_reference(layer, torch.randn(600, 32))
    assert len(workers) >= 2 and all(n == 2 for n in workers)  # the forward's and the backward's expert loops


def test_eval_and_inference_mode():
    layer = _layer().eval()
    x = torch.randn(7, 32)
    with torch.inference_mode():
        fast = layer(x).hidden_states
        ref = layer(x, dispatch="loop").hidden_states
    torch.testing.assert_close(fast, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)


@pytest.mark.parametrize("dispatch", ["fused", "grouped_mm"])
def test_idle_experts_get_zero_gradient(dispatch):
    layer = _layer(num_experts=6, top_k=1, expert_dim=16)
    layer(torch.randn(30, 32), dispatch=dispatch).hidden_states.sum().backward()  # every expert busy
    layer.zero_grad(set_to_none=True)  # the next gradients reuse that memory (GradBuffers)
    with torch.no_grad():  # every token prefers expert 0
        layer.router.weight.zero_()
        layer.router.weight[0] = 5.0
    x = torch.ones(5, 32) + 0.01 * torch.randn(5, 32)
    out = layer(x, dispatch=dispatch)
    out.hidden_states.sum().backward()
    assert out.stats.tokens_per_expert.tolist() == [5, 0, 0, 0, 0, 0]
    assert not layer.experts.gate_up_proj.grad[1:].any() and not layer.experts.down_proj.grad[1:].any()
    assert layer.experts.gate_up_proj.grad[0].abs().sum() > 0


def test_forked_child_forgets_the_expert_pool():
    """A forked child (DataLoader workers fork) must not reuse the parent's dead pool threads."""
    import os

    layer = _layer(num_experts=4, top_k=2)
    with torch.no_grad():
        layer(torch.randn(64, 32))
    if torch.get_num_threads() > 1:
        assert threads_module._pool is not None
    pid = os.fork()
    if pid == 0:  # child: report through the exit code only
        os._exit(0 if threads_module._pool is None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("overrides", [
    {}, {"norm_topk_prob": False}, {"num_shared_experts": 1, "shared_expert_gate": True}, {"activation": "gelu"},
    {"router": "sigmoid"}, {"router": "expert_choice"}, {"num_heads": 2, "top_k": 1}, {"top_k": 1},
])
def test_few_token_inference_path_matches_reference(overrides, monkeypatch):
    """Inference with few assignments per expert (decoding, short prompts) skips the sort and autograd."""
    calls = []
    real = dispatch_module.direct_ffn
    monkeypatch.setattr("moezoo.moe.experts.direct_ffn", lambda *a: calls.append(1) or real(*a))
    layer = _layer(num_experts=8, **overrides).eval()
    x = torch.randn(2, 2, 32)  # 4 tokens: some experts get two rows
    with torch.no_grad():
        fast = layer(x)
        ref = layer(x, dispatch="loop")
    assert calls, "the few-token path was not taken"
    torch.testing.assert_close(fast.hidden_states, ref.hidden_states, atol=1e-5 * ref.hidden_states.abs().max().item(),
                               rtol=1e-5)
    torch.testing.assert_close(fast.stats.tokens_per_expert, ref.stats.tokens_per_expert)


@pytest.mark.parametrize("num_threads", [1, 2, 3])
@pytest.mark.parametrize("tokens", [1, 5])
def test_few_token_path_with_weights_split_over_threads(tokens, num_threads, monkeypatch, set_threads):
    """The weights read in row blocks, one per thread (3 threads do not divide the rows: no split)."""
    set_threads(num_threads)
    blocks = []
    real = dispatch_module.row_blocks
    monkeypatch.setattr(dispatch_module, "row_blocks", lambda w, t, e=0: blocks.append(t) or real(w, t, e))
    layer = _layer(num_experts=8).eval()
    x = torch.randn(tokens, 32)
    with torch.no_grad():
        fast = layer(x).hidden_states
        ref = layer(x, dispatch="loop").hidden_states
    assert blocks and set(blocks) == {2 if num_threads == 2 else 1}
    torch.testing.assert_close(fast, ref, atol=1e-5 * ref.abs().max().item(), rtol=1e-5)


def _grad_step(layer, x, grad):
    out = layer(x)
    (out.hidden_states * grad).sum().backward()


def test_weight_gradient_memory_is_recycled_only_when_free():
    layer = _layer(num_experts=4, top_k=2)
    reference = copy.deepcopy(layer)
    x, grad = torch.randn(40, 32), torch.randn(40, 32)
    w = layer.experts.gate_up_proj

    _grad_step(layer, x, grad)
    first = w.grad.clone()
    ptr = w.grad.data_ptr()
    kept = w.grad  # a live reference: the next step must not write into it
    layer.zero_grad(set_to_none=True)
    _grad_step(layer, x, grad)
    assert w.grad.data_ptr() != ptr and torch.equal(kept, first)
    second_ptr = w.grad.data_ptr()

    del kept
    layer.zero_grad(set_to_none=True)
    _grad_step(layer, 2 * x, grad)  # now the storage is free: it is reused, with the new values
    _grad_step(reference, 2 * x, grad)
    assert w.grad.data_ptr() == second_ptr  # recycled, not re-allocated
    torch.testing.assert_close(w.grad, reference.experts.gate_up_proj.grad)


def test_gradient_accumulation_is_not_overwritten():
    layer = _layer(num_experts=4, top_k=2)
    x, grad = torch.randn(40, 32), torch.randn(40, 32)
    _grad_step(layer, x, grad)
    once = layer.experts.down_proj.grad.clone()
    _grad_step(layer, x, grad)  # accumulate: .grad stays alive, so a fresh buffer is used
    torch.testing.assert_close(layer.experts.down_proj.grad, 2 * once)


def test_grad_buffers_are_not_copied_with_the_module():
    layer = _layer(num_experts=4, top_k=2)
    _grad_step(layer, torch.randn(10, 32), torch.randn(10, 32))
    assert copy.deepcopy(layer).experts.grad_buffers._storage == {}


def test_backward_twice_with_retained_graph():
    """The saved pre-activations go through save_for_backward, so a retained graph can be replayed."""
    layer = _layer(num_experts=8, top_k=4)
    x = torch.randn(300, 32)
    loss = layer(x).hidden_states.square().sum()
    loss.backward(retain_graph=True)
    first = layer.experts.gate_up_proj.grad.clone()
    loss.backward()
    torch.testing.assert_close(layer.experts.gate_up_proj.grad, 2 * first)
