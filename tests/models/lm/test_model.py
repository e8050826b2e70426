"""The LM itself: config checks, per-layer MoE choice, losses, KV-cache-free training."""

import json

import pytest
import torch

from moezoo.models.lm import LMConfig, MoEForCausalLM
from moezoo.moe import MoEConfig


def _config(**overrides):
    base = dict(vocab_size=96, dim=32, num_layers=3, num_heads=4, num_kv_heads=2, ffn_dim=48,
                moe=MoEConfig(dim=32, expert_dim=16, num_experts=4, top_k=2, aux_loss_coef=0.02, z_loss_coef=0.001),
                moe_layers=[1, 2], qk_norm="head", rope_scaling={"rope_type": "linear", "factor": 2.0})
    return LMConfig(**{**base, **overrides})


@pytest.mark.parametrize("field, value, message", [
    ("num_kv_heads", 3, r"LMConfig.num_heads=4 must be a multiple of num_kv_heads=3"),
    ("qk_norm", "layer", r"LMConfig.qk_norm='layer' must be one of"),
    ("moe_layers", [5], r"LMConfig.moe_layers=\[5\] must be layer indices in \[0, num_layers=3\)"),
    ("rope_scaling", {"rope_type": "dynamic", "factor": 2.0}, r"unsupported rope_type 'dynamic'"),
    ("rope_scaling", {"rope_type": "llama3", "factor": 8.0}, r"lacks \['low_freq_factor'"),
    ("moe", MoEConfig(dim=16, expert_dim=8, num_experts=4, top_k=2), r"LMConfig.moe=.* expected dim=32"),
])
def test_config_errors_name_the_field(field, value, message):
    with pytest.raises(ValueError, match=message):
        _config(**{field: value})


def test_config_dict_round_trip_and_unknown_keys():
    cfg = _config()
    assert LMConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"unknown keys \['hidden'\]"):
        LMConfig.from_dict({**cfg.to_dict(), "hidden": 3})


def test_per_layer_moe_choice():
    model = MoEForCausalLM(_config(moe_layers=[0, 2]))
    kinds = [type(layer.mlp).__name__ for layer in model.layers]
    assert kinds == ["MoELayer", "MLP", "MoELayer"]
    dense = MoEForCausalLM(_config(moe=None, moe_layers=None))
    out = dense(input_ids=torch.randint(0, 96, (1, 5)))
    assert out.aux_loss.item() == 0 and not out.router_stats


def test_training_loss_adds_weighted_router_losses_and_backpropagates():
    torch.manual_seed(0)
    model = MoEForCausalLM(_config())
    ids = torch.randint(0, 96, (2, 10))
    model.eval()
    eval_out = model(input_ids=ids, labels=ids)
    model.train()
    out = model(input_ids=ids, labels=ids)
    expected = eval_out.loss + 0.02 * out.aux_loss + 0.001 * out.z_loss
    torch.testing.assert_close(out.loss, expected)
    assert out.aux_loss > 1.0 and out.z_loss > 0  # Switch loss is ~top_k at balance
    out.loss.backward()
    layer = model.layers[1].mlp
    assert layer.router.weight.grad.abs().sum() > 0 and layer.experts.gate_up_proj.grad.abs().sum() > 0
    assert len(out.router_stats) == 2


def test_labelled_logits_give_the_same_loss_and_gradients_from_the_answer_rows_only():
    """Training's head on the label positions only: the same loss, lm_loss and gradients as the full head."""
    torch.manual_seed(0)
    model = MoEForCausalLM(_config()).train()
    ids = torch.randint(0, 96, (3, 12))
    labels = torch.full_like(ids, -100)
    labels[0, 8:11], labels[1, 5:7], labels[2, 11] = ids[0, 8:11], ids[1, 5:7], ids[2, 11]  # position 10 predicts 11

    def run(labelled: bool):
        model.zero_grad()
        torch.manual_seed(1)
        out = model(input_ids=ids, labels=labels, labelled_logits=labelled)
        out.loss.backward()
        return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    full, full_grads = run(False)
    rows, row_grads = run(True)
    assert full.logits.shape == (3, 12, 96) and rows.logits.shape == (6, 96)  # 3 + 2 + 1 label positions
    torch.testing.assert_close(rows.logits, full.logits[:, :-1][labels[:, 1:] != -100])
    torch.testing.assert_close(rows.loss, full.loss)
    torch.testing.assert_close(rows.lm_loss, full.lm_loss)
    assert full_grads.keys() == row_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(row_grads[name], grad, msg=name)


def test_inputs_embeds_equal_input_ids():
    model = MoEForCausalLM(_config()).eval()
    ids = torch.randint(0, 96, (2, 6))
    with torch.no_grad():
        a = model(input_ids=ids).logits
        b = model(inputs_embeds=model.embed_tokens(ids)).logits
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="exactly one of input_ids or inputs_embeds"):
        model()
