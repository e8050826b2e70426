"""A tiny random transformers ``Qwen3VLMoeForConditionalGeneration`` checkpoint, processor files included, for
tests and benchmarks: the config of :func:`moezoo.models.qwen3_vl.testing.tiny_config` written as transformers'
(:func:`moezoo.convert.qwen3_vl.hf_config`), random weights, ``save_pretrained`` (the hub key layout), and a
word-level tokenizer with Qwen's chat and vision tokens and the timestamps ``<0.0 seconds>`` ... as tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moezoo.convert.qwen3_vl import hf_config
from moezoo.convert.testing import randomize_, tiny_tokenizer
from moezoo.models.qwen3_vl.testing import tiny_config
from moezoo.processing.qwen_vl import (
    IMAGE_TOKEN,
    QWEN3_VL_IMAGE,
    QWEN3_VL_VIDEO,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
)

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# Small images and videos: a 32 x 32 image is 8 x 8 patches of 4 pixels, 16 tokens after the 2 x 2 merge.
IMAGE_SETTINGS = {**QWEN3_VL_IMAGE, "patch_size": 4, "size": {"shortest_edge": 256, "longest_edge": 4096}}
VIDEO_SETTINGS = {**QWEN3_VL_VIDEO, "patch_size": 4, "size": {"shortest_edge": 256, "longest_edge": 16384}}


def tiny_qwen3_vl_tokenizer() -> Any:
    """:func:`~moezoo.convert.testing.tiny_tokenizer` with ``<|im_start|>``, ``<|im_end|>``, the four vision
    tokens and 100 timestamp tokens, and the chat template."""
    tokenizer = tiny_tokenizer(64)
    tokenizer.add_special_tokens({"additional_special_tokens": [
        "<|im_start|>", "<|im_end|>", IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END]})
    tokenizer.add_tokens(["user", "assistant", "\n"] + [f"<{i / 10:.1f} seconds>" for i in range(100)])
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def tiny_qwen3_vl_config(tokenizer: Any) -> Any:
    """The moezoo config of the tiny model, its special ids those of ``tokenizer``."""
    ids = {name: tokenizer.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", IMAGE_TOKEN), ("video_token_id", VIDEO_TOKEN), ("vision_start_token_id", VISION_START),
        ("vision_end_token_id", VISION_END))}
    return tiny_config(vocab_size=len(tokenizer), **ids)


def tiny_qwen3_vl_checkpoint(path: str | Path, seed: int = 0, layout: str = "hub") -> Any:
    """Write the tiny random checkpoint (weights, config, tokenizer, image / video processors, chat template) to
    ``path``; return the transformers model (eval mode, SDPA attention).

    ``layout``: ``"hub"`` stores the fused experts as the published checkpoints do, ``gate_up_proj (E, H, 2I)``
    and ``down_proj (E, I, H)``; ``"save_pretrained"`` keeps what transformers 5.24's ``save_pretrained``
    writes, its in-memory ``(E, 2I, H)`` / ``(E, H, I)``."""
    import torch
    import transformers

    tokenizer = tiny_qwen3_vl_tokenizer()
    config = transformers.Qwen3VLMoeConfig(**hf_config(tiny_qwen3_vl_config(tokenizer)))
    torch.manual_seed(seed)
    model = transformers.Qwen3VLMoeForConditionalGeneration(config)
    randomize_(model, lambda name: 0.5 if name.endswith("mlp.gate.weight") else 0.05).eval()
    model.save_pretrained(str(path))
    if layout == "hub":
        from safetensors.torch import load_file, save_file

        file = Path(path) / "model.safetensors"
        state = load_file(str(file))
        experts = ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")
        state = {k: v.transpose(1, 2).contiguous() if k.endswith(experts) else v for k, v in state.items()}
        save_file(state, str(file), metadata={"format": "pt"})
    elif layout != "save_pretrained":
        raise ValueError(f"layout={layout!r}; use 'hub' or 'save_pretrained'")
    processor = transformers.Qwen3VLProcessor(
        image_processor=transformers.Qwen2VLImageProcessor(**IMAGE_SETTINGS),
        video_processor=transformers.Qwen3VLVideoProcessor(**VIDEO_SETTINGS), tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE)
    processor.save_pretrained(str(path))
    return model
