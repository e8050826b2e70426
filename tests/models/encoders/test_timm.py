"""The timm encoder: parity with timm's own forward_intermediates, pruning, preprocessing, errors."""

import json

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import create_transform, resolve_data_config

from moezoo.models.encoders.base import build_encoder
from moezoo.models.encoders.timm import TimmEncoder, TimmEncoderConfig
from moezoo.processing.image import build_image_processor


def _reference(tmp_path, name, **kwargs):
    """A seeded timm model and the safetensors file of its weights."""
    torch.manual_seed(1)
    model = timm.create_model(name, **kwargs).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, str(path)


def test_convnext_third_stage_gives_16_tokens_at_64px(pixels, without_grad):
    enc = build_encoder({"kind": "timm", "model_name": "test_convnext", "feature_index": 2, "image_size": 64})
    assert isinstance(enc, TimmEncoder) and (enc.num_tokens, enc.out_dim) == (16, 48)
    out = enc(pixels(3, 64))
    assert out.shape == (3, 16, 48)
    out.square().mean().backward()
    assert without_grad(enc) == []  # the pruned model holds only layers that run
    assert len(enc.model.stages) == 3  # the fourth stage and the head are gone


@pytest.mark.parametrize("name, index, kwargs", [
    ("test_convnext", 2, {}),
    ("test_convnext", -1, {}),
    ("test_resnet", -2, {}),
    ("test_vit", 1, {"img_size": 64}),
])
def test_features_equal_timm_forward_intermediates(tmp_path, pixels, name, index, kwargs):
    ref, path = _reference(tmp_path, name, **kwargs)
    torch.manual_seed(2)  # a different init: equality below needs the weights from the file
    enc = TimmEncoder(TimmEncoderConfig(name, pretrained=path, feature_index=index, image_size=64)).eval()
    x = pixels(2, 64)
    with torch.no_grad():
        (want,) = ref.forward_intermediates(x, indices=[index], intermediates_only=True)
        got = enc(x)
    want = want.flatten(2).transpose(1, 2)  # NCHW -> (N, H*W, C)
    assert got.shape == (2, enc.num_tokens, enc.out_dim)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.parametrize("keep", [False, True])
def test_vit_prefix_tokens_kept_or_dropped(tmp_path, pixels, keep):
    ref, path = _reference(tmp_path, "test_vit", img_size=64)
    enc = TimmEncoder(TimmEncoderConfig("test_vit", pretrained=path, feature_index=-2, image_size=64,
                                        keep_prefix_tokens=keep)).eval()
    assert enc.num_tokens == 16 + keep and enc.out_dim == 64
    x = pixels(2, 64)
    with torch.no_grad():
        ((patches, prefix),) = ref.forward_intermediates(x, indices=[-2], intermediates_only=True,
                                                         return_prefix_tokens=True)
        got = enc(x)
    want = patches.flatten(2).transpose(1, 2)
    if keep:
        want = torch.cat([prefix, want], dim=1)  # CLS first, as in the ViT's own sequence
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    assert len(enc.model.blocks) == 5  # blocks after the penultimate are pruned


def test_vit_without_prefix_tokens_keeps_only_patches(pixels):
    enc = TimmEncoder(TimmEncoderConfig("test_vit_relpos", image_size=64, keep_prefix_tokens=True))
    assert enc.num_tokens == 16 and enc(pixels(1, 64)).shape == (1, 16, 96)


@pytest.mark.parametrize("image_size", [None, 64])
def test_processor_equals_timm_create_transform(pil_image, image_size):
    enc = TimmEncoder(TimmEncoderConfig("test_convnext", image_size=image_size))
    spec = json.loads(json.dumps(enc.preprocess_spec()))  # saved with the model as JSON
    model = timm.create_model("test_convnext")
    args = {"input_size": (3, 64, 64)} if image_size else {}
    cfg = resolve_data_config(args=args, model=model)
    assert spec == {"kind": "timm", **json.loads(json.dumps(cfg))}
    want = create_transform(**cfg)(pil_image)
    got = build_image_processor(spec)([pil_image])
    assert got.shape == (1, *want.shape) and want.shape[-2:] == enc.image_size
    torch.testing.assert_close(got[0], want, rtol=0, atol=0)


def test_errors_name_what_was_expected(pixels):
    enc = TimmEncoder(TimmEncoderConfig("test_convnext", feature_index=2, image_size=64))
    with pytest.raises(ValueError, match=r"expected pixel_values of shape \(N, 3, 64, 64\), got \(2, 1, 64, 64\)"):
        enc(torch.zeros(2, 1, 64, 64))
    with pytest.raises(ValueError, match=r"got \(2, 3, 32, 32\)"):
        enc(pixels(2, 32))
    with pytest.raises(ValueError, match=r"feature_index=4 is out of range for test_convnext"):
        TimmEncoder(TimmEncoderConfig("test_convnext", feature_index=4))
    with pytest.raises(ValueError, match=r"did you mean \['test_convnext'"):
        TimmEncoder(TimmEncoderConfig("test_convnxt"))
    with pytest.raises(ValueError, match="has no prefix tokens"):
        TimmEncoder(TimmEncoderConfig("test_convnext", keep_prefix_tokens=True))
    with pytest.raises(ValueError, match="is not a file"):
        TimmEncoder(TimmEncoderConfig("test_convnext", pretrained="/no/such/weights.safetensors"))
    with pytest.raises(ValueError, match=r"TimmEncoderConfig.pretrained=''"):
        TimmEncoderConfig("test_convnext", pretrained="")


def test_config_round_trips_through_the_registry():
    config = TimmEncoderConfig("test_vit", feature_index=3, keep_prefix_tokens=True, image_size=32,
                               model_kwargs={"drop_path_rate": 0.1})
    data = json.loads(json.dumps(config.to_dict()))
    enc = build_encoder(data)
    assert enc.config == config and enc.num_tokens == 5


def test_builds_on_the_meta_device_with_the_same_shape():
    config = TimmEncoderConfig("test_vit", feature_index=-2, image_size=64, keep_prefix_tokens=True)
    with torch.device("meta"):  # FSDP's deferred init: no weights, shapes only
        enc = TimmEncoder(config)
    assert next(enc.parameters()).is_meta and (enc.num_tokens, enc.out_dim) == (17, 64)
