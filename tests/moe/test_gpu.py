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
