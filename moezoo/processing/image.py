"""Image preprocessing rebuilt from an encoder's JSON spec, with each encoder library's own transform.

An encoder says how its pixels must be prepared (:meth:`moezoo.models.encoders.base.Encoder.preprocess_spec`);
:func:`build_image_processor` turns that dict back into a callable, always through the library the
weights were trained with, so moezoo never re-implements a resize that could drift from it:

* ``"timm"``: :func:`timm.data.resolve_data_config` output, applied with ``timm.data.create_transform``;
* ``"open_clip"``: open_clip's ``PreprocessCfg`` fields, applied with ``open_clip.transform.image_transform_v2``
  (what ``open_clip.create_model_and_transforms`` returns as its eval ``preprocess``);
* ``"hf_image"``: a transformers CLIP / SigLIP image processor rebuilt from its dict (allow-listed classes);
* ``"simple"``: a bilinear resize to a fixed size and a normalisation, for trunks trained from scratch.

An ``hf_image`` or ``simple`` spec with ``"pad_to_square": true`` first pads each image to a square in the
processor's mean colour, centred (LLaVA's ``image_aspect_ratio="pad"``: ``expand2square`` in LLaVA's,
MoE-LLaVA's and LibMoE's ``mm_utils.py``), so a wide picture is not cropped.

Inputs may be PIL images, ``(H, W[, C])`` uint8 numpy arrays or ``(C, H, W)`` tensors (uint8, or float
in [0, 1]). Grey images become RGB and transparency is composited onto white, as transformers'
``convert_to_rgb`` does, so every library sees the same RGB picture. Files and bytes are read by
:func:`load_image`, the one image loader of training (the shard pipeline), inference (the processor),
``moezoo chat`` and the evaluation harness adapters, so a picture has the same pixels everywhere.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

ACCEPTED = ("PIL images, (H, W) or (H, W, C) uint8 numpy arrays, or (C, H, W) / (H, W) uint8 or float "
            "[0, 1] tensors, with C = 1 (grey), 3 (RGB) or 4 (RGBA)")

# transformers image processors a spec may name (never an arbitrary class from a file). In
# transformers 5 the plain names are the torchvision backends that AutoImageProcessor picks by
# default; the 4.x "Fast" names are aliases of them, exactly as AutoImageProcessor maps them.
HF_IMAGE_PROCESSORS = {
    "CLIPImageProcessor": "CLIPImageProcessor",
    "CLIPImageProcessorFast": "CLIPImageProcessor",
    "CLIPImageProcessorPil": "CLIPImageProcessorPil",
    "SiglipImageProcessor": "SiglipImageProcessor",
    "SiglipImageProcessorFast": "SiglipImageProcessor",
    "SiglipImageProcessorPil": "SiglipImageProcessorPil",
}


class ImageProcessor:
    """``images -> pixel_values (N, 3, H, W)`` float32, for one preprocessing spec.

    Args:
        spec: the JSON-ready spec it was built from (kept as :attr:`spec`).
        transform: maps a list of RGB PIL images to ``(N, 3, H, W)``.
        size: the output ``(H, W)``.
    """

    def __init__(self, spec: dict[str, Any], transform: Callable[[list], torch.Tensor], size: tuple[int, int],
                 mean: Sequence[float] | None = None):
        self.spec = spec
        self.size = (int(size[0]), int(size[1]))
        self._transform = transform
        self.pad_fill = None  # the RGB colour non-square images are padded with, if the spec pads them
        if spec.get("pad_to_square") and mean is not None:  # the kinds in PADDED_KINDS pass their mean
            self.pad_fill = tuple(int(m * 255) for m in mean)  # LLaVA's colour: int(x * 255) of the image mean

    def __call__(self, images: Sequence[Any] | Any) -> torch.Tensor:
        """Preprocess a list of images (a single image is taken as a list of one)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        rgb = [to_rgb_image(image, index) for index, image in enumerate(images)]
        if self.pad_fill is not None:
            rgb = [expand_to_square(image, self.pad_fill) for image in rgb]
        if not rgb:
            return torch.zeros(0, 3, *self.size)
        pixels_N3HW = self._transform(rgb).float()
        if pixels_N3HW.shape[1:] != (3, *self.size):  # a spec whose transform does not give its size
            raise ValueError(f"the {self.spec['kind']!r} transform gave {tuple(pixels_N3HW.shape)}, "
                             f"expected (N, 3, {self.size[0]}, {self.size[1]})")
        return pixels_N3HW

    def __repr__(self) -> str:
        return f"ImageProcessor({self.spec})"

    def __getstate__(self) -> dict:  # the library transforms may not pickle; the spec rebuilds them
        return {"spec": self.spec}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(build_image_processor(state["spec"]).__dict__)


def load_image(source: str | os.PathLike | bytes | Any):
    """An image file, its bytes or a PIL image as an RGB PIL image, read the same way everywhere.

    Grey is replicated and transparency composited onto white (transformers' ``convert_to_rgb``),
    so a transparent PNG gives the same pixels in training and at inference. A file is read in
    full, and a truncated one is an error whatever PIL's global ``LOAD_TRUNCATED_IMAGES`` says
    (lmms-eval sets it on import): a half image never passes as a whole one.

    Args:
        source: a path, the encoded bytes (PNG, JPEG, ...) or a PIL image.

    Raises:
        FileNotFoundError: a path that is no file (moezoo downloads nothing: a URL is no path).
        ValueError: data that is no readable image; its ``__cause__`` is PIL's error.

    Example:
        >>> from PIL import Image
        >>> clear = Image.new("RGBA", (2, 1), (255, 0, 0, 0))  # red, fully transparent
        >>> load_image(clear).getpixel((0, 0))
        (255, 255, 255)
        >>> load_image(b"not an image")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: 12 bytes: not a readable image (UnidentifiedImageError: cannot identify image file ...)
    """
    from PIL import Image, ImageFile

    if isinstance(source, Image.Image):
        return _pil_to_rgb(source)
    if isinstance(source, (bytes, bytearray)):
        file, name = io.BytesIO(source), f"{len(source)} bytes"
    elif isinstance(source, (str, os.PathLike)):
        file = name = Path(source)
        if not file.is_file():
            hint = " (moezoo downloads nothing: save the image and pass its path)" if "://" in str(source) else ""
            raise FileNotFoundError(f"no image file at {source}{hint}")
    else:
        raise ValueError(f"load_image takes a path, bytes or a PIL image, not a {type(source).__name__}")
    lenient, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
    try:
        with Image.open(file) as image:
            image.load()  # PIL is lazy: truncation only shows when the pixels are read
            rgb = _pil_to_rgb(image)
            return rgb.copy() if rgb is image else rgb  # closing the file would close `image`
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as err:
        raise ValueError(f"{name}: not a readable image ({type(err).__name__}: {err})") from err
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = lenient


def to_rgb_image(image: Any, index: int = 0):
    """One input image as an RGB PIL image; grey is replicated and transparency composited onto white.

    Float tensors must hold values in [0, 1]; they are rounded to 8 bits, the precision every
    library's transform starts from.

    Example:
        >>> to_rgb_image(np.zeros((4, 5), dtype=np.uint8)).size
        (5, 4)
        >>> to_rgb_image(np.zeros((4, 5, 2), dtype=np.uint8), index=3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: image 3 has shape (4, 5, 2); expected PIL images, (H, W) or (H, W, C) uint8 numpy arrays, ...
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        return load_image(image)
    if isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[0] in (1, 3, 4):
            image = image.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        elif image.ndim != 2:
            raise ValueError(f"image {index} has shape {tuple(image.shape)}; expected {ACCEPTED}")
        if image.is_floating_point():
            if image.numel() and (image.min() < 0 or image.max() > 1):
                raise ValueError(f"image {index} is a float tensor with values in "
                                 f"[{float(image.min()):.3g}, {float(image.max()):.3g}]; expected [0, 1]")
            image = (image * 255).round()
        elif image.dtype != torch.uint8:
            raise ValueError(f"image {index} is a {image.dtype} tensor; expected uint8 or float in [0, 1]")
        image = image.detach().cpu().to(torch.uint8).numpy()
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8:
            raise ValueError(f"image {index} is a {image.dtype} array; expected uint8 (H, W[, C])")
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] in (3, 4))):
            raise ValueError(f"image {index} has shape {tuple(image.shape)}; expected {ACCEPTED}")
        return load_image(Image.fromarray(np.ascontiguousarray(image)))
    raise ValueError(f"image {index} is a {type(image).__name__}; expected {ACCEPTED}")


def _pil_to_rgb(image):
    from PIL import Image

    if image.mode == "RGB":
        return image
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def expand_to_square(image: Any, fill: tuple[int, ...]) -> Any:
    """A PIL image padded to a square with ``fill``, centred as LLaVA's ``expand2square`` places it (the
    offset rounds down); a square image is returned as is.

    Example:
        >>> from PIL import Image
        >>> square = expand_to_square(Image.new("RGB", (4, 1), (255, 0, 0)), (0, 0, 9))
        >>> square.size, square.getpixel((0, 0)), square.getpixel((0, 1))
        ((4, 4), (0, 0, 9), (255, 0, 0))
    """
    from PIL import Image

    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    result = Image.new(image.mode, (side, side), fill)
    result.paste(image, ((side - width) // 2, (side - height) // 2))
    return result


def _stack(transform: Callable) -> Callable[[list], torch.Tensor]:
    return lambda images: torch.stack([transform(image) for image in images])


def _build_timm(spec: dict) -> ImageProcessor:
    from timm.data import create_transform

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "kind"}
    transform = create_transform(**cfg, is_training=False)
    return ImageProcessor(spec, _stack(transform), tuple(cfg["input_size"][-2:]))


def _build_open_clip(spec: dict) -> ImageProcessor:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in spec.items() if k != "kind"}
    pp_cfg = PreprocessCfg(**cfg)
    size = pp_cfg.size if isinstance(pp_cfg.size, tuple) else (pp_cfg.size, pp_cfg.size)
    return ImageProcessor(spec, _stack(image_transform_v2(pp_cfg, is_train=False)), size)


def _build_hf_image(spec: dict) -> ImageProcessor:
    import transformers

    name = spec.get("class")
    if name not in HF_IMAGE_PROCESSORS:
        raise ValueError(f"hf_image spec names class {name!r}; allowed: {sorted(HF_IMAGE_PROCESSORS)}")
    processor = getattr(transformers, HF_IMAGE_PROCESSORS[name]).from_dict(dict(spec.get("config", {})))
    crop, resize = getattr(processor, "crop_size", None), processor.size
    if getattr(processor, "do_center_crop", False):
        size = (crop.height, crop.width)
    elif resize.height and resize.width:
        size = (resize.height, resize.width)
    else:  # a shortest-edge resize without a crop keeps the aspect ratio: no fixed batch shape
        raise ValueError(f"hf_image spec {name} gives no fixed output size (size={resize}, no center crop); "
                         "set size to {height, width} or enable the center crop")
    return ImageProcessor(spec, lambda images: processor(images, return_tensors="pt")["pixel_values"], size,
                          mean=processor.image_mean)


def _build_simple(spec: dict) -> ImageProcessor:
    from PIL import Image

    resize = spec.get("resize", "squash")
    if resize != "squash":
        raise ValueError(f"simple spec resize={resize!r}; only 'squash' (resize to size, ignoring aspect) is supported")
    height, width = spec["size"]
    mean_C11 = torch.tensor(spec["mean"], dtype=torch.float32).view(3, 1, 1)
    std_C11 = torch.tensor(spec["std"], dtype=torch.float32).view(3, 1, 1)

    def transform(image) -> torch.Tensor:
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        pixels_HWC = torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0)
        return (pixels_HWC.permute(2, 0, 1) - mean_C11) / std_C11

    return ImageProcessor(spec, _stack(transform), (height, width), mean=spec["mean"])


PADDED_KINDS = ("hf_image", "simple")  # the spec kinds that take "pad_to_square" (they know their mean colour)
IMAGE_PROCESSOR_BUILDERS: dict[str, Callable[[dict], ImageProcessor]] = {
    "timm": _build_timm,
    "open_clip": _build_open_clip,
    "hf_image": _build_hf_image,
    "simple": _build_simple,
}


def build_image_processor(spec: dict[str, Any]) -> ImageProcessor:
    """The image processor for an encoder's preprocessing ``spec`` (a dict with a ``kind``).

    Example:
        >>> from PIL import Image
        >>> proc = build_image_processor({"kind": "simple", "size": [8, 8], "mean": [0.5] * 3, "std": [0.5] * 3})
        >>> proc([Image.new("L", (20, 10), 255), np.zeros((5, 5, 4), dtype=np.uint8)]).shape, proc.size
        (torch.Size([2, 3, 8, 8]), (8, 8))
        >>> build_image_processor({"kind": "jpeg"})
        Traceback (most recent call last):
        ...
        ValueError: unknown image preprocessing kind 'jpeg'; known kinds: ['hf_image', 'open_clip', 'simple', 'timm']
    """
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in IMAGE_PROCESSOR_BUILDERS:
        raise ValueError(f"unknown image preprocessing kind {kind!r}; known kinds: {sorted(IMAGE_PROCESSOR_BUILDERS)}")
    if spec.get("pad_to_square") and kind not in PADDED_KINDS:
        raise ValueError(f"pad_to_square is not supported for {kind!r} specs, only for {list(PADDED_KINDS)}")
    return IMAGE_PROCESSOR_BUILDERS[kind](spec)
