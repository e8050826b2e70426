"""Parity of moezoo.load on transformers checkpoints of every supported family."""

import json

import pytest
import torch
from safetensors.torch import save_file

import moezoo
from moezoo.convert.testing import TINY_FAMILIES, TINY_VOCAB, tiny_hf_checkpoint

FAMILIES = list(TINY_FAMILIES)
MOE_FAMILIES = ["mixtral", "olmoe", "qwen2_moe", "qwen3_moe"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """family -> (dir, transformers model); built once for the module."""
    out = {}
    for family in FAMILIES:
        path = tmp_path_factory.mktemp(family)
        out[family] = (path, tiny_hf_checkpoint(family, path))
    return out


def _ids(batch=2, length=11, seed=0):
    return torch.randint(4, TINY_VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_and_loss_match_transformers(checkpoints, family):
    path, hf = checkpoints[family]
    model = moezoo.load(path)
    assert not model.training and model.config.family == family
    ids = _ids()
    labels = ids.clone()
    labels[0, :3] = -100
    with torch.no_grad():
        ref, out = hf(ids, labels=labels), model(input_ids=ids, labels=labels)
    assert out.logits.shape == (2, 11, TINY_VOCAB)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_aux_loss_and_training_loss_match_transformers(checkpoints, family):
    path, hf = checkpoints[family]
    model = moezoo.load(path)
    ids = _ids(seed=1)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # padding is excluded from the balancing loss on both sides
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, output_router_logits=True)
        # transformers' forward uses arange positions even with a mask: pass them explicitly.
        out = model(input_ids=ids, attention_mask=mask, position_ids=torch.arange(11).expand(2, 11))
    torch.testing.assert_close(out.aux_loss, ref.aux_loss, atol=1e-6, rtol=0)
    hf.train()
    model.train()
    try:
        with torch.no_grad():
            ref = hf(ids, labels=ids, output_router_logits=True)
            out = model(input_ids=ids, labels=ids)
    finally:
        hf.eval()
    # In training both add router_aux_loss_coef * aux_loss to the cross-entropy.
    assert model.config.moe.aux_loss_coef == hf.config.router_aux_loss_coef
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)


def test_family_details_are_read(checkpoints):
    cfg = moezoo.load(checkpoints["qwen2_moe"][0]).config
    assert cfg.sparse_layers() == [1] and cfg.qkv_bias  # decoder_sparse_step=2, mlp_only_layers=[2]
    assert cfg.moe.num_shared_experts == 1 and cfg.moe.shared_expert_gate and cfg.moe.shared_expert_dim == 40
    cfg = moezoo.load(checkpoints["qwen3_moe"][0]).config
    assert cfg.qk_norm == "head" and cfg.head_dim == 12 and cfg.sparse_layers() == [1]
    assert moezoo.load(checkpoints["olmoe"][0]).config.qk_norm == "full"
    assert moezoo.load(checkpoints["llama"][0]).config.rope_scaling["rope_type"] == "llama3"
    assert moezoo.load(checkpoints["qwen2"][0]).config.tie_embeddings


def test_tokenizer_comes_with_the_model(checkpoints):
    model = moezoo.load(checkpoints["olmoe"][0])
    assert model.tokenizer("w1 w2 </s>")["input_ids"] == [5, 6, 2]


@pytest.mark.parametrize("family", ["mixtral", "qwen2_moe"])
def test_sharded_checkpoint(tmp_path, family):
    hf = tiny_hf_checkpoint(family, tmp_path, max_shard_size="40KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) > 1
    ids = _ids(seed=2)
    with torch.no_grad():
        torch.testing.assert_close(moezoo.load(tmp_path)(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", MOE_FAMILIES)
def test_fused_expert_layout(checkpoints, tmp_path, family):
    """transformers 5's in-memory 3-D expert tensors, as some converters write them."""
    path, hf = checkpoints[family]
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if hf.config.tie_word_embeddings:
        state.pop("lm_head.weight")
    assert any(k.endswith("experts.gate_up_proj") for k in state)
    save_file(state, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((path / "config.json").read_text())
    ids = _ids(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(moezoo.load(tmp_path)(ids).logits, hf(ids).logits, atol=1e-4, rtol=0)


def test_bf16_load(checkpoints):
    model = moezoo.load(checkpoints["qwen3_moe"][0], dtype=torch.bfloat16)
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    assert model(input_ids=_ids()).logits.dtype == torch.bfloat16


def _copy_checkpoint(src, dst, edit_config=None, edit_state=None):
    from safetensors.torch import load_file

    cfg = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(cfg)
    (dst / "config.json").write_text(json.dumps(cfg))
    state = load_file(str(src / "model.safetensors"))
    if edit_state:
        edit_state(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_unsupported_architecture_names_the_supported_ones(checkpoints, tmp_path):
    def to_gpt2(cfg):
        cfg.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])

    with pytest.raises(ValueError, match=r"unsupported model_type 'gpt2'.*MixtralForCausalLM.*Qwen3MoeForCausalLM"):
        moezoo.load(_copy_checkpoint(checkpoints["llama"][0], tmp_path, to_gpt2))


def test_missing_and_unexpected_keys_are_listed(checkpoints, tmp_path):
    def edit(state):
        state.pop("model.layers.1.self_attn.q_proj.weight")
        state["model.layers.0.extra.weight"] = torch.zeros(2)

    with pytest.raises(ValueError, match=r"missing keys \(1\): layers\.1\.self_attn\.q_proj\.weight.*"
                                         r"unexpected keys \(1\): layers\.0\.extra\.weight"):
        moezoo.load(_copy_checkpoint(checkpoints["llama"][0], tmp_path, edit_state=edit))


def test_shape_mismatch_names_the_tensor(checkpoints, tmp_path):
    def edit(state):
        state["model.norm.weight"] = torch.ones(31)

    with pytest.raises(ValueError, match=r"shape mismatch for tensor 'norm\.weight': checkpoint has \(31,\)"):
        moezoo.load(_copy_checkpoint(checkpoints["llama"][0], tmp_path, edit_state=edit))


def test_missing_expert_is_reported(checkpoints, tmp_path):
    def edit(state):
        state.pop("model.layers.0.block_sparse_moe.experts.3.w2.weight")

    with pytest.raises(ValueError, match=r"missing \['layers\.0\.mlp\.experts\.3\.down'\]"):
        moezoo.load(_copy_checkpoint(checkpoints["mixtral"][0], tmp_path, edit_state=edit))


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither moezoo_config.json"):
        moezoo.load(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                                                      "vocab_size": 8, "hidden_size": 8, "intermediate_size": 8,
                                                      "num_hidden_layers": 1, "num_attention_heads": 2}))
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="safetensors checkpoints only"):
        moezoo.load(tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_imported_model_round_trips_through_moezoo_format(checkpoints, tmp_path, family):
    model = moezoo.load(checkpoints[family][0])
    again = moezoo.load(model.save_pretrained(tmp_path))
    assert again.config == model.config
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    ids = _ids(seed=4)
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)
