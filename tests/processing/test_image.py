"""Image processors built from specs: input forms, RGB conversion, library parity, errors."""

import json
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from moezoo.processing.image import HF_IMAGE_PROCESSORS, build_image_processor, load_image, to_rgb_image

SIMPLE = {"kind": "simple", "size": [16, 24], "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.25, 0.5]}
TIMM = {"kind": "timm", "input_size": [3, 32, 32], "interpolation": "bicubic", "mean": [0.485, 0.456, 0.406],
        "std": [0.229, 0.224, 0.225], "crop_pct": 0.875, "crop_mode": "center"}
OPEN_CLIP = {"kind": "open_clip", "size": 32, "mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic",
             "resize_mode": "shortest", "fill_color": 0}
HF_CLIP = {"kind": "hf_image", "class": "CLIPImageProcessor",
           "config": {"size": {"shortest_edge": 32}, "crop_size": {"height": 32, "width": 32}}}
SPECS = {"simple": SIMPLE, "timm": TIMM, "open_clip": OPEN_CLIP, "hf_image": HF_CLIP}


def _rgb(h=40, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", SPECS)
def test_pil_numpy_and_tensors_give_the_same_pixels(kind):
    proc = build_image_processor(json.loads(json.dumps(SPECS[kind])))
    array = _rgb()
    as_tensor = torch.from_numpy(array).permute(2, 0, 1)
    out = proc([Image.fromarray(array), array, as_tensor, as_tensor / 255.0])
    assert out.dtype == torch.float32 and out.shape == (4, 3, *proc.size)
    for i in range(1, 4):
        torch.testing.assert_close(out[i], out[0], rtol=0, atol=0)
    assert proc.spec == SPECS[kind] and kind in repr(proc)


def test_simple_resizes_and_normalises_exactly():
    proc = build_image_processor(SIMPLE)  # "resize" defaults to "squash"
    assert proc.size == (16, 24)
    out = proc(Image.new("RGB", (7, 5), (255, 0, 128)))  # one image, not in a list
    assert out.shape == (1, 3, 16, 24)
    torch.testing.assert_close(out[0, :, 3, 4], torch.tensor([1.0, -2.0, (128 / 255 - 0.5) / 0.5]))


def test_grey_and_rgba_become_rgb_as_transformers_does():
    from transformers import CLIPImageProcessor

    grey = np.random.default_rng(1).integers(0, 256, (40, 48), dtype=np.uint8)
    rgba = np.concatenate([_rgb(seed=2), np.random.default_rng(3).integers(0, 256, (40, 48, 1), dtype=np.uint8)], -1)
    proc = build_image_processor(HF_CLIP)
    ours = proc([grey, grey[..., None], rgba, Image.fromarray(rgba)])
    torch.testing.assert_close(ours[0], ours[1], rtol=0, atol=0)
    torch.testing.assert_close(ours[2], ours[3], rtol=0, atol=0)
    # transformers converts a PIL image itself: grey replicated, RGBA composited onto white.
    reference = CLIPImageProcessor(**HF_CLIP["config"])
    want = reference([Image.fromarray(grey), Image.fromarray(rgba)], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(ours[[0, 2]], want, rtol=0, atol=0)
    white = to_rgb_image(np.zeros((2, 2, 4), dtype=np.uint8))  # fully transparent -> white
    assert np.asarray(white).min() == 255


def test_hf_image_equals_the_transformers_processor_and_aliases():
    import transformers

    images = [Image.fromarray(_rgb(seed=s)) for s in range(2)]
    for name, target in HF_IMAGE_PROCESSORS.items():
        spec = {"kind": "hf_image", "class": name, "config": HF_CLIP["config"] if "CLIP" in name else {
            "size": {"height": 24, "width": 24}}}
        proc = build_image_processor(spec)
        reference = getattr(transformers, target)(**spec["config"])
        want = reference(images, return_tensors="pt")["pixel_values"]
        torch.testing.assert_close(proc(images), want, rtol=0, atol=0)
        assert proc.size == tuple(want.shape[-2:])


def test_open_clip_and_timm_equal_their_libraries():
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from timm.data import create_transform

    image = Image.fromarray(_rgb())
    cfg = {k: v for k, v in TIMM.items() if k != "kind"}
    torch.testing.assert_close(build_image_processor(TIMM)([image])[0], create_transform(**cfg)(image), rtol=0, atol=0)
    cfg = PreprocessCfg(**{k: v for k, v in OPEN_CLIP.items() if k != "kind"})
    want = image_transform_v2(cfg, is_train=False)(image)
    torch.testing.assert_close(build_image_processor(OPEN_CLIP)([image])[0], want, rtol=0, atol=0)


@pytest.mark.parametrize("kind", SPECS)
def test_processors_pickle_for_data_loader_workers(kind):
    proc = build_image_processor(SPECS[kind])
    copy = pickle.loads(pickle.dumps(proc))
    image = Image.fromarray(_rgb())
    assert copy.spec == proc.spec and copy.size == proc.size
    torch.testing.assert_close(copy([image]), proc([image]), rtol=0, atol=0)


def test_empty_batch_has_the_spec_size():
    assert build_image_processor(TIMM)([]).shape == (0, 3, 32, 32)


@pytest.mark.parametrize("image, message", [
    (np.zeros((8, 8, 2), dtype=np.uint8), r"image 1 has shape \(8, 8, 2\); expected PIL images"),
    (np.zeros((2, 8, 8, 3), dtype=np.uint8), r"image 1 has shape \(2, 8, 8, 3\); expected .* C = 1 \(grey\), 3"),
    (torch.zeros(2, 8, 8), r"image 1 has shape \(2, 8, 8\)"),
    (np.zeros((8, 8, 3), dtype=np.float32), "image 1 is a float32 array; expected uint8"),
    (torch.full((3, 8, 8), 2.0), r"image 1 is a float tensor with values in \[2, 2\]; expected \[0, 1\]"),
    (torch.zeros(3, 8, 8, dtype=torch.int32), "image 1 is a torch.int32 tensor"),
    ("cat.png", "image 1 is a str; expected PIL images"),
])
def test_bad_images_name_their_index_and_shape(image, message):
    proc = build_image_processor(SIMPLE)
    with pytest.raises(ValueError, match=message):
        proc([Image.new("RGB", (8, 8)), image])


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match=r"unknown image preprocessing kind 'jpeg'; known kinds: \['hf_image'"):
        build_image_processor({"kind": "jpeg"})
    with pytest.raises(ValueError, match=r"class 'AutoImageProcessor'; allowed: \['CLIPImageProcessor'"):
        build_image_processor({"kind": "hf_image", "class": "AutoImageProcessor", "config": {}})
    with pytest.raises(ValueError, match="gives no fixed output size"):
        build_image_processor({"kind": "hf_image", "class": "CLIPImageProcessor",
                               "config": {"do_center_crop": False}})
    with pytest.raises(ValueError, match="only 'squash'"):
        build_image_processor({**SIMPLE, "resize": "crop"})


def test_load_image_reads_paths_bytes_and_pil_images_alike(tmp_path, monkeypatch):
    import io

    from PIL import ImageFile

    rgba = np.concatenate([_rgb(seed=4), np.where(_rgb(seed=5)[..., :1] < 128, 0, 255).astype(np.uint8)], -1)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    (tmp_path / "a.png").write_bytes(buf.getvalue())
    alpha = rgba[..., 3:] / 255
    want = (rgba[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)  # onto white
    for source in (tmp_path / "a.png", str(tmp_path / "a.png"), buf.getvalue(), Image.fromarray(rgba, "RGBA")):
        image = load_image(source)
        assert image.mode == "RGB" and np.array_equal(np.asarray(image), want), type(source)
    with pytest.raises(FileNotFoundError, match="no image file at .*nope.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match="moezoo downloads nothing"):
        load_image("https://example.com/cat.png")
    with pytest.raises(ValueError, match="takes a path, bytes or a PIL image, not a int"):
        load_image(3)
    # A truncated file is an error even when PIL is told to load truncated images (lmms-eval does).
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(ValueError, match="not a readable image") as err:
        load_image(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert isinstance(err.value.__cause__, OSError) and ImageFile.LOAD_TRUNCATED_IMAGES is True


def test_pad_to_square_centres_the_image_on_the_mean_colour_before_the_transform():
    """LLaVA's image_aspect_ratio="pad": a wide image is centred on a square of int(255 * mean) (rows above it
    rounded down, as expand2square pastes it), then the usual transform runs; square images are untouched."""
    proc = build_image_processor({**SIMPLE, "size": [6, 6], "pad_to_square": True})
    assert proc.pad_fill == (127, 127, 127)
    wide = np.full((3, 6, 3), 255, dtype=np.uint8)  # 3 rows, 6 columns: pasted at row 1 of a 6x6 square
    got = proc([wide])[0, 0]
    fill, white = (127 / 255 - 0.5) / 0.5, (1.0 - 0.5) / 0.5
    assert torch.allclose(got[[0, 4, 5]], torch.full((3, 6), fill))
    assert torch.allclose(got[1:4], torch.full((3, 6), white))
    square = _rgb(24, 24)
    plain = build_image_processor({**SIMPLE, "size": [6, 6]})
    torch.testing.assert_close(proc([square]), plain([square]), rtol=0, atol=0)
    with pytest.raises(ValueError, match="pad_to_square is not supported for 'timm' specs"):
        build_image_processor({**TIMM, "pad_to_square": True})
