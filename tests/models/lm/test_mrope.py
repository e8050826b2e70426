"""Multimodal RoPE (``LMConfig.mrope_section``) against transformers' rotary embeddings: Qwen3-VL's interleaved
layout (``Qwen3VLMoeTextRotaryEmbedding``) and Qwen2-VL's chunked one (``Qwen2VLRotaryEmbedding``), on random
3-D positions; and the plain path of every other model left as it was."""

from __future__ import annotations

import pytest
import torch
import transformers

from moezoo.models.lm import LMConfig, MoEForCausalLM
from moezoo.models.lm.rope import RotaryEmbedding, apply_rope

ROPE = {"rope_type": "default", "rope_theta": 5000.0, "mrope_section": [4, 2, 2]}


def _reference(interleaved: bool):
    if interleaved:
        from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import (
            Qwen3VLMoeTextRotaryEmbedding,
        )

        config = transformers.Qwen3VLMoeTextConfig(hidden_size=64, num_attention_heads=4, head_dim=16,
                                                   rope_parameters={**ROPE, "mrope_interleaved": True})
        return Qwen3VLMoeTextRotaryEmbedding(config)
    from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLRotaryEmbedding

    config = transformers.Qwen2VLTextConfig(hidden_size=64, num_attention_heads=4, rope_parameters={**ROPE})
    return Qwen2VLRotaryEmbedding(config)


@pytest.mark.parametrize("interleaved", [True, False])
def test_mrope_tables_equal_transformers(interleaved):
    torch.manual_seed(0)
    positions = torch.randint(0, 300, (3, 2, 11))
    expected_cos, expected_sin = _reference(interleaved)(torch.zeros(1, dtype=torch.float32), positions)
    ours = RotaryEmbedding(16, 5000.0, mrope_section=[4, 2, 2], mrope_interleaved=interleaved)
    cos, sin = ours(positions, torch.float32)
    assert torch.equal(cos, expected_cos) and torch.equal(sin, expected_sin)
    x = torch.randn(2, 4, 11, 16)
    expected = x * expected_cos[:, None] + torch.cat((-x[..., 8:], x[..., :8]), -1) * expected_sin[:, None]
    assert torch.equal(apply_rope(x, cos, sin), expected)


def test_three_axis_positions_need_mrope():
    rope = RotaryEmbedding(16, 5000.0)
    with pytest.raises(ValueError, match="mrope_section"):
        rope(torch.zeros(3, 1, 4, dtype=torch.long), torch.float32)


def test_mrope_config_is_checked():
    with pytest.raises(ValueError, match="summing to rotary_dim // 2 = 8"):
        LMConfig(vocab_size=32, dim=64, num_layers=1, num_heads=4, ffn_dim=32, mrope_section=[4, 2, 1])


def test_model_with_equal_axes_is_the_plain_model():
    """On text (three equal positions) the multimodal model computes what the plain model computes."""
    base = {"vocab_size": 32, "dim": 64, "num_layers": 2, "num_heads": 4, "ffn_dim": 32}
    torch.manual_seed(0)
    plain = MoEForCausalLM(LMConfig(**base)).eval()
    multi = MoEForCausalLM(LMConfig(**base, mrope_section=[4, 2, 2], mrope_interleaved=True)).eval()
    multi.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 32, (2, 9))
    positions = torch.arange(9).expand(3, 2, 9)
    with torch.no_grad():
        assert torch.equal(multi(input_ids=ids, position_ids=positions).logits, plain(input_ids=ids).logits)
