"""Vision towers with MoE MLPs (LibMoE's clip_smoe / siglip_smoe, CuMo): upcycled from pretrained
weights they start as the dense tower; built from a config they hold random experts a checkpoint fills."""

from __future__ import annotations

import pytest
import torch

import moezoo
from moezoo.models.encoders import build_encoder
from moezoo.moe.mlp_experts import MoEMLP

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, image_size=32,
             patch_size=8)
MOE = {"num_experts": 4, "top_k": 2}


@pytest.mark.parametrize("model_type", ["clip_vision_model", "siglip_vision_model"])
def test_hf_tower_upcycled_from_pretrained_weights_starts_as_the_dense_one(tmp_path, model_type):
    import transformers

    tf_config = transformers.AutoConfig.for_model(model_type, **TOWER)
    torch.manual_seed(0)
    transformers.AutoModel.from_config(tf_config).save_pretrained(tmp_path)
    vision_config = {"model_type": model_type, **TOWER}
    dense = build_encoder(dict(kind="hf_vision", vision_config=vision_config, pretrained=str(tmp_path))).eval()
    sparse = build_encoder(dict(kind="hf_vision", vision_config=vision_config, pretrained=str(tmp_path),
                                moe={**MOE, "layers": [1]})).eval()
    assert [type(layer.mlp) for layer in sparse.vision_tower.encoder.layers[:2]] == [type(dense.vision_tower.encoder
                                                                                            .layers[0].mlp), MoEMLP]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), dense(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("vision", [
    dict(kind="timm", model_name="test_vit", image_size=32, feature_index=-1),
    dict(kind="open_clip", model_cfg=dict(embed_dim=16, vision_cfg=dict(image_size=32, patch_size=8, layers=2,
                                                                          width=32, head_width=8))),
])
def test_moe_towers_of_timm_and_open_clip_train_and_round_trip(tmp_path, vision):
    model = moezoo.create_model("mm_tiny_clip", vision={**vision, "moe": MOE})
    sites = [m for m in model.vision.modules() if isinstance(m, MoEMLP)]
    assert sites and all(m.config.num_experts == 4 for m in sites)
    ids = torch.tensor([[1] + [4] * model.num_tokens["image"] + [9, 10]])
    pixels = torch.randn(1, 3, 32, 32)
    model.train()
    out = model(input_ids=ids, pixel_values=pixels, labels=ids)
    assert len(out.site_losses) == len(sites)
    out.loss.backward()
    assert all(m.fc1_weight.grad is not None for m in sites)
    model.eval()
    loaded = moezoo.load(model.save_pretrained(tmp_path))
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids, pixel_values=pixels).logits, model(input_ids=ids, pixel_values=pixels)
                           .logits)


def test_moe_tower_errors(tmp_path):
    sparse = moezoo.upcycle(moezoo.create_model("mm_tiny_clip"), num_experts=4, top_k=2, targets=("vision",))
    with pytest.raises(ValueError, match="the vision tower's MLPs are experts"):
        sparse.save_pretrained(tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()  # nothing written
    with pytest.raises(ValueError, match=r"layers=\[5\] has blocks \[5\] outside the tower's 2 MLP blocks"):
        build_encoder(dict(kind="hf_vision", vision_config={"model_type": "clip_vision_model", **TOWER},
                           moe={**MOE, "layers": [5]}))
    with pytest.raises(ValueError, match="EncoderMoEConfig.top_k=5 must be in"):
        build_encoder(dict(kind="timm", model_name="test_vit", moe={"num_experts": 4, "top_k": 5}))
    with pytest.raises(ValueError, match="CNNEncoderConfig got unknown keys \\['moe'\\]"):
        build_encoder(dict(kind="cnn", moe=MOE))
