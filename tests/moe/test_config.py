"""Bad configs fail early with a ValueError that names the field."""

import pytest

from moezoo.moe import MoEConfig, MoELayer


@pytest.mark.parametrize("overrides,field", [
    ({"top_k": 9}, "top_k"),
    ({"top_k": 0}, "top_k"),
    ({"dim": 30, "num_heads": 4}, "dim"),
    ({"router": "sofmax"}, "router"),
    ({"activation": "tanh"}, "activation"),
    ({"eval_capacity_factor": 2.0}, "eval_capacity_factor"),  # without capacity_factor
    ({"capacity_factor": 1.0, "eval_capacity_factor": 0.0}, "eval_capacity_factor"),
    ({"min_capacity": -1}, "min_capacity"),
    ({"router": "deepspeed_top2", "top_k": 1}, "top_k"),
    ({"router": "deepspeed_top2", "norm_topk_prob": False}, "norm_topk_prob"),
    ({"capacity_factor": 0.0}, "capacity_factor"),
    ({"num_experts": 0}, "num_experts"),
    ({"num_shared_experts": -1}, "num_shared_experts"),
    ({"dispatch": "fast"}, "dispatch"),
    ({"aux_loss_coef": -1.0}, "aux_loss_coef"),
])
def test_bad_config_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=rf"MoEConfig\.{field}="):
        MoEConfig(**{"dim": 32, "expert_dim": 64, "num_experts": 8, "top_k": 2, **overrides})


def test_unknown_router_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        MoEConfig(dim=8, expert_dim=8, router="sofmax")
    for name in ("softmax", "cosine", "expert_choice", "hyper"):
        assert name in str(err.value)


def test_replace_revalidates():
    config = MoEConfig(dim=32, expert_dim=64)
    assert config.replace(top_k=1).top_k == 1
    with pytest.raises(ValueError, match="top_k"):
        config.replace(top_k=100)


def test_expert_layout_matches_transformers():
    layer = MoELayer(MoEConfig(dim=32, expert_dim=48, num_experts=4, top_k=2, num_heads=2))
    assert layer.experts.gate_up_proj.shape == (4, 96, 16)  # (E, 2I, D / heads)
    assert layer.experts.down_proj.shape == (4, 16, 48)
    assert layer.router.weight.shape == (4, 16)


def test_default_layer_has_todays_parameters_only():
    """The DeepSpeed / Phi options default off: a default layer's state dict is what shipped checkpoints hold."""
    layer = MoELayer(MoEConfig(dim=32, expert_dim=48, num_experts=4, top_k=2, num_shared_experts=1))
    assert list(layer.state_dict()) == ["router.weight", "experts.gate_up_proj", "experts.down_proj",
                                        "shared_experts.gate_proj.weight", "shared_experts.up_proj.weight",
                                        "shared_experts.down_proj.weight"]


def test_phi_and_residual_layout():
    layer = MoELayer(MoEConfig(dim=32, expert_dim=48, num_experts=4, top_k=2, router="deepspeed_top2",
                               activation="gelu_tanh", expert_bias=True, use_residual=True))
    shapes = {name: tuple(t.shape) for name, t in layer.state_dict().items()}
    assert shapes == {"router.weight": (4, 32), "experts.up_proj": (4, 48, 32), "experts.down_proj": (4, 32, 48),
                      "experts.up_proj_bias": (4, 48), "experts.down_proj_bias": (4, 32),
                      "residual_mlp.up_proj.weight": (48, 32), "residual_mlp.up_proj.bias": (48,),
                      "residual_mlp.down_proj.weight": (32, 48), "residual_mlp.down_proj.bias": (32,),
                      "coefficient.weight": (2, 32), "coefficient.bias": (2,)}
