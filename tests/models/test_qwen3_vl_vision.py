"""The Qwen3-VL vision tower: exactly transformers 5.24's ``Qwen3VLMoeVisionModel`` on the same weights.

Merged tokens and every deepstack feature match to 1e-5 in fp32 (in practice about 1e-7) for images of
different sizes in one pack, same-size images, a video, and grids smaller and larger than the learned position
grid; the weights load by the documented key mapping from a whole ``Qwen3VLMoeForConditionalGeneration``.
"""

import pytest
import torch
from transformers import (
    Qwen3VLMoeConfig,
    Qwen3VLMoeForConditionalGeneration,
    Qwen3VLMoeVisionConfig,
)
from transformers.models.qwen3_vl_moe.modeling_qwen3_vl_moe import Qwen3VLMoeVisionModel

from moezoo.models.encoders.qwen3_vl import (
    Qwen3VLVisionConfig,
    Qwen3VLVisionEncoder,
    from_hf_state_dict_key,
    hf_state_dict_key,
    merged_token_counts,
)

TINY = {"depth": 3, "hidden_size": 32, "intermediate_size": 64, "num_heads": 4, "patch_size": 4,
        "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 48, "num_position_embeddings": 36,
        "deepstack_visual_indexes": [0, 2]}
WIDTH = 3 * 2 * 4 * 4  # C * T * P * P
GRIDS = {
    "two_images": [[1, 4, 6], [1, 8, 4]],
    "same_size_images": [[1, 4, 4], [1, 4, 4]],
    "video": [[3, 4, 4]],
    "image_and_video": [[1, 2, 2], [2, 6, 4]],
    "larger_than_position_grid": [[1, 12, 10]],
}


def _pair(seed=0, **overrides):
    """A random transformers tower and ours holding its weights."""
    torch.manual_seed(seed)
    hf = Qwen3VLMoeVisionModel(Qwen3VLMoeVisionConfig(**{**TINY, **overrides})).eval()
    for p in hf.parameters():  # LayerNorms and biases too, so every weight matters
        p.data.normal_(0, 0.2)
    ours = Qwen3VLVisionEncoder(Qwen3VLVisionConfig.from_hf(hf.config.to_dict())).eval()
    ours.load_state_dict(hf.state_dict())
    return hf, ours


def _pixels(grid):
    return torch.randn(int(torch.tensor(grid).prod(-1).sum()), WIDTH, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("case", list(GRIDS))
def test_merged_and_deepstack_features_equal_transformers(case):
    hf, ours = _pair()
    grid, x = torch.tensor(GRIDS[case]), _pixels(GRIDS[case])
    with torch.no_grad():
        want = hf(x, grid_thw=grid)
        got = ours(x, grid)
    tokens = sum(merged_token_counts(grid, 2))
    assert got.merged.shape == (tokens, 48) and len(got.deepstack) == 2
    torch.testing.assert_close(got.merged, want.pooler_output, rtol=0, atol=1e-5)
    for mine, theirs in zip(got.deepstack, want.deepstack_features, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, rtol=0, atol=1e-5)


def test_images_do_not_attend_to_each_other():
    _, ours = _pair()
    grid = torch.tensor(GRIDS["two_images"])
    x = _pixels(GRIDS["two_images"])
    y = x.clone()
    y[24:] += 1.0  # change only the second image
    with torch.no_grad():
        a, b = ours(x, grid).split()[0], ours(y, grid).split()[0]
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)
    assert not torch.allclose(a[1], b[1])


def test_deepstack_comes_in_block_order_whatever_the_config_order():
    hf, ours = _pair(deepstack_visual_indexes=[2, 0])  # merger 0 taps block 2, merger 1 taps block 0
    grid, x = torch.tensor(GRIDS["video"]), _pixels(GRIDS["video"])
    with torch.no_grad():
        want, got = hf(x, grid_thw=grid), ours(x, grid)
        ours.deepstack_merger_list[1].linear_fc2.bias += 1.0  # the merger of block 0 moves the first feature
        moved = ours(x, grid)
    for mine, theirs in zip(got.deepstack, want.deepstack_features, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    torch.testing.assert_close(moved.deepstack[0], got.deepstack[0] + 1.0)
    torch.testing.assert_close(moved.deepstack[1], got.deepstack[1], rtol=0, atol=0)


def test_gradients_equal_transformers_and_reach_every_parameter():
    hf, ours = _pair()
    grid, x = torch.tensor(GRIDS["image_and_video"]), _pixels(GRIDS["image_and_video"])
    weight = torch.randn(48, generator=torch.Generator().manual_seed(2))
    for model, out in ((hf, hf(x, grid_thw=grid)), (ours, ours(x, grid))):
        merged = out.pooler_output if model is hf else out.merged
        deep = out.deepstack_features if model is hf else out.deepstack
        ((merged + sum(deep)) @ weight).square().mean().backward()
    grads = dict(hf.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-5, msg=name)


def test_weights_load_from_a_whole_checkpoint_by_the_key_mapping():
    text = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "moe_intermediate_size": 16,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "num_experts": 4,
            "num_experts_per_tok": 2, "head_dim": 8,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1],
                                "mrope_interleaved": True}}
    config = Qwen3VLMoeConfig(text_config=text, vision_config={**TINY, "out_hidden_size": 32})
    torch.manual_seed(0)
    model = Qwen3VLMoeForConditionalGeneration(config).eval()
    state = {from_hf_state_dict_key(k): v for k, v in model.state_dict().items()
             if from_hf_state_dict_key(k) is not None}
    ours = Qwen3VLVisionEncoder(Qwen3VLVisionConfig.from_hf(config.vision_config.to_dict())).eval()
    assert set(state) == set(ours.state_dict())
    ours.load_state_dict(state)
    assert all(hf_state_dict_key(name) in model.state_dict() for name in ours.state_dict())
    grid, x = torch.tensor(GRIDS["two_images"]), _pixels(GRIDS["two_images"])
    with torch.no_grad():
        want = model.model.get_image_features(x, image_grid_thw=grid)
        merged, deepstack = ours(x, grid).split()
    for mine, theirs in zip(merged, want.pooler_output, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)
    for per_layer_mine, per_layer_theirs in zip(deepstack, want.deepstack_features, strict=True):
        for mine, theirs in zip(per_layer_mine, per_layer_theirs, strict=True):
            torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-5)


def test_config_maps_one_to_one_onto_transformers():
    hf = Qwen3VLMoeVisionConfig(**TINY)
    ours = Qwen3VLVisionConfig.from_hf(hf.to_dict())
    assert ours.to_dict() == {"kind": "qwen3_vl", **TINY, "hidden_act": "gelu_pytorch_tanh", "rope_theta": 10000.0,
                              "in_channels": 3, "initializer_range": 0.02}
    again = Qwen3VLMoeVisionConfig(**{k: v for k, v in ours.to_hf().items() if k != "model_type"})
    assert {k: v for k, v in again.to_dict().items() if k != "transformers_version"} == \
        {k: v for k, v in hf.to_dict().items() if k != "transformers_version"}
    # a fresh tower from the config has transformers' parameter names and shapes
    theirs = {k: v.shape for k, v in Qwen3VLMoeVisionModel(hf).state_dict().items()}
    assert {k: v.shape for k, v in Qwen3VLVisionEncoder(ours).state_dict().items()} == theirs


def test_bad_inputs_and_configs_say_what_is_wrong():
    _, ours = _pair()
    with pytest.raises(ValueError, match=r"grid_thw rows \[\[1, 3, 4\]\] are not valid.*spatial_merge_size=2"):
        ours(torch.randn(12, WIDTH), torch.tensor([[1, 3, 4]]))
    with pytest.raises(ValueError, match=r"pixel_values must be \(sum of t\*h\*w = 16, C\*T\*P\*P = 96\)"):
        ours(torch.randn(16, 95), torch.tensor([[1, 4, 4]]))
    with pytest.raises(ValueError, match="rope_parameters.*'axial'"):
        Qwen3VLVisionConfig.from_hf({**TINY, "rope_parameters": {"rope_type": "yarn"}})
    with pytest.raises(ValueError, match="num_position_embeddings=35 must be a square number"):
        Qwen3VLVisionConfig(num_position_embeddings=35)
    with pytest.raises(ValueError, match="got unknown keys"):
        Qwen3VLVisionConfig.from_hf({**TINY, "window_size": 112})
