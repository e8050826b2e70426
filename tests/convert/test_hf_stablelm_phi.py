"""StableLM, Phi-2 and Phi-3 / Phi-3.5 beyond their tiny entries: each variant the families' configs
switch (parallel residual, per-head q/k LayerNorm, partial rotary, LongRoPE, a sliding window, also
Mixtral's, the older config.json spellings) loads exactly, generates the same ids and exports back;
unsupported fields fail naming the field; the dense models upcycle to MoE exactly at init.

The per-family parity of the tiny entries themselves runs in test_hf_import / test_hf_export /
tests/models/lm/test_generation.py (parametrised over every family).
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

import moezoo
from moezoo.convert.hf_config import family_problems, lm_config_from_hf
from moezoo.convert.testing import TINY_VOCAB, tiny_hf_checkpoint, tiny_hf_model, tiny_tokenizer
from moezoo.models.lm import MoEForCausalLM

_LONGROPE_2 = {"rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0, 1.4], "long_factor": [2.0, 6.0]}
# name -> (family, transformers config overrides)
VARIANTS = {
    # use_parallel_residual: one LayerNorm feeds attention and MLP; no q/k norm, no qkv bias, default 0.25 rotary
    "stablelm-parallel": ("stablelm", {"use_parallel_residual": True, "qk_layernorm": False, "use_qkv_bias": False,
                                       "partial_rotary_factor": 0.25}),
    # as MoE-LLaVA's StableLM-2-1.6B: qkv bias, sequential block, 0.25 rotary
    "stablelm-2": ("stablelm", {"qk_layernorm": False, "partial_rotary_factor": 0.25}),
    # Phi-2's fraction 0.4 on 10-wide heads (4 channels rotated), no q/k norm, as released
    "phi-2": ("phi", {"hidden_size": 40, "qk_layernorm": False, "partial_rotary_factor": 0.4}),
    "phi-gelu": ("phi", {"hidden_act": "gelu"}),
    # LongRoPE over half of each head, no window
    "phi3-partial": ("phi3", {"partial_rotary_factor": 0.5, "rope_parameters": _LONGROPE_2, "sliding_window": None}),
    # Phi-3-mini-4k's shape: plain RoPE and a sliding window
    "phi3-4k": ("phi3", {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "sliding_window": 5}),
    # the sliding window serves Mixtral (Mistral's) too, which moezoo refused before
    "mixtral-window": ("mixtral", {"sliding_window": 5}),
}


def _ids(batch=2, length=11, seed=0):
    return torch.randint(4, TINY_VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def _save(hf, path):
    hf.save_pretrained(str(path))
    tiny_tokenizer().save_pretrained(str(path))
    return path


def _checkpoint(family, path):
    tiny_hf_checkpoint(family, path)
    return path


def _hf_load(path):
    model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


def _assert_parity(hf, model, length=11):
    ids = _ids(length=length)
    labels = ids.clone()
    labels[0, :3] = -100
    with torch.no_grad():
        ref, out = hf(ids, labels=labels), model(input_ids=ids, labels=labels)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    prompt = ids[:1, :6]
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    ours = model.generate(prompt, max_new_tokens=16, eos_token_id=[])
    assert ours.shape == (1, 6 + 16) and torch.equal(ours, theirs)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_variant_loads_generates_and_exports_exactly(tmp_path, name):
    family, overrides = VARIANTS[name]
    hf = tiny_hf_model(family, seed=3, **overrides)
    model = moezoo.load(_save(hf, tmp_path / "hf"))
    assert model.config.family == family
    _assert_parity(hf, model)
    exported = _hf_load(model.save_pretrained(tmp_path / "out", format="hf"))
    ref_state, new_state = hf.state_dict(), exported.state_dict()
    assert ref_state.keys() == new_state.keys()
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    ids = _ids(seed=1, length=20)
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, hf(ids).logits)


def test_family_details_are_read(tmp_path):
    cfg = moezoo.load(_checkpoint("stablelm", tmp_path / "s")).config
    assert (cfg.norm, cfg.qk_norm, cfg.qkv_bias, cfg.rotary_fraction, cfg.parallel_block) == (
        "layer", "each_head", True, 0.5, False)
    cfg = moezoo.load(_checkpoint("phi", tmp_path / "p")).config
    assert (cfg.norm, cfg.qk_norm, cfg.attention_bias, cfg.parallel_block, cfg.mlp_activation, cfg.mlp_bias,
            cfg.lm_head_bias) == ("layer", "head", True, True, "gelu_tanh", True, True)
    cfg = moezoo.load(_checkpoint("phi3", tmp_path / "p3")).config
    assert cfg.norm == "rms" and cfg.sliding_window == 8
    assert cfg.rope_scaling["rope_type"] == "longrope" and cfg.rope_scaling["original_max_position_embeddings"] == 16
    assert cfg.rope_scaling["factor"] == 256 / 16  # max_position_embeddings / original, as transformers derives it


@pytest.fixture(scope="module")
def phi3(tmp_path_factory):
    path = tmp_path_factory.mktemp("phi3")
    return tiny_hf_checkpoint("phi3", path), moezoo.load(path)


def test_longrope_switches_to_the_long_factors_past_the_original_length(phi3):
    hf, model = phi3
    short_only = MoEForCausalLM(model.config.replace(rope_scaling={
        **model.config.rope_scaling, "long_factor": model.config.rope_scaling["short_factor"]})).eval()
    short_only.load_state_dict(model.state_dict())
    with torch.no_grad():
        for length in (11, 16, 17, 24):  # original_max_position_embeddings = 16
            ids = _ids(length=length)
            ref, out = hf(ids).logits, model(input_ids=ids).logits
            torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
            differs = (short_only(input_ids=ids).logits - ref).abs().max() > 1e-3
            assert differs == (length > 16), length  # so the parity above tests the switch


def test_sliding_window_is_applied(phi3):
    hf, model = phi3
    unwindowed = MoEForCausalLM(model.config.replace(sliding_window=None)).eval()
    unwindowed.load_state_dict(model.state_dict())
    ids = _ids(length=11)  # longer than the window of 8
    with torch.no_grad():
        assert (unwindowed(input_ids=ids).logits - hf(ids).logits).abs().max() > 1e-3


def test_left_padded_generation_matches_transformers(phi3):
    hf, model = phi3
    ids = _ids(batch=2, length=7, seed=5)
    mask = torch.ones_like(ids)
    mask[1, :3], ids[1, :3] = 0, 0
    ref = hf.generate(ids, attention_mask=mask, max_new_tokens=14, do_sample=False, eos_token_id=None, pad_token_id=0)
    out = model.generate(ids, attention_mask=mask, max_new_tokens=14, eos_token_id=[], pad_token_id=0)
    assert torch.equal(out, ref)


def _rewrite_config(path, edit):
    cfg = json.loads((path / "config.json").read_text())
    edit(cfg)
    (path / "config.json").write_text(json.dumps(cfg))
    return path


def test_older_config_spellings(tmp_path):
    """Phi-3's hub uploads say `rope_scaling` ({"type": "longrope"}, in early ones "su") with a top-level
    `rope_theta`; Phi-2's a top-level `partial_rotary_factor`. Both read as the modern config.json does.
    ("su" is read as config-level data only: transformers 5.24's AutoConfig, which the tokenizer load
    goes through, refuses it, as its LongRoPE check runs before `original_max_position_embeddings` moves in.)"""
    def phi3_legacy(kind):
        def edit(cfg):
            rope = cfg.pop("rope_parameters")
            cfg["rope_theta"] = rope["rope_theta"]
            cfg["rope_scaling"] = {"type": kind, "short_factor": rope["short_factor"],
                                   "long_factor": rope["long_factor"]}
        return edit

    def phi2_legacy(cfg):
        rope = cfg.pop("rope_parameters")
        cfg.update(rope_theta=rope["rope_theta"], partial_rotary_factor=rope["partial_rotary_factor"])

    cases = (("phi3", phi3_legacy("longrope")), ("phi", phi2_legacy))
    for i, (family, edit) in enumerate(cases):
        path = tmp_path / f"{family}-{i}"
        tiny_hf_checkpoint(family, path, seed=4)
        hf = _hf_load(path)  # the modern config.json
        _rewrite_config(path, edit)
        model = moezoo.load(path)
        ids = _ids(length=20)  # past Phi-3's original length: the long factors
        with torch.no_grad():
            torch.testing.assert_close(model(input_ids=ids).logits, hf(ids).logits, atol=1e-4, rtol=0)
    assert model.config.rotary_fraction == 0.5
    longrope = json.loads((tmp_path / "phi3-0" / "config.json").read_text())
    su = {**longrope, "rope_scaling": {**longrope["rope_scaling"], "type": "su"}}
    assert lm_config_from_hf(su) == lm_config_from_hf(longrope) == moezoo.load(tmp_path / "phi3-0").config


def test_unsupported_fields_are_named(tmp_path):
    base = tiny_hf_model("phi").config.to_dict()
    with pytest.raises(ValueError, match=r"hidden_act 'relu' is not supported for phi"):
        lm_config_from_hf({**base, "hidden_act": "relu"})
    with pytest.raises(ValueError, match=r"lm_head_bias=True is not supported with tie_embeddings=True"):
        lm_config_from_hf({**base, "tie_word_embeddings": True})
    llama = tiny_hf_model("llama").config.to_dict()
    llama["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}
    with pytest.raises(ValueError, match=r"partial_rotary_factor=0.5 is not supported for llama"):
        lm_config_from_hf(llama)
    phi3 = tiny_hf_model("phi3").config.to_dict()
    phi3["rope_parameters"] = {**phi3["rope_parameters"], "short_factor": [1.0, 1.0]}
    with pytest.raises(ValueError, match=r"rope_scaling=.* needs short_factor and long_factor of rotary_dim // 2 = 4"):
        lm_config_from_hf(phi3)
    qwen2 = tiny_hf_model("qwen2").config.to_dict()
    with pytest.raises(ValueError, match=r"sliding_window=4, use_sliding_window=True\) is not supported for qwen2"):
        lm_config_from_hf({**qwen2, "use_sliding_window": True, "sliding_window": 4})


def test_export_names_what_a_family_cannot_hold(tmp_path):
    phi = moezoo.load(_checkpoint("phi", tmp_path / "phi"))
    problems = " ".join(family_problems(phi.config, "llama"))
    for field in ("norm='layer'", "rotary_fraction=0.5", "parallel_block=True", "mlp_activation='gelu_tanh'",
                  "lm_head_bias=True", "qk_norm='head'"):
        assert field in problems, field
    stablelm = moezoo.load(_checkpoint("stablelm", tmp_path / "stablelm")).config
    assert "qk_norm='each_head' but phi uses 'head' or 'none'" in family_problems(stablelm, "phi")
    with pytest.raises(ValueError, match=r"cannot export as phi3: .*norm='layer'"):
        phi.save_pretrained(tmp_path / "never", format="hf", family="phi3")
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("family", ["stablelm", "phi", "phi3"])
def test_upcycled_model_starts_as_the_dense_one(tmp_path, family):
    path = tmp_path / family
    tiny_hf_checkpoint(family, path)
    dense = moezoo.load(path)
    moe = moezoo.upcycle(path, num_experts=4, top_k=2).eval()
    assert moe.config.sparse_layers() == [0, 1]
    experts = moe.layers[0].mlp.experts
    # Phi-2's fc1 / fc2 become GELU experts with biases (MoE-LLaVA-Phi2's), the SwiGLU FFNs SwiGLU experts.
    assert (moe.config.moe.activation, moe.config.moe.expert_bias) == (dense.config.mlp_activation,
                                                                        dense.config.mlp_bias)
    assert torch.equal(experts.in_proj[0], experts.in_proj[3])
    ids = _ids(length=20)
    with torch.no_grad():
        out = moe(input_ids=ids)
        torch.testing.assert_close(out.logits, dense(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    assert (out.router_stats[0].tokens_per_expert > 0).sum() > 1
    again = moezoo.load(moe.save_pretrained(tmp_path / "moe"))
    assert all(torch.equal(again.state_dict()[k], v) for k, v in moe.state_dict().items())
    if family != "phi3":  # no transformers MoE family has LayerNorm, partial rotary or Phi's block
        with pytest.raises(ValueError, match="fits no transformers family"):
            moe.save_pretrained(tmp_path / "never", format="hf")
        return
    # An upcycled Phi-3 is a Mixtral (SwiGLU experts, renormalised top-2; LongRoPE and the window included).
    exported = _hf_load(moe.save_pretrained(tmp_path / "hf", format="hf"))
    assert exported.config.model_type == "mixtral"
    prompt = ids[:1, :6]
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, out.logits, atol=1e-4, rtol=0)
    theirs = exported.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=16, do_sample=False,
                               eos_token_id=None, pad_token_id=0)
    assert torch.equal(moe.generate(prompt, max_new_tokens=16, eos_token_id=[]), theirs)
