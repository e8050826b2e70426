"""The Qwen3-VL processor: text, images and videos in, transformers' ``Qwen3VLProcessor`` outputs out.

Each ``<|image_pad|>`` in the text becomes its image's ``t h w / merge²`` copies and each ``<|video_pad|>`` its
video's timestamped frames (:mod:`moezoo.processing.qwen_vl`, which runs transformers' own image and video
processors), in the order they appear over the batch; the tokenizer then gives ``input_ids`` and
``attention_mask`` (left padding), and ``mm_token_type_ids`` marks 0 text, 1 image, 2 video tokens, as
``ProcessorMixin.create_mm_token_type_ids`` does. Prompts are rendered with the checkpoint's chat template.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from moezoo.processing.qwen_vl import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    QwenVLImageProcessor,
    QwenVLVideoProcessor,
)
from moezoo.processing.tokenizer import load_tokenizer
from moezoo.utils.io import atomic_save_pretrained

# Keys of saved processor dicts that name classes rather than set the image / video processors.
_CLASS_KEYS = ("processor_class", "auto_map", "image_processor_type", "video_processor_type")


class Qwen3VLProcessor:
    """Feeds a :class:`~moezoo.models.qwen3_vl.Qwen3VLMoEForConditionalGeneration`.

    Args:
        tokenizer: the checkpoint's tokenizer (``<|image_pad|>``, ``<|video_pad|>``, ``<|vision_start|>`` and
            ``<|vision_end|>`` are single tokens).
        image: the image-processor dict (``preprocessor_config.json``); ``None``: Qwen3-VL's.
        video: the video-processor dict (``video_preprocessor_config.json``); ``None``: Qwen3-VL's.
        chat_template: the Jinja chat template (default: the tokenizer's).
        padding_side: where a batch of prompts is padded.
    """

    def __init__(self, tokenizer: Any, image: dict | None = None, video: dict | None = None,
                 chat_template: str | None = None, padding_side: str = "left"):
        self.tokenizer = tokenizer
        self.image_processor = QwenVLImageProcessor(image)
        self.video_processor = QwenVLVideoProcessor(video)
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.padding_side = padding_side
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        self.video_token_id = tokenizer.convert_tokens_to_ids(VIDEO_TOKEN)

    def apply_chat_template(self, conversation: list[dict[str, Any]], add_generation_prompt: bool = True,
                            **kwargs: Any) -> str:
        """The conversation rendered with the chat template (a string for :meth:`__call__`)."""
        if self.chat_template is None:
            raise ValueError("this processor has no chat template (the checkpoint's tokenizer files carry none)")
        return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def encode_prompt(self, conversation: list[dict[str, Any]], images: Sequence | None = None,
                      videos: Sequence | None = None, fps: Sequence[float | None] | float | None = None) -> Any:
        """The model's inputs for answering ``conversation``: :meth:`apply_chat_template` with the generation
        prompt, then :meth:`__call__` with the media in the order of their parts."""
        return self(self.apply_chat_template(conversation, add_generation_prompt=True), images, videos, fps)

    def __call__(self, text: str | Sequence[str], images: Sequence | None = None, videos: Sequence | None = None,
                 fps: Sequence[float | None] | float | None = None, return_tensors: str = "pt") -> Any:
        """Tokenise ``text`` with every placeholder expanded and preprocess the media (flat, in placeholder order).

        Raises:
            ValueError: the placeholders in the text and the images / videos given differ in number.
        """
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        data: dict[str, Any] = {}
        images, videos = list(images or []), list(videos or [])
        for token, media, name in ((IMAGE_TOKEN, images, "images"), (VIDEO_TOKEN, videos, "videos")):
            found = sum(t.count(token) for t in texts)
            if found != len(media):
                raise ValueError(f"the text has {found} {token} placeholders but {len(media)} {name} were given")
        if images:
            out = self.image_processor(images)
            data.update(pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"])
            texts = _expand(texts, IMAGE_TOKEN, self.image_processor.placeholders(out["image_grid_thw"]))
        if videos:
            out = self.video_processor(videos, fps=fps)
            data.update(pixel_values_videos=out["pixel_values_videos"], video_grid_thw=out["video_grid_thw"])
            texts = _expand(texts, VIDEO_TOKEN, self.video_processor.placeholders(out["video_grid_thw"],
                                                                                  out["timestamps"]))
        encoded = self.tokenizer(texts, padding=len(texts) > 1, padding_side=self.padding_side, return_tensors="pt")
        ids = encoded["input_ids"]
        types = torch.zeros_like(ids).masked_fill(ids == self.image_token_id, 1).masked_fill(
            ids == self.video_token_id, 2)
        data.update(input_ids=ids, attention_mask=encoded["attention_mask"], mm_token_type_ids=types)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def batch_decode(self, ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def to_transformers(self) -> Any:
        """transformers' ``Qwen3VLProcessor`` with the same tokenizer, image / video processors and template."""
        import transformers

        return transformers.Qwen3VLProcessor(
            image_processor=self.image_processor.processor, video_processor=self.video_processor.processor,
            tokenizer=self.tokenizer, chat_template=self.chat_template)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write transformers' processor files (tokenizer, ``processor_config.json``, ``chat_template.jinja``):
        :meth:`from_pretrained` and ``transformers.AutoProcessor.from_pretrained`` read them."""
        atomic_save_pretrained(self.to_transformers(), Path(path))
        return Path(path)

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Qwen3VLProcessor | None:
        """The processor of a dir's transformers processor files (``processor_config.json``, or the older
        ``preprocessor_config.json`` / ``video_preprocessor_config.json`` of the hub checkpoints;
        ``chat_template.jinja`` or the legacy ``chat_template.json``, else the tokenizer's template); ``None``
        when the dir has no tokenizer."""
        path = Path(path)
        tokenizer = load_tokenizer(path, required=False)
        if tokenizer is None:
            return None
        settings = _read_json(path / "processor_config.json")
        image = settings.get("image_processor") or _read_json(path / "preprocessor_config.json")
        video = settings.get("video_processor") or _read_json(path / "video_preprocessor_config.json")
        image = {k: v for k, v in image.items() if k not in _CLASS_KEYS} or None
        video = {k: v for k, v in video.items() if k not in _CLASS_KEYS} or None
        template = settings.get("chat_template") or _read_json(path / "chat_template.json").get("chat_template")
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text()
        return cls(tokenizer, image, video, chat_template=template)


def _read_json(file: Path) -> dict[str, Any]:
    if not file.is_file():
        return {}
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err})") from None


def _expand(texts: list[str], token: str, replacements: list[str]) -> list[str]:
    """Each occurrence of ``token`` over ``texts``, in order, replaced by the next of ``replacements``."""
    marker = "\x00"  # the expansions themselves hold the token: mark first, then fill
    pending = iter(replacements)
    out = []
    for text in texts:
        pieces = text.split(token)
        out.append(pieces[0] + "".join(marker + piece for piece in pieces[1:]))
    return ["".join(next(pending) + piece if i else piece for i, piece in enumerate(t.split(marker))) for t in out]
