"""moezoo's checkpoint format: exact round trips, dtypes, and clear errors on bad files.

The multimodal round trips (encoders, connectors, processor) are in
tests/models/multimodal/test_model.py; these use the text LM, the smallest model.
"""

import json

import pytest
import torch

import moezoo
from moezoo.convert.testing import tiny_tokenizer
from moezoo.models.lm import LMConfig, MoEForCausalLM
from moezoo.moe import MoEConfig


def _config(**overrides):
    base = dict(vocab_size=96, dim=32, num_layers=3, num_heads=4, num_kv_heads=2, ffn_dim=48,
                moe=MoEConfig(dim=32, expert_dim=16, num_experts=4, top_k=2, aux_loss_coef=0.02, z_loss_coef=0.001),
                moe_layers=[1, 2], qk_norm="head", rope_scaling={"rope_type": "linear", "factor": 2.0})
    return LMConfig(**{**base, **overrides})


def test_native_round_trip_is_exact(tmp_path):
    model = MoEForCausalLM(_config(tie_embeddings=True, eos_token_id=[2, 3]), tokenizer=tiny_tokenizer()).eval()
    path = model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith("tokenizer")) == [
        "model.safetensors", "moezoo_config.json"]
    loaded = moezoo.load(path)
    assert loaded.config == model.config and not loaded.training
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    ids = torch.randint(0, 96, (2, 7))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert loaded.tokenizer("w3 w4")["input_ids"] == model.tokenizer("w3 w4")["input_ids"]
    # Saving again over the same dir is fine (files are replaced atomically).
    loaded.save_pretrained(path)
    assert moezoo.load(path, dtype="bfloat16").layers[1].mlp.experts.down_proj.dtype == torch.bfloat16


def test_casting_a_model_to_bf16_keeps_rope_frequencies_in_float32(tmp_path):
    """``model.to(bf16)`` equals loading in bf16: the RoPE frequencies are not rounded to bf16
    (as a buffer they were, which put cos/sin off by up to 0.35 at position 2000)."""
    model = MoEForCausalLM(_config(rope_scaling=None, max_position_embeddings=4096)).eval()
    loaded = moezoo.load(model.save_pretrained(tmp_path), dtype="bfloat16")
    model.to(torch.bfloat16)
    position_ids = torch.arange(2000, 2008)[None]
    ids = torch.randint(0, 96, (1, 8))
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, position_ids=position_ids).logits,
                           loaded(input_ids=ids, position_ids=position_ids).logits)


def test_native_checkpoint_errors(tmp_path):
    path = MoEForCausalLM(_config()).save_pretrained(tmp_path)
    header = json.loads((path / "moezoo_config.json").read_text())
    (path / "moezoo_config.json").write_text(json.dumps({**header, "version": 99}))
    with pytest.raises(ValueError, match="newer moezoo"):
        moezoo.load(path)
    header["config"]["moe"]["num_experts"] = 8
    (path / "moezoo_config.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match=r"shape mismatch for tensor 'layers\.1\.mlp\.router\.weight'"):
        moezoo.load(path)
    with pytest.raises(ValueError, match="unknown dtype"):
        moezoo.load(path, dtype="float7")


def test_corrupt_files_are_named(tmp_path):
    path = MoEForCausalLM(_config()).save_pretrained(tmp_path / "a")
    (path / "moezoo_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"moezoo_config.json is not valid JSON.*corrupt"):
        moezoo.load(path)
    path = MoEForCausalLM(_config()).save_pretrained(tmp_path / "b")
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(ValueError, match=r"model.safetensors is not a readable safetensors file"):
        moezoo.load(path)
    path = MoEForCausalLM(_config()).save_pretrained(tmp_path / "c")
    header = json.loads((path / "moezoo_config.json").read_text())
    (path / "moezoo_config.json").write_text(json.dumps({**header, "architecture": "MoEForCausalLN"}))
    with pytest.raises(ValueError, match=r"unknown architecture 'MoEForCausalLN'; moezoo builds \['MoEForCausalLM'"):
        moezoo.load(path)


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path):
    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    model = MoEForCausalLM(_config()).eval()
    path = model.save_pretrained(tmp_path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = MoEForCausalLM(_config(), tokenizer=BrokenTokenizer())
    with pytest.raises(OSError, match="disk full"):
        other.save_pretrained(path)
    # The weights file was replaced whole (never half-written), but the header still describes a
    # complete checkpoint only once everything else is in place: here the old header is intact
    # and no temporary file is left behind.
    assert sorted(p.name for p in path.iterdir()) == sorted(before)
    assert (path / "moezoo_config.json").read_bytes() == before["moezoo_config.json"]
