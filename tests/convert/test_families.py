"""The family table states what transformers does: checked against its config classes and saved files."""

from __future__ import annotations

import dataclasses

import pytest
import transformers
from safetensors import safe_open
from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

from moezoo.convert.families import FAMILIES, TextFamily
from moezoo.convert.hf_config import family_problems, hf_config_from_lm, lm_config_from_hf
from moezoo.convert.testing import TINY_FAMILIES, tiny_hf_config, tiny_hf_model
from moezoo.models.lm.config import DENSE_FAMILIES, MOE_FAMILIES


def test_model_package_family_tuples_agree_with_table():
    assert sorted(MOE_FAMILIES) == sorted(name for name, f in FAMILIES.items() if f.moe)
    assert sorted(DENSE_FAMILIES) == sorted(name for name, f in FAMILIES.items() if not f.moe)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_entry_names_transformers_classes(family):
    f = FAMILIES[family]
    assert f.model_type == family
    assert CONFIG_MAPPING_NAMES[family] == f.config_class
    assert MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[family] == f.architecture


@pytest.mark.parametrize("family", list(FAMILIES))
def test_config_keys_match_transformers(family):
    f = FAMILIES[family]
    cls = getattr(transformers, f.config_class)
    defaults = cls().to_dict()
    assert ("attention_bias" in defaults) == f.attention_bias_field
    assert ("mlp_bias" in defaults) == f.mlp_bias_field
    assert "head_dim" not in defaults or f.head_dim_field  # Qwen3-MoE's files carry it without a default
    assert ("clip_qkv" in defaults) == f.clip_qkv_field
    assert (f.qkv_bias_key in defaults) == (f.qkv_bias == "field")
    if f.qkv_bias == "field":
        assert defaults[f.qkv_bias_key] == f.qkv_bias_default
    if f.qk_norm_key is not None:
        assert defaults[f.qk_norm_key] is False
    assert f.norm_eps_key in defaults
    assert defaults["rope_parameters"].get("partial_rotary_factor") == f.partial_rotary_default
    assert ("use_parallel_residual" in defaults) == (f.parallel_block == "field")
    assert (defaults["hidden_act"] == "silu") == (f.ffn == "swiglu")
    assert defaults.get("original_max_position_embeddings") == f.original_max_default
    assert ("use_sliding_window" in defaults) == (f.sliding_window == "switch")
    assert ("sliding_window" in defaults) == (f.sliding_window != "none")
    assert defaults["rope_parameters"]["rope_theta"] == f.rope_theta
    assert ("norm_topk_prob" in defaults) == (f.moe and f.norm_topk_prob is None)
    assert ("shared_expert_intermediate_size" in defaults) == f.shared_expert
    assert ("decoder_sparse_step" in defaults) == (f.sparse_layers == "step")
    if f.moe:
        assert f.expert_dim_key in defaults
        # Every key moezoo reads sets the expert count transformers uses; the one it writes included.
        assert all(getattr(cls(**{key: 3}), f.num_experts_keys[0]) == 3 for key in f.num_experts_keys)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_attention_and_weight_names_match_a_saved_checkpoint(tmp_path, family):
    f = FAMILIES[family]
    hf = tiny_hf_model(family)
    hf.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as file:
        shapes = {key: file.get_slice(key).get_shape() for key in file.keys()}
    keys = set(shapes)
    config = lm_config_from_hf(hf.config.to_dict())
    attn = "model.layers.0.self_attn"
    q_norm = f.weight_names.get("self_attn.q_norm", "self_attn.q_norm").split(".")[-1]
    norm_kinds = {(): "none", (config.head_dim,): "head", (config.num_heads * config.head_dim,): "full"}
    if f"{attn}.{q_norm}.norms.{config.num_heads - 1}.weight" in keys:  # one LayerNorm per head
        assert f.qk_norm == "each_head" and f"{attn}.{q_norm}.norms.{config.num_heads}.weight" not in keys
    else:
        assert norm_kinds[tuple(shapes.get(f"{attn}.{q_norm}.weight", ()))] == f.qk_norm
    assert (f.qk_norm_key is None) or f.tiny[f.qk_norm_key]  # the tiny model exercises a switched q/k norm
    q_proj = "qkv_proj" if f.fused_projections else "q_proj"
    o_proj = f.weight_names.get("self_attn.o_proj", "self_attn.o_proj")
    assert (f"{attn}.{q_proj}.bias" in keys) == (f.qkv_bias != "none" or f.attention_bias_always)
    assert (f"model.layers.0.{o_proj}.bias" in keys) == f.attention_bias_always
    assert ("lm_head.bias" in keys) == f.lm_head_bias
    final_norm = f.weight_names.get("norm", "norm")
    assert shapes[f"model.{final_norm}.weight"] == [config.dim]
    assert (f"model.{final_norm}.bias" in keys) == (f.norm == "layer")
    routers = {i for i in range(config.num_layers) if f"model.layers.{i}.{f.moe_block}.gate.weight" in keys}
    assert sorted(routers) == config.sparse_layers()
    for i in routers:  # gate and up are (expert_dim, dim), down (dim, expert_dim); gate/up order: parity tests
        expert = f"model.layers.{i}.{f.moe_block}.experts.0"
        assert [shapes[f"{expert}.{p}.weight"] for p in f.expert_projections] == [
            [config.moe.expert_dim, config.dim]] * 2 + [[config.dim, config.moe.expert_dim]]
        assert (f"model.layers.{i}.mlp.shared_expert.gate_proj.weight" in keys) == f.shared_expert


@pytest.mark.parametrize("family", list(FAMILIES))
def test_tiny_config_comes_from_the_entry_and_exports_as_itself(family):
    f = FAMILIES[family]
    assert TINY_FAMILIES[family] == (f.config_class, dict(f.tiny))
    config = lm_config_from_hf(tiny_hf_config(family).to_dict())
    assert family_problems(config, family) == []
    assert lm_config_from_hf(hf_config_from_lm(config, family)) == config


def test_head_dim_is_written_where_the_family_has_the_field():
    for family, f in FAMILIES.items():
        # LongRoPE's factors are sized for the tiny model's heads: give a 12-wide head plain RoPE
        rope = {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4}} if family == "phi3" else {}
        config = lm_config_from_hf(tiny_hf_config(family, head_dim=12, **rope).to_dict())
        if f.head_dim_field:
            hf = transformers.AutoModelForCausalLM.from_config(
                transformers.AutoConfig.for_model(**hf_config_from_lm(config, family)))
            assert hf.model.layers[0].self_attn.q_proj.out_features == config.num_heads * 12
        else:
            assert "needs head_dim == dim // num_heads" in " ".join(family_problems(config, family))


def test_entries_are_read_only_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        FAMILIES["olmoe"].qk_norm = "head"
    with pytest.raises(TypeError):
        FAMILIES["olmoe"].tiny["num_experts"] = 2
    with pytest.raises(ValueError, match=r"TextFamily.qk_norm='rms' must be one of"):
        TextFamily("x", "XForCausalLM", "XConfig", qk_norm="rms")
    with pytest.raises(ValueError, match=r"TextFamily.expert_dim_key=None must be set when moe=True"):
        TextFamily("x", "XForCausalLM", "XConfig", moe=True, num_experts_keys=("num_experts",))
    with pytest.raises(ValueError, match=r"TextFamily.shared_expert=True needs moe=True"):
        TextFamily("x", "XForCausalLM", "XConfig", shared_expert=True)
    with pytest.raises(TypeError):
        FAMILIES["phi"].weight_names["norm"] = "ln_f"
    with pytest.raises(ValueError, match=r"TextFamily.qk_norm_key='qk_layernorm' needs a qk_norm kind"):
        TextFamily("x", "XForCausalLM", "XConfig", qk_norm_key="qk_layernorm")
    with pytest.raises(ValueError, match=r"TextFamily.parallel_block='sometimes' must be one of"):
        TextFamily("x", "XForCausalLM", "XConfig", parallel_block="sometimes")
