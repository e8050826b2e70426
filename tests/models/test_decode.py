"""The few-token inference path computes what MoELayer computes."""

import pytest
import torch

from moezoo.models.lm.decode import fast_decode, supports_fast_decode, use_fast_decode
from moezoo.moe import MoEConfig, MoELayer


@pytest.mark.parametrize("overrides", [
    {},
    {"norm_topk_prob": False},
    {"num_shared_experts": 1, "shared_expert_dim": 12, "shared_expert_gate": True},
    {"activation": "gelu"},
    {"router": "sigmoid"},
    {"router": "cosine"},
    {"top_k": 1},
])
def test_fast_decode_matches_moe_layer(overrides):
    torch.manual_seed(0)
    layer = MoELayer(MoEConfig(**{"dim": 16, "expert_dim": 8, "num_experts": 8, "top_k": 2, **overrides})).eval()
    x = torch.randn(2, 2, 16)  # (B, T, D): 4 tokens, so some experts get two rows
    with torch.no_grad():
        assert use_fast_decode(layer, 4)
        torch.testing.assert_close(fast_decode(layer, x), layer(x).hidden_states, atol=1e-6, rtol=1e-5)


def test_general_path_is_kept_where_it_must_be():
    layer = MoELayer(MoEConfig(dim=16, expert_dim=8, num_experts=8, top_k=2))
    assert not use_fast_decode(layer, 1)  # gradients needed
    with torch.no_grad():
        assert use_fast_decode(layer, 4) and not use_fast_decode(layer, 5)  # 10 assignments > 8 experts
    for overrides in ({"num_heads": 2}, {"capacity_factor": 1.0}, {"router": "expert_choice"}):
        assert not supports_fast_decode(MoELayer(MoEConfig(dim=16, expert_dim=8, num_experts=8, top_k=2,
                                                           **overrides)))
