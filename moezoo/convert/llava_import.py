"""``moezoo.load`` of a transformers LLaVA checkpoint dir, processor included.

Reads what ``LlavaForConditionalGeneration.save_pretrained`` plus ``LlavaProcessor.save_pretrained``
write (transformers 5: ``processor_config.json`` holding the image processor; transformers 4 and
llava-hf: ``preprocessor_config.json`` beside it, ``chat_template.json``), in either weight-key
layout (:mod:`moezoo.convert.llava`). The model's :class:`~moezoo.processing.processor.Processor`
wraps the checkpoint's own image processor (an allow-listed transformers class rebuilt from its
dict) and tokenizer, so ``model.processor(text=..., images=...)`` gives the ``input_ids`` and
``pixel_values`` that ``transformers.AutoProcessor.from_pretrained(dir)`` gives.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from moezoo.checkpoint.files import read_safetensors
from moezoo.checkpoint.reader import build_model
from moezoo.convert.hf_config import with_head_bias
from moezoo.convert.hf_import import checkpoint_dtype, read_hf_config
from moezoo.convert.llava import llava_to_moezoo, multimodal_fields, sub_config
from moezoo.models.encoders.hf_vision import FAMILIES as TOWERS
from moezoo.models.multimodal import MULTIMODAL_SPEC, MultimodalConfig, MultimodalMoEForCausalLM
from moezoo.models.spec import register_importer
from moezoo.processing.image import HF_IMAGE_PROCESSORS
from moezoo.processing.processor import Processor
from moezoo.processing.tokenizer import load_tokenizer
from moezoo.utils.io import read_json_if_present

# Keys of a saved image-processor dict that belong to the processor around it, not to the image processor.
_PROCESSOR_KEYS = ("processor_class", "auto_map")


def import_llava(path: str | Path, device: str | torch.device = "cpu",
                 dtype: torch.dtype | str | None = None) -> MultimodalMoEForCausalLM:
    """Load a transformers ``LlavaForConditionalGeneration`` dir as a :class:`MultimodalMoEForCausalLM`.

    The vision tower must be CLIP or SigLIP and the text model a family moezoo reads (Llama,
    Qwen2, Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE). With tokenizer files the model gets a
    ``processor`` (see the module docstring); without, none.

    Raises:
        ValueError: an unsupported tower or text family (the supported ones listed), an image
            processor class outside the allow-list, missing or unexpected weights (listed), or an
            image token the tokenizer does not encode as the model's ``image_token_index``.

    Example:
        >>> import tempfile
        >>> from moezoo.convert.llava_testing import tiny_llava_checkpoint
        >>> path = tempfile.mkdtemp()
        >>> _ = tiny_llava_checkpoint(path, tower="siglip", family="qwen3_moe")
        >>> model = import_llava(path)
        >>> model.config.vision.kind, model.config.llm.family, model.num_tokens, model.processor.placeholders["image"]
        ('hf_vision', 'qwen3_moe', {'image': 15}, '<image>')
    """
    path = Path(path)
    cfg, generation = read_hf_config(path)
    tower = sub_config(cfg, "vision_config")["model_type"]
    if tower not in TOWERS:
        raise ValueError(f"{path}: LLaVA vision_config has model_type {tower!r}; moezoo reads the towers "
                         f"{sorted(TOWERS)} (CLIP and SigLIP)")
    files = processor_files(path, TOWERS[tower].image_processor)
    fields = multimodal_fields(cfg, generation)
    fields["vision"]["image_processor"] = files["image_processor"]
    config = MultimodalConfig(**fields)
    state = llava_to_moezoo(read_safetensors(path), config.llm)
    # transformers' LLaVA head has no bias, whatever the text family's own head has (Phi's)
    config = config.replace(llm=with_head_bias(config.llm, "llm.lm_head.bias" in state))
    model = build_model(config, state, str(path), device, checkpoint_dtype(cfg, dtype))
    tokenizer = load_tokenizer(path, required=False)
    if tokenizer is not None:
        model.processor = llava_processor(model, tokenizer, files, str(path))
    return model


def processor_files(path: str | Path, default_class: str) -> dict[str, Any]:
    """What a LLaVA dir's processor files say.

    Args:
        path: the checkpoint dir.
        default_class: the image processor class when the saved dict names none (the tower's).

    Returns:
        ``image_processor`` (its dict, with ``image_processor_type``, or ``None``), ``settings``
        (``LlavaProcessor``'s own fields: ``patch_size``, ``vision_feature_select_strategy``,
        ``num_additional_image_tokens``, ``image_token``) and ``chat_template`` (or ``None``).
    """
    path = Path(path)
    settings = read_json_if_present(path / "processor_config.json")
    image_processor = settings.pop("image_processor", None)  # transformers 5 nests it here
    if image_processor is None and (path / "preprocessor_config.json").is_file():
        image_processor = read_json_if_present(path / "preprocessor_config.json")  # transformers 4, llava-hf
    if image_processor is not None:
        image_processor = {k: v for k, v in image_processor.items() if k not in _PROCESSOR_KEYS}
        name = image_processor.setdefault("image_processor_type", default_class)
        if name not in HF_IMAGE_PROCESSORS:
            raise ValueError(f"{path}: the image processor is {name!r}; moezoo rebuilds only "
                             f"{sorted(HF_IMAGE_PROCESSORS)}")
    template = settings.pop("chat_template", None)
    if (path / "chat_template.jinja").is_file():
        template = (path / "chat_template.jinja").read_text()
    elif (path / "chat_template.json").is_file():  # the legacy processor file
        template = read_json_if_present(path / "chat_template.json").get("chat_template")
    return {"image_processor": image_processor, "settings": settings, "chat_template": template}


def llava_processor(model: MultimodalMoEForCausalLM, tokenizer: Any, files: dict[str, Any],
                    source: str) -> Processor:
    """The :class:`Processor` of an imported LLaVA model: the checkpoint's image processor, tokenizer,
    image token and chat template, and the model's token count."""
    settings = files["settings"]
    # LlavaProcessor prefers the tokenizer's own `image_token` to its saved one.
    token = getattr(tokenizer, "image_token", None) or settings.get("image_token", "<image>")
    token_id = model.config.image_token_id
    if tokenizer.encode(token, add_special_tokens=False) != [token_id]:
        raise ValueError(f"{source}: the tokenizer encodes the image token {token!r} as "
                         f"{tokenizer.encode(token, add_special_tokens=False)}, not as the model's "
                         f"image_token_index [{token_id}]")
    processor = Processor(tokenizer, dict(model.num_tokens), image=model.preprocess_specs()["image"],
                          placeholders={"image": token}, chat_template=files["chat_template"])
    expected = _processor_token_count(settings, processor.image_processor.size)
    if expected is not None and expected != model.num_tokens["image"]:
        warnings.warn(f"{source}: its LlavaProcessor settings {settings} expand {token} into {expected} tokens, "
                      f"but the model takes {model.num_tokens['image']} per image; moezoo's processor uses the "
                      f"model's count", stacklevel=3)
    return processor


def _processor_token_count(settings: dict[str, Any], size: tuple[int, int]) -> int | None:
    """How many tokens ``LlavaProcessor`` expands an image placeholder into (``None``: not saved)."""
    if not settings.get("patch_size"):
        return None
    patch = settings["patch_size"]
    count = (size[0] // patch) * (size[1] // patch) + settings.get("num_additional_image_tokens", 0)
    return count - int(settings.get("vision_feature_select_strategy") == "default")


register_importer(MULTIMODAL_SPEC, "llava", import_llava, "LlavaForConditionalGeneration")
