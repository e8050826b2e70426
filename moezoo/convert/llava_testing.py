"""Tiny random transformers LLaVA checkpoints, for tests: any tower, any text family.

A ``LlavaForConditionalGeneration`` built from transformers' own config classes (a 2-layer
CLIP or SigLIP tower on 32x32 images, 8x8 patches; the tiny text model of
:mod:`moezoo.convert.testing`), with a word-level tokenizer that has ``<image>`` as a special
token and prepends ``<s>``, and a real ``LlavaProcessor`` (the tower's image processor at its
size, a chat template), written with ``save_pretrained``: exactly the files transformers
produces. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moezoo.convert.testing import randomize_, tiny_hf_config, tiny_tokenizer

IMAGE_SIZE = 32
PATCH_SIZE = 8
# tower -> (transformers config class, image processor class, its kwargs at IMAGE_SIZE, tokens beyond the patches)
TINY_TOWERS: dict[str, tuple[str, str, dict[str, Any], int]] = {
    "clip": ("CLIPVisionConfig", "CLIPImageProcessor", dict(size={"shortest_edge": IMAGE_SIZE},
                                                            crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), 1),
    "siglip": ("SiglipVisionConfig", "SiglipImageProcessor", dict(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}), 0),
}
# A LLaVA-1.5-style template over the tiny vocabulary: images first, then the text of each turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}{% endif %}"
    "{% if message['role'] == 'assistant' %} </s>{% endif %}\n{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
LAYOUTS = ("save_pretrained", "state_dict")


def tiny_llava_tokenizer(vocab_size: int) -> Any:
    """:func:`~moezoo.convert.testing.tiny_tokenizer` with ``USER:``, ``ASSISTANT:`` and ``<image>`` as the
    last three ids (``vocab_size`` in all) and ``<s>`` prepended to every text, as Llama tokenizers do."""
    from tokenizers import processors

    tokenizer = tiny_tokenizer(vocab_size - 3)
    tokenizer.add_tokens(["USER:", "ASSISTANT:"])
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", tokenizer.bos_token_id)])
    return tokenizer


def tiny_llava_config(tower: str = "clip", family: str = "llama", **overrides: Any) -> Any:
    """The ``LlavaConfig`` of a tiny LLaVA: ``tower`` in :data:`TINY_TOWERS`, ``family`` a text family of
    :data:`~moezoo.convert.testing.TINY_FAMILIES`; ``overrides`` are LlavaConfig fields."""
    import transformers

    if tower not in TINY_TOWERS:
        raise ValueError(f"tower={tower!r}; use one of {sorted(TINY_TOWERS)}")
    vision = getattr(transformers, TINY_TOWERS[tower][0])(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE)
    text = tiny_hf_config(family)
    return transformers.LlavaConfig(vision_config=vision, text_config=text, image_token_index=text.vocab_size - 1,
                                    **overrides)


def tiny_llava_model(tower: str = "clip", family: str = "llama", seed: int = 0, **overrides: Any) -> Any:
    """A random ``LlavaForConditionalGeneration`` in eval mode.

    Norm weights and biases are randomised too (a misplaced norm or bias cannot hide behind 1 or 0),
    and the tower and projector are initialised wider than the LLM (std 0.2), so the image visibly
    moves the logits.
    """
    import torch
    import transformers

    torch.manual_seed(seed)
    model = transformers.LlavaForConditionalGeneration(tiny_llava_config(tower, family, **overrides))
    return randomize_(model, lambda name: 0.02 if "language_model" in name or name.startswith("lm_head") else 0.2).eval()


def tiny_llava_processor(model: Any) -> Any:
    """The ``LlavaProcessor`` of a tiny LLaVA ``model`` (its tower's image processor, token count and strategy)."""
    import transformers

    config = model.config
    tower = "clip" if config.vision_config.model_type.startswith("clip") else "siglip"
    _, processor_class, kwargs, extra = TINY_TOWERS[tower]
    return transformers.LlavaProcessor(
        image_processor=getattr(transformers, processor_class)(**kwargs),
        tokenizer=tiny_llava_tokenizer(config.text_config.vocab_size), patch_size=PATCH_SIZE,
        vision_feature_select_strategy=config.vision_feature_select_strategy, num_additional_image_tokens=extra,
        chat_template=CHAT_TEMPLATE)


def tiny_llava_checkpoint(path: str | Path, tower: str = "clip", family: str = "llama", layout: str = "save_pretrained",
                          seed: int = 0, **overrides: Any) -> Any:
    """Write a tiny random LLaVA (weights, config, processor files) to ``path``; return the model.

    Args:
        layout: ``"save_pretrained"`` (the files transformers' ``save_pretrained`` writes: llava-hf's
            ``language_model.model.*`` keys, per-expert MoE weights) or ``"state_dict"`` (the
            in-memory ``model.language_model.*`` keys with fused experts, as state-dict tools save them).

    Example:
        >>> import os, tempfile
        >>> path = tempfile.mkdtemp()
        >>> tiny_llava_checkpoint(path, tower="clip", family="mixtral").config.text_config.model_type
        'mixtral'
        >>> sorted(os.listdir(path))  # doctest: +NORMALIZE_WHITESPACE
        ['chat_template.jinja', 'config.json', 'generation_config.json', 'model.safetensors',
         'processor_config.json', 'tokenizer.json', 'tokenizer_config.json']
    """
    from safetensors.torch import save_file

    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r}; use one of {LAYOUTS}")
    model = tiny_llava_model(tower, family, seed, **overrides)
    model.save_pretrained(str(path))
    tiny_llava_processor(model).save_pretrained(str(path))
    if layout == "state_dict":
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        if model.config.tie_word_embeddings:
            state.pop("lm_head.weight")  # safetensors stores a shared tensor once
        save_file(state, str(Path(path) / "model.safetensors"))  # over the one save_pretrained wrote
    return model
