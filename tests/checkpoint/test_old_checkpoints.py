"""Checkpoints saved by earlier moezoo releases keep loading, with the same outputs."""

from pathlib import Path

import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file

import moezoo

FIXTURE = Path(__file__).parents[1] / "fixtures" / "checkpoint_fa70a91"


def _circle() -> Image.Image:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse([10, 10, 40, 40], fill=(255, 0, 0))
    return image


def test_a_checkpoint_from_before_the_architecture_specs_loads_with_identical_logits():
    expected = load_file(str(FIXTURE / "expected_outputs.safetensors"))
    model = moezoo.load(FIXTURE)
    assert model.spec.name == "MultimodalMoEForCausalLM" and not model.training
    prompt = model.processor.apply_chat_template([{"role": "user", "content": "<image>\nWhat colour is the circle?"}])
    inputs = model.processor(text=prompt, images=[_circle()])
    for key in ("input_ids", "attention_mask", "pixel_values"):  # the saved processor preprocesses as it did
        assert torch.equal(inputs[key], expected[key]), key
    with torch.no_grad():
        logits = model(**{k: expected[k] for k in ("input_ids", "attention_mask", "pixel_values")}).logits
    assert torch.equal(logits, expected["logits"])
