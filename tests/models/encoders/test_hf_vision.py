"""The transformers CLIP / SigLIP encoder: exactly transformers' LLaVA image features, pretrained loading."""

import json

import pytest
import torch
from transformers import (AutoImageProcessor, CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPVisionConfig,
                          CLIPVisionModel, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration,
                          SiglipVisionConfig)

from moezoo.models.encoders.base import build_encoder
from moezoo.models.encoders.hf_vision import HFVisionEncoder, HFVisionEncoderConfig
from moezoo.processing.image import build_image_processor

TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2, image_size=32,
             patch_size=8)
VISION = {"clip": CLIPVisionConfig(**TOWER).to_dict(), "siglip": SiglipVisionConfig(**TOWER).to_dict()}
TEXT = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                   num_key_value_heads=2, vocab_size=64).to_dict()


def _llava(family, layer, strategy):
    torch.manual_seed(1)
    config = LlavaConfig(vision_config=VISION[family], text_config=TEXT, image_token_id=63,
                         vision_feature_layer=layer, vision_feature_select_strategy=strategy)
    return LlavaForConditionalGeneration(config).eval()


def _from_llava(llava, layer, strategy, family):
    """The encoder holding the LLaVA's tower weights, loaded by renaming its keys only."""
    enc = HFVisionEncoder(HFVisionEncoderConfig(VISION[family], feature_layer=layer, select_strategy=strategy)).eval()
    state = {k[len("model."):]: v for k, v in llava.state_dict().items() if k.startswith("model.vision_tower.")}
    assert set(state) == set(enc.state_dict())  # same names under vision_tower.*
    enc.load_state_dict(state)
    return enc


# Layer 0 is not here: transformers' get_image_features reads `output_hidden_states=0` as False and
# fails; test_layer_zero_is_the_embedding_output checks it against the tower's hidden states.
@pytest.mark.parametrize("family", ["clip", "siglip"])
@pytest.mark.parametrize("layer", [-2, -1, 2, -4, [-3, -1], [0, 3]], ids=str)
@pytest.mark.parametrize("strategy", ["default", "full"])
def test_features_equal_llava_get_image_features(pixels, family, layer, strategy):
    llava = _llava(family, layer, strategy)
    enc = _from_llava(llava, layer, strategy, family)
    tokens = 16 + (family == "clip") - (strategy == "default")
    assert (enc.num_tokens, enc.out_dim) == (tokens, 32 * (1 if isinstance(layer, int) else len(layer)))
    x = pixels(2, 32)
    with torch.no_grad():
        want = torch.stack(llava.model.get_image_features(x).pooler_output)  # projected, as LLaVA does
        features = enc(x)
        got = llava.model.multi_modal_projector(features)
    assert features.shape == (2, enc.num_tokens, enc.out_dim)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_layer_zero_is_the_embedding_output(pixels, family):
    enc = HFVisionEncoder(HFVisionEncoderConfig(VISION[family], feature_layer=0, select_strategy="full")).eval()
    x = pixels(2, 32)
    with torch.no_grad():
        want = enc.vision_tower(x, output_hidden_states=True).hidden_states[0]
        torch.testing.assert_close(enc(x), want, rtol=0, atol=0)


def test_backward_stops_at_the_deepest_selected_layer(pixels, without_grad):
    enc = HFVisionEncoder(HFVisionEncoderConfig(VISION["clip"], feature_layer=[-3, -2]))
    enc(pixels(2, 32)).square().mean().backward()
    missed = without_grad(enc)
    # hidden_states[-2] is layer 2's output (1-based): layer 3 and the post-norm never run.
    unused = ("vision_tower.encoder.layers.2.", "vision_tower.post_layernorm.")
    assert missed and all(n.startswith(unused) for n in missed)
    assert enc.vision_tower.encoder.layers[1].mlp.fc2.weight.grad is not None


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A CLIPVisionModel and its image processor written with save_pretrained."""
    path = tmp_path_factory.mktemp("clip_vision")
    torch.manual_seed(3)
    model = CLIPVisionModel(CLIPVisionConfig(**TOWER)).eval()
    model.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                       image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]).save_pretrained(path)
    return path, model


def test_pretrained_dir_loads_weights_and_processor(clip_dir, pixels, pil_image):
    path, model = clip_dir
    enc = build_encoder(HFVisionEncoderConfig(VISION["clip"], pretrained=str(path), feature_layer=-1).to_dict())
    assert enc.vision_tower.training  # from_pretrained's eval mode is not left behind
    enc.eval()
    x = pixels(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), model(x).last_hidden_state[:, 1:], rtol=0, atol=0)
    spec = json.loads(json.dumps(enc.preprocess_spec()))
    assert spec["class"] == "CLIPImageProcessor" and spec["config"]["image_mean"] == [0.5, 0.5, 0.5]
    want = AutoImageProcessor.from_pretrained(path)([pil_image], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(build_image_processor(spec)([pil_image]), want, rtol=0, atol=0)


def test_pretrained_whole_clip_checkpoint_loads_its_vision_tower(tmp_path, pixels):
    torch.manual_seed(4)
    text = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, vocab_size=64,
                max_position_embeddings=8, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    clip = CLIPModel(CLIPConfig(vision_config=TOWER, text_config=text, projection_dim=8)).eval()
    clip.save_pretrained(tmp_path)  # the published layout: vision_model.* beside text_model.*
    config = HFVisionEncoderConfig(VISION["clip"], pretrained=str(tmp_path), select_strategy="full")
    enc = HFVisionEncoder(config).eval()
    x = pixels(1, 32)
    with torch.no_grad():
        want = clip.vision_model(x, output_hidden_states=True).hidden_states[-2]
        torch.testing.assert_close(enc(x), want, rtol=0, atol=0)


def test_default_processor_matches_the_family(pil_image):
    for family, cls in [("clip", "CLIPImageProcessor"), ("siglip", "SiglipImageProcessor")]:
        spec = HFVisionEncoder(HFVisionEncoderConfig(VISION[family])).preprocess_spec()
        json.dumps(spec)
        assert spec["kind"] == "hf_image" and spec["class"] == cls
        proc = build_image_processor(spec)
        assert proc.size == (32, 32) and proc([pil_image]).shape == (1, 3, 32, 32)


def test_errors_name_what_was_expected(clip_dir, pixels):
    enc = HFVisionEncoder(HFVisionEncoderConfig(VISION["siglip"]))
    with pytest.raises(ValueError, match=r"expected pixel_values of shape \(N, 3, 32, 32\), got \(2, 3, 64, 64\)"):
        enc(pixels(2, 64))
    with pytest.raises(ValueError, match=r"feature_layer=4 must index the 4 hidden states .* in \[-4, 3\]"):
        HFVisionEncoder(HFVisionEncoderConfig(VISION["clip"], feature_layer=4))
    with pytest.raises(ValueError, match="select_strategy='cls' must be one of"):
        HFVisionEncoderConfig(VISION["clip"], select_strategy="cls")
    with pytest.raises(ValueError, match="feature_layer=.* must be an int or a list of ints"):
        HFVisionEncoderConfig(VISION["clip"], feature_layer=[])
    bigger = dict(VISION["clip"], hidden_size=48)
    with pytest.raises(ValueError, match="does not fit the vision_config"):
        HFVisionEncoder(HFVisionEncoderConfig(bigger, pretrained=str(clip_dir[0])))
    deeper = dict(VISION["clip"], num_hidden_layers=4)
    with pytest.raises(ValueError, match=r"lacks 16 weights .* e.g. \['encoder.layers.3"):
        HFVisionEncoder(HFVisionEncoderConfig(deeper, pretrained=str(clip_dir[0])))
    with pytest.raises(ValueError, match="is not a directory"):
        HFVisionEncoder(HFVisionEncoderConfig(VISION["clip"], pretrained="/no/such/dir"))


def test_builds_on_the_meta_device():
    with torch.device("meta"):  # FSDP's deferred init: no weights, shapes only
        enc = HFVisionEncoder(HFVisionEncoderConfig(VISION["siglip"], feature_layer=[-2, -1], select_strategy="full"))
    assert next(enc.parameters()).is_meta and (enc.num_tokens, enc.out_dim) == (16, 64)
