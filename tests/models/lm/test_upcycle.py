"""Sparse upcycling: the upcycled model starts as the dense model."""

import pytest
import torch
from transformers import AutoModelForCausalLM

import moezoo
from moezoo.convert.testing import TINY_VOCAB, tiny_hf_checkpoint


@pytest.fixture(scope="module")
def dense_dirs(tmp_path_factory):
    out = {}
    for family in ("llama", "qwen2"):
        out[family] = tmp_path_factory.mktemp(family)
        tiny_hf_checkpoint(family, out[family])
    return out


@pytest.fixture(scope="module")
def llama_dir(dense_dirs):
    return dense_dirs["llama"]


def _ids():
    return torch.randint(4, TINY_VOCAB, (2, 10), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("family, router", [("llama", "softmax"), ("llama", "sigmoid"), ("llama", "cosine"),
                                            ("qwen2", "softmax")])
def test_upcycled_logits_equal_dense(dense_dirs, family, router):
    dense = moezoo.load(dense_dirs[family])
    moe = moezoo.upcycle(dense_dirs[family], num_experts=4, top_k=2, router=router).eval()
    assert moe.config.sparse_layers() == [0, 1] and moe.tokenizer is not None
    experts = moe.layers[0].mlp.experts
    assert torch.equal(experts.gate_up_proj[0], experts.gate_up_proj[3])
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(moe(input_ids=ids).logits, dense(input_ids=ids).logits, atol=1e-5, rtol=1e-5)
    # Routing is genuinely sparse and uses more than one expert.
    assert (moe(input_ids=ids).router_stats[0].tokens_per_expert > 0).sum() > 1


def test_noise_and_layer_choice(llama_dir):
    dense = moezoo.load(llama_dir)
    moe = moezoo.upcycle(dense, num_experts=4, top_k=2, noise_std=0.1, layers=[1], seed=3).eval()
    assert [type(layer.mlp).__name__ for layer in moe.layers] == ["MLP", "MoELayer"]
    w = moe.layers[1].mlp.experts.gate_up_proj
    assert not torch.equal(w[0], w[1])
    ref = torch.cat([dense.layers[1].mlp.gate_proj.weight, dense.layers[1].mlp.up_proj.weight])
    rel = ((w - ref).std() / ref.std()).item()
    assert 0.05 < rel < 0.2  # noise relative to the weight scale
    ids = _ids()
    with torch.no_grad():
        diff = (moe(input_ids=ids).logits - dense(input_ids=ids).logits).abs().max()
    assert diff > 1e-4
    assert dense.config.moe is None  # the input model is untouched
    again = moezoo.upcycle(dense, num_experts=4, top_k=2, noise_std=0.1, layers=[1], seed=3)
    assert torch.equal(again.layers[1].mlp.experts.gate_up_proj, w)  # seeded
    with pytest.raises(ValueError, match=r"layers \[1\] are already MoE layers"):
        moezoo.upcycle(moe, num_experts=4, top_k=2, layers=[1])


def test_upcycled_llama_exports_as_mixtral(llama_dir, tmp_path):
    moe = moezoo.upcycle(llama_dir, num_experts=4, top_k=2).eval()
    moe.save_pretrained(tmp_path, format="hf")
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
    assert type(hf).__name__ == "MixtralForCausalLM"
    ids = _ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, moe(input_ids=ids).logits, atol=1e-4, rtol=0)


def test_upcycled_qwen2_export_explains_why_no_family_fits(dense_dirs, tmp_path):
    moe = moezoo.upcycle(dense_dirs["qwen2"], num_experts=4, top_k=2)
    with pytest.raises(ValueError, match=r"fits no transformers family.*qwen2_moe needs exactly one sigmoid-gated"):
        moe.save_pretrained(tmp_path, format="hf")
    assert not (tmp_path / "config.json").exists()
