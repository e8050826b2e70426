"""The registry: every architecture builds, names and overrides behave as in timm."""

from __future__ import annotations

import pytest
import torch

import moezoo
from moezoo.models.multimodal import MultimodalConfig
from moezoo.registry import model_config

ALL = moezoo.list_models()
# Upstream sizes: LLaVA-1.5-7B 7.06 B; Qwen3-30B-A3B 30.5 B + SigLIP-so400m 0.43 B; OLMoE-1B-7B 6.9 B + CLIP-L 0.3 B.
REFERENCE_BILLIONS = {"llava_1_5_7b": 7.06, "moe_llava_siglip_qwen3_30b_a3b": 30.97, "moe_llava_clip_olmoe_1b_7b": 7.23,
                      "olmoe_1b_7b": 6.92, "mixtral_8x7b": 46.70, "qwen3_moe_30b_a3b": 30.53, "qwen2_moe_a2_7b": 14.32}


@pytest.mark.parametrize("name", ALL)
def test_every_architecture_builds_on_meta_and_its_config_round_trips(name):
    config = model_config(name)
    assert type(config).from_dict(config.to_dict()) == config
    model = moezoo.create_model(name, device="meta")
    assert model.config == config
    if name in REFERENCE_BILLIONS:
        billions = sum(p.numel() for p in model.parameters()) / 1e9
        assert billions == pytest.approx(REFERENCE_BILLIONS[name], abs=0.01)


def test_tiny_architectures_come_with_what_feeds_them():
    tiny = moezoo.list_models("*tiny*")
    assert len(tiny) >= 7 and tiny == sorted(tiny)
    kinds = set()
    for name in tiny:
        model = moezoo.create_model(name)
        assert len(model.tokenizer) == getattr(model.config, "llm", model.config).vocab_size
        if isinstance(model.config, MultimodalConfig):
            assert model.processor.num_tokens == model.num_tokens
            kinds |= {e.kind for e in (model.config.vision, model.config.audio) if e is not None}
            kinds |= {"video"} if model.config.video else set()
    assert kinds >= {"timm", "open_clip", "hf_vision", "cnn", "whisper", "video"}


def test_overrides_nested_and_by_kind():
    model = moezoo.create_model("mm_tiny_clip", llm={"num_layers": 1, "moe": {"num_experts": 8}},
                                image_connector={"kind": "moe", "num_experts": 2, "top_k": 1})
    assert model.config.llm.num_layers == 1 and model.config.llm.moe.num_experts == 8
    assert model.config.llm.moe.top_k == 2  # fields not overridden keep the architecture's value
    assert type(model.connectors["image"]).__name__ == "MoEConnector"
    with pytest.raises(ValueError, match=r"LMConfig has no field 'num_layer'\. Did you mean \['num_layers'"):
        moezoo.create_model("mm_tiny_clip", llm={"num_layer": 1})
    with pytest.raises(ValueError, match=r"MoEConfig.top_k=9 must be in \[1, num_experts=4\]"):
        moezoo.create_model("moe_lm_tiny", moe={"top_k": 9, "num_experts": 4})
    assert moezoo.create_model("moe_lm_tiny", dtype=torch.bfloat16).embed_tokens.weight.dtype == torch.bfloat16


def test_names_and_pretrained():
    assert moezoo.list_models("mm_tiny_c*") == ["mm_tiny_clip", "mm_tiny_cnn"]
    assert moezoo.list_models("mm_tiny_*", pretrained=True) == []  # the tiny test architectures have no weights
    with pytest.raises(ValueError, match=r"unknown architecture 'mm_tiny_clp'\. Did you mean \['mm_tiny_clip'"):
        moezoo.create_model("mm_tiny_clp")
    with pytest.raises(ValueError, match=r"no pretrained model named 'mm_tiny_clip.v1'.*create_model\('mm_tiny_clip'\)"):
        moezoo.create_model("mm_tiny_clip.v1")
    with pytest.raises(ValueError, match="cannot change a pretrained model's architecture"):
        moezoo.create_model("mm_tiny_clip", pretrained=True, llm={"num_layers": 1})
