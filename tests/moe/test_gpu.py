"""CUDA checks of the grouped-GEMM dispatch (select with ``-m gpu``)."""

import copy

import pytest
import torch

from moezoo.moe import MoEConfig, MoELayer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def _layer(**overrides) -> MoELayer:
    config = MoEConfig(**{"dim": 256, "expert_dim": 128, "num_experts": 16, "top_k": 4, **overrides})
    return MoELayer(config).cuda().to(torch.bfloat16)


@pytest.mark.parametrize("router", ["softmax", "sigmoid", "expert_choice"])
def test_grouped_mm_matches_reference_bf16(router):
    layer = _layer(router=router)
    reference = copy.deepcopy(layer)
    x = torch.randn(512, 256, device="cuda", dtype=torch.bfloat16)
    fast = layer(x).hidden_states.float()  # "auto" is grouped_mm on CUDA
    ref = reference(x, dispatch="loop").hidden_states.float()
    torch.testing.assert_close(fast, ref, atol=2e-2 * ref.abs().max().item(), rtol=2e-2)


def test_forward_needs_no_host_sync():
    layer = _layer()
    x = torch.randn(512, 256, device="cuda", dtype=torch.bfloat16)
    layer(x)  # warm up (lazy init may sync)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = layer(x)
        out.hidden_states.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_deepspeed_gate_with_biased_experts_bf16_without_host_sync():
    """MoE-LLaVA-Phi2's layer on the grouped GEMM: biases gathered per row on device, the gate in float32."""
    layer = _layer(router="deepspeed_top2", top_k=2, activation="gelu_tanh", expert_bias=True, capacity_factor=1.0)
    with torch.no_grad():
        for name, p in layer.named_parameters():
            if name.endswith("bias"):
                p.normal_(std=0.1)
    reference = copy.deepcopy(layer)
    x = torch.randn(512, 256, device="cuda", dtype=torch.bfloat16)
    fast = layer(x)
    ref = reference(x, dispatch="loop")
    assert fast.num_dropped > 0
    torch.testing.assert_close(fast.hidden_states.float(), ref.hidden_states.float(),
                               atol=2e-2 * ref.hidden_states.float().abs().max().item(), rtol=2e-2)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        layer(x).hidden_states.sum().backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
