"""The Qwen3-VL processor: text, images and videos in, transformers' ``Qwen3VLProcessor`` outputs out.

Each ``<|image_pad|>`` in the text becomes its image's ``t h w / merge²`` copies and each ``<|video_pad|>`` its
video's timestamped frames (:mod:`moezoo.processing.qwen_vl`, which runs transformers' own image and video
processors), in the order they appear over the batch; the tokenizer then gives ``input_ids`` and
``attention_mask`` (left padding), and ``mm_token_type_ids`` marks 0 text, 1 image, 2 video tokens, as
``ProcessorMixin.create_mm_token_type_ids`` does. Prompts are rendered with the checkpoint's chat template.

Training examples (:meth:`Qwen3VLProcessor.encode_example`) follow :mod:`moezoo.processing.chat`: the answered
conversation rendered by the same template, labels ``-100`` except on each assistant answer and its
``<|im_end|>``. A message whose text holds ``<|image_pad|>`` / ``<|video_pad|>`` (what the training data's
``<image>`` becomes) is given to the template as parts, an image or video part at each placeholder, so the
template writes ``<|vision_start|>`` ... ``<|vision_end|>`` around it as it does for transformers' parts.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from moezoo.processing.chat import (
    adds_special_tokens,
    assistant_spans,
    conversation_media,
    example_features,
    to_message,
)
from moezoo.processing.qwen_vl import (
    IMAGE_TOKEN,
    VIDEO_TOKEN,
    VISION_END,
    VISION_START,
    QwenVLImageProcessor,
    QwenVLVideoProcessor,
    mm_token_types,
)
from moezoo.processing.tokenizer import load_tokenizer
from moezoo.processing.video import VideoClip
from moezoo.utils.io import atomic_save_pretrained, read_json_if_present

# Keys of saved processor dicts that name classes rather than set the image / video processors.
_CLASS_KEYS = ("processor_class", "auto_map", "image_processor_type", "video_processor_type")
# A placeholder in a message's text, with the vision markers around it if the text already has them.
_PLACEHOLDER = re.compile(f"(?:{re.escape(VISION_START)})?({re.escape(IMAGE_TOKEN)}|{re.escape(VIDEO_TOKEN)})"
                          f"(?:{re.escape(VISION_END)})?")


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

    # What the training data pipeline (moezoo.data.pipeline.SampleProcessor) asks of a processor: the data's
    # <image> / <video> become these. Qwen3-VL's token count per image follows the image's size (its grid).
    placeholders: ClassVar[dict[str, str]] = {"image": IMAGE_TOKEN, "video": VIDEO_TOKEN}
    modalities: ClassVar[list[str]] = ["image", "video"]

    def read_video_file(self, path: str | os.PathLike) -> VideoClip:
        """A video file as the training data pipeline hands it over: the frames the video processor samples
        (its ``fps``, from the file's own rate), decoded and stamped by where they sit in the file
        (:meth:`~moezoo.processing.qwen_vl.QwenVLVideoProcessor.read`)."""
        return self.video_processor.read(path)

    def apply_chat_template(self, conversation: list[dict[str, Any]], add_generation_prompt: bool = True,
                            **kwargs: Any) -> str:
        """The conversation rendered with the chat template (a string for :meth:`__call__`).

        Messages may be transformers' ``{"role", "content"}`` (a string or a list of parts) or LLaVA's
        ``{"from", "value"}``; a placeholder in a string content becomes an image / video part (module docstring).
        """
        if self.chat_template is None:
            raise ValueError("this processor has no chat template (the checkpoint's tokenizer files carry none)")
        return self.tokenizer.apply_chat_template(self._messages(conversation), chat_template=self.chat_template,
                                                  tokenize=False, add_generation_prompt=add_generation_prompt,
                                                  **kwargs)

    def encode_example(self, conversation: list[dict[str, Any]], images: Sequence | None = None,
                       videos: Sequence | None = None, fps: Sequence[float | None] | float | None = None,
                       return_tensors: str | None = "pt") -> Any:
        """A training example: the answered ``conversation`` as the model's inputs, with ``labels``.

        ``input_ids`` are :meth:`__call__`'s ids of ``apply_chat_template(conversation, add_generation_prompt=False)``;
        ``labels`` are ``-100`` except on every assistant answer and its end-of-turn tokens (``<|im_end|>``; the
        ``\\n`` after it separates turns and carries no loss), as :mod:`moezoo.processing.chat` marks them.
        Media may be given here or carried by the parts (``{"type": "image", "image" | "path": ...}``).

        Args:
            return_tensors: ``"pt"`` (``(1, T)`` tensors) or ``None`` (lists of ids; the media stay tensors).

        Raises:
            ConversationError: no assistant turn, or a template that does not render the generation prompt
                as the start of the answered turn.

        Example:
            >>> from PIL import Image
            >>> from moezoo.convert.qwen3_vl_testing import IMAGE_SETTINGS, tiny_qwen3_vl_tokenizer
            >>> proc = Qwen3VLProcessor(tiny_qwen3_vl_tokenizer(), IMAGE_SETTINGS)
            >>> enc = proc.encode_example([{"role": "user", "content": "<|image_pad|>\\nw4 w5"},
            ...                            {"role": "assistant", "content": "w7"}],
            ...                           images=[Image.new("RGB", (32, 32))])
            >>> sorted(enc)
            ['attention_mask', 'image_grid_thw', 'input_ids', 'labels', 'mm_token_type_ids', 'pixel_values']
            >>> proc.tokenizer.decode(enc["labels"][0][enc["labels"][0] != -100])
            'w7 <|im_end|>'
        """
        from transformers import BatchFeature

        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors={return_tensors!r}; encode_example gives 'pt' tensors or None (lists)")
        messages = self._messages(conversation)
        text = self.apply_chat_template(messages, add_generation_prompt=False)
        spans = assistant_spans(messages, lambda m, prompt: self.apply_chat_template(m, prompt), text,
                                (IMAGE_TOKEN, VIDEO_TOKEN))
        images, videos = self._media_of(conversation, images, videos)
        data, expansions = self._media([text], images, videos, fps)

        def expand(prefix: str) -> str:  # a prefix of the text holds the first of its media, expanded alike
            return _expand_all([prefix], expansions)[0]

        expanded = expand(text)
        if getattr(self.tokenizer, "is_fast", False):
            tokens = self.tokenizer(expanded, return_offsets_mapping=True)
            input_ids, starts = tokens["input_ids"], [start for start, _ in tokens["offset_mapping"]]
        else:
            input_ids, starts = self.tokenizer(expanded)["input_ids"], None
        types = mm_token_types(torch.tensor(input_ids), self.image_token_id, self.video_token_id).tolist()
        text_data = example_features(text, spans, input_ids, starts, expand,
                                     lambda t: self.tokenizer(expand(t))["input_ids"],
                                     frozenset({self.image_token_id, self.video_token_id}), return_tensors,
                                     mm_token_type_ids=types)
        return BatchFeature({**data, **text_data})

    def _messages(self, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The conversation as template messages, each placeholder in a string content an image / video part."""
        out = []
        for i, message in enumerate(conversation):
            message = to_message(message, i, self.placeholders, keep_parts=True)
            content = message["content"]
            if isinstance(content, str) and _PLACEHOLDER.search(content):
                pieces = _PLACEHOLDER.split(content)  # text, token, text, token, ..., text
                parts = [{"type": "image" if p == IMAGE_TOKEN else "video"} if k % 2 else {"type": "text", "text": p}
                         for k, p in enumerate(pieces) if k % 2 or p]
                message = {**message, "content": parts}
            out.append(message)
        return out

    def encode_prompt(self, conversation: list[dict[str, Any]], images: Sequence | None = None,
                      videos: Sequence | None = None, fps: Sequence[float | None] | float | None = None) -> Any:
        """The model's inputs for answering ``conversation``: :meth:`apply_chat_template` with the generation
        prompt, then :meth:`__call__` with the media given, or else those the parts carry, in their order."""
        images, videos = self._media_of(conversation, images, videos)
        return self(self.apply_chat_template(conversation, add_generation_prompt=True), images, videos, fps)

    @staticmethod
    def _media_of(conversation: list[dict[str, Any]], images: Sequence | None,
                  videos: Sequence | None) -> tuple[Sequence | None, Sequence | None]:
        """The images and videos given, each modality not given taken from the conversation's parts."""
        carried = conversation_media(conversation)
        return (carried["images"] if images is None else images), (carried["videos"] if videos is None else videos)

    def __call__(self, text: str | Sequence[str], images: Sequence | None = None, videos: Sequence | None = None,
                 fps: Sequence[float | None] | float | None = None, return_tensors: str = "pt",
                 audios: Sequence | None = None, add_special_tokens: bool = True) -> Any:
        """Tokenise ``text`` with every placeholder expanded and preprocess the media (flat, in placeholder order).

        ``audios`` and ``add_special_tokens`` are the other processors' arguments (``moezoo chat`` and
        ``moezoo demo`` pass them to every processor): Qwen3-VL hears nothing, so audio is refused.

        Raises:
            ValueError: the placeholders in the text and the images / videos given differ in number, or audio.
        """
        from transformers import BatchFeature

        if audios:
            raise ValueError("Qwen3-VL-MoE takes images and videos, not audio")
        texts = [text] if isinstance(text, str) else list(text)
        data, expansions = self._media(texts, images, videos, fps)
        texts = _expand_all(texts, expansions)
        encoded = self.tokenizer(texts, padding=len(texts) > 1, padding_side=self.padding_side, return_tensors="pt",
                                 add_special_tokens=add_special_tokens)
        ids = encoded["input_ids"]
        data.update(input_ids=ids, attention_mask=encoded["attention_mask"],
                    mm_token_type_ids=mm_token_types(ids, self.image_token_id, self.video_token_id))
        return BatchFeature(data=data, tensor_type=return_tensors)

    def adds_special_tokens(self, rendered: str) -> bool:
        """Whether a rendered chat is tokenised with the tokenizer's special tokens (never doubling a BOS the
        template wrote), as for every processor: :func:`moezoo.processing.chat.adds_special_tokens`."""
        return adds_special_tokens(self.tokenizer, rendered)

    def _media(self, texts: list[str], images: Sequence | None, videos: Sequence | None,
               fps: Sequence[float | None] | float | None) -> tuple[dict[str, Any], list[tuple[str, list[str]]]]:
        """The media inputs, and each placeholder with what its media's occurrences become, in order over
        ``texts`` (for :func:`_expand_all`).

        Raises:
            ValueError: the placeholders in the texts and the images / videos given differ in number.
        """
        data: dict[str, Any] = {}
        images, videos = list(images or []), list(videos or [])
        for token, media, name in ((IMAGE_TOKEN, images, "images"), (VIDEO_TOKEN, videos, "videos")):
            found = sum(t.count(token) for t in texts)
            if found != len(media):
                raise ValueError(f"the text has {found} {token} placeholders but {len(media)} {name} were given")
        expansions: list[tuple[str, list[str]]] = []
        if images:
            out = self.image_processor(images)
            data.update(pixel_values=out["pixel_values"], image_grid_thw=out["image_grid_thw"])
            expansions.append((IMAGE_TOKEN, self.image_processor.placeholders(out["image_grid_thw"])))
        if videos:
            out = self.video_processor(videos, fps=fps)
            data.update(pixel_values_videos=out["pixel_values_videos"], video_grid_thw=out["video_grid_thw"])
            expansions.append((VIDEO_TOKEN, self.video_processor.placeholders(out["video_grid_thw"],
                                                                              out["timestamps"])))
        return data, expansions

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
        settings = read_json_if_present(path / "processor_config.json")
        image = settings.get("image_processor") or read_json_if_present(path / "preprocessor_config.json")
        video = settings.get("video_processor") or read_json_if_present(path / "video_preprocessor_config.json")
        image = {k: v for k, v in image.items() if k not in _CLASS_KEYS} or None
        video = {k: v for k, v in video.items() if k not in _CLASS_KEYS} or None
        template = (settings.get("chat_template")
                    or read_json_if_present(path / "chat_template.json").get("chat_template"))
        if (path / "chat_template.jinja").is_file():
            template = (path / "chat_template.jinja").read_text()
        return cls(tokenizer, image, video, chat_template=template)


def _expand_all(texts: list[str], expansions: list[tuple[str, list[str]]]) -> list[str]:
    """``texts`` with each placeholder of ``expansions`` replaced, in order, by its replacements."""
    for token, replacements in expansions:
        texts = _expand(texts, token, replacements)
    return texts


def _expand(texts: list[str], token: str, replacements: list[str]) -> list[str]:
    """Each occurrence of ``token`` over ``texts``, in order, replaced by the next of ``replacements``."""
    marker = "\x00"  # the expansions themselves hold the token: mark first, then fill
    pending = iter(replacements)
    out = []
    for text in texts:
        pieces = text.split(token)
        out.append(pieces[0] + "".join(marker + piece for piece in pieces[1:]))
    return ["".join(next(pending) + piece if i else piece for i, piece in enumerate(t.split(marker))) for t in out]
