"""Upcycling a multimodal model (MoE-LLaVA / LibMoE stage 3): logits unchanged at init."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import moezoo


@pytest.fixture(scope="module")
def dense():
    """A dense-LLM tiny CLIP model and a prompt with an image."""
    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_clip", llm={"moe": None}).eval()
    batch = model.processor(text=model.processor.apply_chat_template([{"role": "user", "content": "<image>\nHi?"}]),
                            images=[Image.new("RGB", (40, 30), "orange")])
    return model, batch


@pytest.mark.parametrize("targets", [("llm",), ("connector",), ("vision",), ("llm", "connector", "vision")])
@pytest.mark.parametrize("router", ["softmax", "cosine"])
def test_upcycled_model_starts_as_the_dense_one(dense, targets, router):
    model, batch = dense
    moe = moezoo.upcycle(model, num_experts=4, top_k=2, router=router, targets=targets).eval()
    assert ("llm" in targets) == bool(moe.config.llm.sparse_layers())
    assert moe.config.image_connector.kind == ("moe" if "connector" in targets else "mlp2x_gelu")
    assert (moe.config.vision.moe is not None) == ("vision" in targets)
    with torch.no_grad():
        torch.testing.assert_close(moe(**batch).logits, model(**batch).logits, atol=1e-5, rtol=0)
    assert model.config.llm.moe is None and model.connectors["image"].config.kind == "mlp2x_gelu"  # input unchanged


def test_upcycled_model_trains_its_experts_and_round_trips(dense, tmp_path):
    model, batch = dense
    moe = moezoo.upcycle(model, num_experts=4, top_k=2, targets=("llm", "connector", "vision"), noise_std=0.05,
                         seed=1)
    moe.train()
    out = moe(**batch, labels=batch["input_ids"])
    # The tiny CLIP's features come from layer -2 of 2: one tower MLP runs, and becomes experts.
    assert set(out.site_losses) == {"connectors.image.mlp", "vision.vision_tower.encoder.layers.0.mlp"}
    out.loss.backward()
    assert all(p.grad.abs().sum() > 0 for p in moe.connectors["image"].mlp.router.parameters())
    assert moe.llm.layers[0].mlp.experts.gate_up_proj.grad.abs().sum() > 0
    moe.eval()
    loaded = moezoo.load(moe.save_pretrained(tmp_path))
    assert loaded.config == moe.config
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, moe(**batch).logits)
        assert not torch.allclose(moe(**batch).logits, model(**batch).logits, atol=1e-5)  # the noise broke symmetry


def test_upcycling_errors(dense):
    model, _ = dense
    with pytest.raises(ValueError, match="unknown upcycling targets"):
        moezoo.upcycle(model, targets=("vision_tower",))
    once = moezoo.upcycle(model, num_experts=4, top_k=2, targets=("connector",))
    with pytest.raises(ValueError, match="no mlp2x_gelu connector to upcycle"):
        moezoo.upcycle(once, num_experts=4, top_k=2, targets=("connector",))
    twice = moezoo.upcycle(model, num_experts=4, top_k=2, targets=("vision",))
    with pytest.raises(ValueError, match="its MLPs are experts already"):
        moezoo.upcycle(twice, targets=("vision",))
    with pytest.raises(ValueError, match="a cnn tower has no MLPs"):
        moezoo.upcycle(moezoo.create_model("mm_tiny_cnn"), targets=("vision",))
