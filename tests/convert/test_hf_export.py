"""moezoo -> transformers: exported dirs load in transformers as the same model."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import moezoo
from moezoo.convert.hf_config import family_problems, infer_family
from moezoo.convert.testing import TINY_FAMILIES, TINY_VOCAB, tiny_hf_checkpoint, tiny_tokenizer
from moezoo.models.lm import LMConfig, MoEForCausalLM
from moezoo.models.lm.config import DENSE_FAMILIES
from moezoo.moe import MoEConfig


def _hf_load(path):
    model, info = AutoModelForCausalLM.from_pretrained(str(path), output_loading_info=True)
    # transformers fills missing weights with random numbers: insist that nothing was missed.
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    return model.eval()


def _ids(seed=0):
    return torch.randint(4, TINY_VOCAB, (2, 9), generator=torch.Generator().manual_seed(seed))


CASES = [(f, "per_expert") for f in TINY_FAMILIES] + [(f, "fused") for f in TINY_FAMILIES if f not in DENSE_FAMILIES]


@pytest.mark.parametrize("family, layout", CASES)
def test_hf_round_trip(tmp_path, family, layout):
    original = tiny_hf_checkpoint(family, tmp_path / "hf")
    model = moezoo.load(tmp_path / "hf")
    out_dir = model.save_pretrained(tmp_path / "out", format="hf", expert_layout=layout)
    assert json.loads((out_dir / "config.json").read_text())["model_type"] == family
    exported = _hf_load(out_dir)
    ref_state, new_state = original.state_dict(), exported.state_dict()
    assert ref_state.keys() == new_state.keys()
    assert all(torch.equal(ref_state[k], new_state[k]) for k in ref_state)
    ids = _ids()
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, original(ids).logits)
        torch.testing.assert_close(exported(ids).logits, model(input_ids=ids).logits, atol=1e-4, rtol=0)
    # The tokenizer travels too (transformers picks the family's tokenizer class on both dirs).
    text = "w5 w6 </s>"
    assert AutoTokenizer.from_pretrained(str(out_dir))(text) == AutoTokenizer.from_pretrained(str(tmp_path / "hf"))(text)


def test_native_model_exports_as_inferred_family(tmp_path):
    cfg = LMConfig(
        vocab_size=TINY_VOCAB, dim=32, num_layers=3, num_heads=4, num_kv_heads=2, head_dim=16, ffn_dim=40,
        qk_norm="head", moe=MoEConfig(dim=32, expert_dim=16, num_experts=4, top_k=2), moe_layers=[1],
        rope_scaling={"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64})
    torch.manual_seed(0)
    model = MoEForCausalLM(cfg, tokenizer=tiny_tokenizer()).eval()
    assert infer_family(cfg) == "qwen3_moe"
    exported = _hf_load(model.save_pretrained(tmp_path, format="hf", max_shard_size=20_000))
    assert (tmp_path / "model.safetensors.index.json").exists()
    ids = _ids(1)
    with torch.no_grad():
        torch.testing.assert_close(exported(ids).logits, model(input_ids=ids).logits, atol=1e-4, rtol=0)
    back = moezoo.load(tmp_path)  # and the sharded export reads back into moezoo
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


def test_export_errors_say_why(tmp_path):
    cfg = LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32,
                   moe=MoEConfig(dim=16, expert_dim=8, num_experts=4, top_k=2, router="cosine"))
    model = MoEForCausalLM(cfg)
    with pytest.raises(ValueError, match=r"fits no transformers family.*router='cosine'"):
        model.save_pretrained(tmp_path / "never-written", format="hf")
    assert "mixtral always renormalises" in " ".join(family_problems(
        cfg.replace(moe=cfg.moe.replace(router="softmax", norm_topk_prob=False)), "mixtral"))
    with pytest.raises(ValueError, match="cannot export as llama"):
        model.save_pretrained(tmp_path / "never-written", format="hf", family="llama")
    with pytest.raises(ValueError, match="unknown format"):
        model.save_pretrained(tmp_path / "never-written", format="gguf")
    assert not (tmp_path / "never-written").exists()
