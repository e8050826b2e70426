"""``model.save_pretrained(dir, format="hf")`` of a multimodal model: a transformers LLaVA checkpoint.

Writes what ``LlavaForConditionalGeneration.save_pretrained`` and ``LlavaProcessor.save_pretrained``
write (transformers 5.24): ``config.json``, safetensors in the ``save_pretrained`` key layout
(:mod:`moezoo.convert.llava`), ``generation_config.json``, and the processor files (tokenizer,
``processor_config.json`` with the image processor, ``patch_size``,
``vision_feature_select_strategy`` and ``num_additional_image_tokens``, ``chat_template.jinja``).
``transformers.LlavaForConditionalGeneration.from_pretrained(dir)`` then gives the same logits,
and ``AutoProcessor.from_pretrained(dir)`` the same inputs.

A model transformers cannot express (another tower, an audio encoder, video, a connector other
than ``mlp2x_gelu``, bidirectional image attention, an LLM no text family fits) gets a
``ValueError`` naming what stands in the way, before anything is written. It registers as the
multimodal family's exporter (:meth:`~moezoo.models.spec.ArchitectureSpec.register_exporter`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from moezoo.convert.hf_export import dtype_name, generation_config, write_hf_dir
from moezoo.convert.llava import llava_config, llava_problems, moezoo_to_llava
from moezoo.models.multimodal.spec import MULTIMODAL_SPEC
from moezoo.processing.image import HF_IMAGE_PROCESSORS


def export_llava(model: Any, path: str | Path, expert_layout: str = "per_expert",
                 max_shard_size: int | None = None) -> Path:
    """Write the :class:`~moezoo.models.multimodal.MultimodalMoEForCausalLM` ``model`` as a LLaVA checkpoint.

    Args:
        model: a multimodal model with a transformers CLIP / SigLIP tower (``hf_vision``).
        path: the output dir (created).
        expert_layout: ``"per_expert"`` (the keys transformers' ``save_pretrained`` writes) or
            ``"fused"`` (transformers 5's in-memory keys, with 3-D expert tensors).
        max_shard_size: bytes per safetensors shard; ``None`` writes one ``model.safetensors``.

    Raises:
        ValueError: the model has no LLaVA equivalent (every reason listed); nothing is written.

    Example:
        >>> import tempfile, moezoo
        >>> model = moezoo.create_model("mm_tiny_timm")
        >>> export_llava(model, tempfile.mkdtemp())  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: cannot export as a transformers LLaVA checkpoint: the image encoder is 'timm'; ...
    """
    config = model.config
    problems = llava_problems(config)
    if not problems:
        problems = _tower_problems(model.vision.vision_tower) + _processor_problems(model)
    if problems:
        raise ValueError("cannot export as a transformers LLaVA checkpoint: " + "; ".join(problems))
    hf_config = llava_config(config, dict(config.vision.vision_config), dtype_name(model.llm.embed_tokens.weight))
    state = moezoo_to_llava(model.state_dict(), config.llm, expert_layout)
    return write_hf_dir(path, state, hf_config, max_shard_size, generation_config(config.llm), _hf_processor(model))


def _tower_problems(tower: Any) -> list[str]:
    """Why ``tower``'s weights are not a plain transformers tower's (an upcycled MLP, say)."""
    import transformers

    with torch.device("meta"):
        plain = transformers.AutoModel.from_config(tower.config)
    expected = {k: tuple(v.shape) for k, v in plain.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tower.state_dict().items()}
    if expected == found:
        return []
    extra, missing = sorted(set(found) - set(expected)), sorted(set(expected) - set(found))
    return [f"the vision tower's weights are not a plain {type(plain).__name__}'s (extra {extra[:5]}, "
            f"missing {missing[:5]})"]


def _processor_problems(model: Any) -> list[str]:
    problems = []
    spec = _image_spec(model)
    if spec.get("kind") != "hf_image" or spec.get("class") not in HF_IMAGE_PROCESSORS:
        problems.append(f"the image preprocessing is {spec.get('kind')!r} {spec.get('class', '')}; a LLaVA "
                        f"checkpoint carries a transformers image processor, one of {sorted(HF_IMAGE_PROCESSORS)}")
    tokenizer = model.tokenizer
    if tokenizer is not None:
        token, token_id = _image_token(model), model.config.image_token_id
        ids = tokenizer.encode(token, add_special_tokens=False)
        if ids != [token_id]:
            problems.append(f"the tokenizer encodes the image token {token!r} as {ids}, not as the model's "
                            f"image_token_id [{token_id}]")
    return problems


def _image_spec(model: Any) -> dict[str, Any]:
    processor = model.processor
    return processor.image_spec if processor is not None else model.vision.preprocess_spec()


def _image_token(model: Any) -> str:
    if model.processor is not None:
        return model.processor.placeholders["image"]
    return model.tokenizer.convert_ids_to_tokens(model.config.image_token_id)


def _hf_processor(model: Any) -> Any:
    """The ``LlavaProcessor`` that feeds the exported model (the image processor alone without a tokenizer)."""
    import transformers

    spec = _image_spec(model)
    image_processor = getattr(transformers, HF_IMAGE_PROCESSORS[spec["class"]]).from_dict(dict(spec["config"]))
    tokenizer = model.tokenizer
    if tokenizer is None:
        return image_processor
    tower = model.vision.vision_tower
    patch = tower.config.patch_size
    patches = (tower.config.image_size // patch) ** 2
    template = getattr(model.processor, "chat_template", None) or getattr(tokenizer, "chat_template", None)
    return transformers.LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch,
        vision_feature_select_strategy=model.config.vision.select_strategy,
        # CLIP's CLS token: the positions beyond the patches (SigLIP has none).
        num_additional_image_tokens=tower.embeddings.num_positions - patches,
        chat_template=template, image_token=_image_token(model))


MULTIMODAL_SPEC.register_exporter(export_llava)
