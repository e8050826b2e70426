"""The open_clip encoder: block features against open_clip's own modules, preprocessing, errors."""

import json

import open_clip
import pytest
import torch
from safetensors.torch import save_file

from moezoo.models.encoders.base import build_encoder
from moezoo.models.encoders.open_clip import OpenClipEncoder, OpenClipEncoderConfig
from moezoo.processing.image import build_image_processor

TEXT_CFG = {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}
CLIP_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 32, "layers": 3,
                                            "head_width": 16}, "text_cfg": TEXT_CFG}
# A SigLIP-like tower: timm-backed, no class token (timm's tiny relpos ViT stands in for
# vit_base_patch16_siglip_224, which is what open_clip's ViT-B-16-SigLIP builds).
SIGLIP_LIKE_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "timm_model_name": "test_vit_relpos",
                                                   "timm_pool": "avg", "timm_proj": "none"}, "text_cfg": TEXT_CFG}
PREPROCESS = {"mean": [0.25, 0.5, 0.75], "std": [0.5, 0.25, 0.5], "interpolation": "bilinear", "resize_mode": "squash"}


def _local_dir(tmp_path, model_cfg, preprocess=None):
    """An open_clip ``local-dir:`` folder (config + seeded weights) and the model those weights came from."""
    torch.manual_seed(1)
    model = open_clip.CLIP(**model_cfg).eval()
    if hasattr(model.visual, "set_input_size"):  # the timm trunk takes vision_cfg's size, as in the encoder
        model.visual.set_input_size(model.visual.image_size)
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                                "preprocess_cfg": preprocess or {}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "open_clip_model.safetensors"))
    return model


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_clip")
    return path, _local_dir(path, CLIP_CFG, PREPROCESS)


def _block_output(visual, x, layer):
    """CLIP's tokens after block ``layer``, from open_clip's public modules, one step at a time."""
    h = visual.conv1(x).flatten(2).transpose(1, 2)  # (N, grid*grid, width)
    cls = visual.class_embedding.expand(x.shape[0], 1, -1)
    h = visual.ln_pre(torch.cat([cls, h], dim=1) + visual.positional_embedding)
    blocks = visual.transformer.resblocks
    for block in blocks[: layer % len(blocks) + 1]:
        h = block(h)
    return h  # (N, 1 + grid*grid, width), CLS first


@pytest.mark.parametrize("layer, keep_cls", [(-2, False), (-2, True), (0, False), (-1, True)])
def test_clip_features_equal_the_block_output(clip_dir, pixels, layer, keep_cls):
    path, ref = clip_dir
    torch.manual_seed(2)  # the weights must come from the folder
    enc = OpenClipEncoder(OpenClipEncoderConfig(f"local-dir:{path}", feature_layer=layer, keep_cls=keep_cls)).eval()
    assert (enc.num_tokens, enc.out_dim) == (16 + keep_cls, 32)
    x = pixels(2, 32)
    with torch.no_grad():
        want = _block_output(ref.visual, x, layer)[:, 0 if keep_cls else 1:]
        got = enc(x)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
    assert len(enc.visual.transformer.resblocks) == layer % 3 + 1  # later blocks pruned


def test_model_cfg_with_a_weights_file_equals_the_named_model(clip_dir, pixels):
    path, _ = clip_dir
    named = OpenClipEncoder(OpenClipEncoderConfig(f"local-dir:{path}")).eval()
    vision_only = {k: v for k, v in CLIP_CFG.items() if k != "text_cfg"}  # the text tower is not needed
    weights = str(path / "open_clip_model.safetensors")
    custom = build_encoder(OpenClipEncoderConfig(model_cfg=vision_only, pretrained=weights,
                                                 preprocess_cfg=PREPROCESS).to_dict()).eval()
    x = pixels(2, 32)
    with torch.no_grad():
        torch.testing.assert_close(custom(x), named(x), rtol=0, atol=0)
    # open_clip gives the size as (H, W) after create_model, as an int from a config: both mean 32x32.
    assert custom.preprocess_spec() == {**named.preprocess_spec(), "size": 32}


def test_processor_equals_create_model_and_transforms(clip_dir, pil_image):
    path, _ = clip_dir
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}")
    spec = json.loads(json.dumps(OpenClipEncoder(OpenClipEncoderConfig(f"local-dir:{path}")).preprocess_spec()))
    assert spec["kind"] == "open_clip" and spec["mean"] == PREPROCESS["mean"] and spec["resize_mode"] == "squash"
    got = build_image_processor(spec)([pil_image, pil_image.convert("L")])
    torch.testing.assert_close(got[0], preprocess(pil_image), rtol=0, atol=0)
    torch.testing.assert_close(got[1], preprocess(pil_image.convert("L").convert("RGB")), rtol=0, atol=0)


@pytest.mark.parametrize("keep_cls", [False, True])
def test_timm_backed_tower_equals_its_trunk(tmp_path, pixels, keep_cls):
    ref = _local_dir(tmp_path, SIGLIP_LIKE_CFG)
    enc = OpenClipEncoder(OpenClipEncoderConfig(f"local-dir:{tmp_path}", keep_cls=keep_cls)).eval()
    assert (enc.num_tokens, enc.out_dim) == (4, 96)  # no class token to keep
    x = pixels(2, 32)
    with torch.no_grad():
        (want,) = ref.visual.trunk.forward_intermediates(x, indices=[-2], intermediates_only=True)
        torch.testing.assert_close(enc(x), want.flatten(2).transpose(1, 2), rtol=0, atol=1e-6)


@pytest.mark.parametrize("model_cfg", [CLIP_CFG, SIGLIP_LIKE_CFG], ids=["clip", "timm"])
def test_backward_reaches_every_kept_parameter(pixels, without_grad, model_cfg):
    enc = OpenClipEncoder(OpenClipEncoderConfig(model_cfg=model_cfg, keep_cls=True))
    enc(pixels(2, 32)).square().mean().backward()
    assert without_grad(enc) == []  # pooling heads, final norms and later blocks are gone


def test_errors_name_what_was_expected(pixels):
    enc = OpenClipEncoder(OpenClipEncoderConfig(model_cfg=CLIP_CFG))
    with pytest.raises(ValueError, match=r"expected pixel_values of shape \(N, 3, 32, 32\), got \(2, 4, 32, 32\)"):
        enc(torch.zeros(2, 4, 32, 32))
    with pytest.raises(ValueError, match="feature_layer=3 is out of range"):
        OpenClipEncoder(OpenClipEncoderConfig(model_cfg=CLIP_CFG, feature_layer=3))
    with pytest.raises(ValueError, match="'ViT-B-61' is not an open_clip model"):
        OpenClipEncoder(OpenClipEncoderConfig("ViT-B-61"))
    resnet = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": [1, 1, 1, 1], "width": 8}}
    with pytest.raises(ValueError, match="builds a ModifiedResNet tower"):
        OpenClipEncoder(OpenClipEncoderConfig(model_cfg=resnet))
    with pytest.raises(ValueError, match="is not a file"):
        OpenClipEncoder(OpenClipEncoderConfig(model_cfg=CLIP_CFG, pretrained="/no/such/file.pt"))
    with pytest.raises(ValueError, match="preprocess_cfg"):
        OpenClipEncoderConfig(preprocess_cfg={"colour": "red"})


@pytest.mark.slow
def test_vit_b_16_siglip_is_a_timm_tower():
    enc = OpenClipEncoder(OpenClipEncoderConfig("ViT-B-16-SigLIP", keep_cls=True))
    assert type(enc.visual.trunk).__name__ == "VisionTransformer" and len(enc.visual.trunk.blocks) == 11
    assert (enc.num_tokens, enc.out_dim) == (196, 768)


def test_builds_on_the_meta_device_with_the_same_shape():
    with torch.device("meta"):  # FSDP's deferred init: no weights, shapes only
        enc = OpenClipEncoder(OpenClipEncoderConfig(model_cfg=CLIP_CFG, keep_cls=True))
    assert next(enc.parameters()).is_meta and (enc.num_tokens, enc.out_dim) == (17, 32)
