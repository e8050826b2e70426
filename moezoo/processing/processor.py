"""The multimodal ``Processor``: text, images, audio and video in, the model's input dict out.

It plays the role of a transformers processor (``LlavaProcessor``): the text is taken
as given (a string or a list, padded on the left for generation), each placeholder
(``<image>``, ``<audio>``, ``<video>``) is expanded into as many copies as the
encoder + connector produce tokens, and each modality goes through its encoder's own
preprocessing. The output keys are transformers': ``input_ids``, ``attention_mask``,
``pixel_values`` (N_images, 3, H, W), ``input_features`` (N_audios, mel_bins, frames),
``pixel_values_videos`` (N_videos, F, 3, H, W); images, audio clips and videos are
flattened over the batch in the order their placeholders appear.

The preprocessing is described by JSON specs (see :mod:`moezoo.processing.image`,
:mod:`moezoo.processing.audio`), saved beside the weights in ``moezoo_processor.json``
with the tokenizer files, so a loaded model preprocesses exactly as it was trained
(open_clip's ``create_model_and_transforms`` idea).

A conversation becomes model inputs one way for inference and for training:
:meth:`Processor.encode_prompt` (the generation prompt) and :meth:`Processor.encode_example`
(the answered conversation, with labels; :mod:`moezoo.processing.chat`) render it with the
same chat template and tokenise the rendering alike, so the prompt's ids are the start of the
training example's.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

from moezoo.processing.chat import ChatEncoding
from moezoo.processing.tokenizer import load_tokenizer
from moezoo.processing.tokens import AUDIO, IMAGE, MODALITIES, VIDEO
from moezoo.utils.io import atomic_save_pretrained, atomic_write_text

PROCESSOR_NAME = "moezoo_processor.json"
DEFAULT_PLACEHOLDERS = {"image": IMAGE, "audio": AUDIO, "video": VIDEO}
# Modality -> the key of its preprocessed input in the model's input dict (transformers' names).
INPUT_KEYS = {"image": "pixel_values", "audio": "input_features", "video": "pixel_values_videos"}
# Every per-item media tensor a training example may carry, joined over a batch in order (dim 0): the inputs
# above and the grids of the processors whose token count follows the image size (Qwen3-VL's, as transformers
# names them).
MEDIA_KEYS = (*INPUT_KEYS.values(), "image_grid_thw", "video_grid_thw")
# The keys of moezoo_processor.json.
_KEYS = ("num_tokens", "image", "audio", "video_frames", "placeholders", "chat_template", "padding_side")


def _is_item(modality: str, x: Any) -> bool:
    """Whether ``x`` is one image / audio clip / video (rather than a list of them for one prompt).

    A video is a path, an array / tensor of frames, or a non-empty list of frames.
    """
    import numpy as np
    import torch
    from PIL import Image

    single = (Image.Image, np.ndarray, torch.Tensor, str, Path, bytes)
    if modality == "audio" and isinstance(x, tuple) and len(x) == 2 and isinstance(x[1], (int, float)):
        return True  # (waveform, sample_rate)
    if modality == "video" and isinstance(x, (list, tuple)):
        return bool(x) and all(isinstance(frame, (Image.Image, np.ndarray, torch.Tensor)) for frame in x)
    return isinstance(x, single)


class Processor(ChatEncoding):
    """Turns text with placeholders plus raw media into a model's input dict.

    Args:
        tokenizer: a transformers tokenizer that has each used placeholder as one token.
        num_tokens: modality -> tokens each placeholder expands to (the model's count).
        image: the image preprocessing spec (``None``: the model takes no images).
        audio: the audio preprocessing spec.
        video_frames: frames sampled per video (videos go through the image preprocessing).
        placeholders: modality -> placeholder string; default ``<image>``, ``<audio>``, ``<video>``.
        chat_template: a Jinja chat template; default the tokenizer's own.
        padding_side: where a batch of prompts is padded (``"left"`` for generation).

    Example:
        >>> from moezoo.processing.tokenizer import zoo_tokenizer
        >>> spec = {"kind": "simple", "size": [32, 32], "mean": [0.5] * 3, "std": [0.5] * 3}
        >>> proc = Processor(zoo_tokenizer(), {"image": 4}, image=spec)
        >>> from PIL import Image
        >>> out = proc(text="<image>\\nWhat colour?", images=[Image.new("RGB", (40, 30), "red")])
        >>> out["input_ids"].shape, out["pixel_values"].shape
        (torch.Size([1, 8]), torch.Size([1, 3, 32, 32]))
        >>> int((out["input_ids"] == 4).sum())  # <image> expanded into its 4 slots
        4
    """

    def __init__(self, tokenizer: Any, num_tokens: dict[str, int], image: dict | None = None,
                 audio: dict | None = None, video_frames: int | None = None,
                 placeholders: dict[str, str] | None = None, chat_template: str | None = None,
                 padding_side: str = "left"):
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side={padding_side!r} must be 'left' or 'right'")
        self.tokenizer = tokenizer
        self.image_spec, self.audio_spec, self.video_frames = image, audio, video_frames
        enabled = {"image": image is not None, "audio": audio is not None, "video": video_frames is not None}
        if video_frames is not None and image is None:
            raise ValueError("videos go through the image preprocessing: a video_frames setting needs an image spec")
        missing = [m for m, on in enabled.items() if on and num_tokens.get(m, 0) < 1]
        if missing:
            raise ValueError(f"num_tokens={num_tokens} lacks a positive token count for {missing}")
        self.num_tokens = {m: int(num_tokens[m]) for m in MODALITIES if enabled[m]}
        self.placeholders = {**DEFAULT_PLACEHOLDERS, **(placeholders or {})}
        self.chat_template = chat_template
        self.padding_side = padding_side

    # -- preprocessing of each modality, built on first use -------------------------------------------
    @property
    def modalities(self) -> list[str]:
        """The modalities this processor (and its model) takes."""
        return list(self.num_tokens)

    @cached_property
    def image_processor(self) -> Any:
        """``list of images -> (N, 3, H, W)`` (:func:`moezoo.processing.image.build_image_processor`)."""
        from moezoo.processing.image import build_image_processor

        return None if self.image_spec is None else build_image_processor(self.image_spec)

    @cached_property
    def audio_processor(self) -> Any:
        """``list of clips -> (N, mel_bins, frames)`` (:func:`moezoo.processing.audio.build_audio_processor`)."""
        from moezoo.processing.audio import build_audio_processor

        return None if self.audio_spec is None else build_audio_processor(self.audio_spec)

    @cached_property
    def video_processor(self) -> Any:
        """``list of videos -> (N, F, 3, H, W)`` (:class:`moezoo.processing.video.VideoProcessor`)."""
        from moezoo.processing.video import VideoProcessor

        return None if self.video_frames is None else VideoProcessor(self.image_processor, self.video_frames)

    def read_video_file(self, path: str | os.PathLike) -> list:
        """A video file as the training data pipeline hands it over: ``video_frames`` frames spread uniformly
        (:func:`moezoo.processing.video.read_video`)."""
        from moezoo.processing.video import read_video

        if self.video_frames is None:
            raise ValueError("this processor takes no video (no video_frames setting)")
        return read_video(path, self.video_frames)

    # -- the main call ---------------------------------------------------------------------------------
    def __call__(self, text: str | Sequence[str] | None = None, images: Sequence | None = None,
                 audios: Sequence | None = None, videos: Sequence | None = None, padding: bool = True,
                 return_tensors: str = "pt", **tokenizer_kwargs: Any) -> Any:
        """Tokenise ``text`` (placeholders expanded) and preprocess the media.

        Args:
            text: one prompt or a list of prompts, taken as given (render a conversation
                with :meth:`apply_chat_template` first).
            images / audios / videos: flat, in placeholder order over the whole batch, or one
                list per prompt (a prompt may have none).
            padding: pad a batch of prompts on ``padding_side``.
            return_tensors: ``"pt"`` (``None`` leaves lists).
            **tokenizer_kwargs: passed to the tokenizer (e.g. ``add_special_tokens``).

        Raises:
            ValueError: a prompt's placeholder count differs from the media given for it, the
                model takes no such modality, or the tokenizer lacks a placeholder token.
        """
        from transformers import BatchFeature

        if text is None:
            raise ValueError("text is required: it places each image / audio / video with its placeholder")
        texts = [text] if isinstance(text, str) else list(text)
        data = self.media_inputs(texts, images, audios, videos)
        expanded = [self.expand_placeholders(t) for t in texts]
        kwargs = {"padding": padding and len(texts) > 1, "return_tensors": return_tensors, **tokenizer_kwargs}
        if kwargs["padding"]:
            kwargs["padding_side"] = self.padding_side
        # Lists first, tensors once below: a single prompt, its offsets too, cost no extra conversions.
        encoded = self.tokenizer(expanded, **{**kwargs, "return_tensors": None})
        self._check_expansion(encoded["input_ids"], texts)
        row = 0 if isinstance(text, str) and return_tensors is None else slice(None)  # one prompt as lists: flat
        data.update(input_ids=encoded["input_ids"][row], attention_mask=encoded["attention_mask"][row])
        out = BatchFeature(data=data, tensor_type=return_tensors)
        if tokenizer_kwargs.get("return_offsets_mapping"):  # asked for (encode_example): passed on, as lists
            out["offset_mapping"] = encoded["offset_mapping"][row]
        return out

    def media_inputs(self, texts: list[str], images: Sequence | None = None, audios: Sequence | None = None,
                     videos: Sequence | None = None) -> dict[str, Any]:
        """The preprocessed media of ``texts`` by input key (``pixel_values``, ...), each checked against
        its placeholders in the texts (see :meth:`__call__` for the forms the media take)."""
        data: dict[str, Any] = {}
        for modality, media in zip(MODALITIES, (images, audios, videos)):
            flat = self._check_media(modality, texts, media)
            if flat:
                data[INPUT_KEYS[modality]] = getattr(self, f"{modality}_processor")(flat)
        return data

    def _check_media(self, modality: str, texts: list[str], media: Sequence | None) -> list:
        placeholder = self.placeholders[modality]
        counts = [t.count(placeholder) for t in texts]
        media = list(media) if media is not None else []
        if (sum(counts) or media) and modality not in self.num_tokens:
            raise ValueError(f"this model takes no {modality} input (it takes {self.modalities or 'text only'}); "
                             f"got {len(media)} {modality}(s) and {sum(counts)} {placeholder} placeholder(s)")
        nested = bool(media) and all(isinstance(m, list) and not _is_item(modality, m) for m in media)
        if nested:
            if len(media) != len(texts):
                raise ValueError(f"{len(media)} lists of {modality}s for {len(texts)} prompts; give one list per prompt")
            for i, (n, given) in enumerate(zip(counts, media)):
                if n != len(given):
                    raise ValueError(f"prompt {i} holds {n} {placeholder} placeholder(s) but {len(given)} "
                                     f"{modality}(s) were given for it")
            return [m for given in media for m in given]
        if sum(counts) != len(media):
            raise ValueError(f"the text holds {sum(counts)} {placeholder} placeholder(s) but {len(media)} "
                             f"{modality}(s) were given; put one {placeholder} where each {modality} goes")
        return media

    def expand_placeholders(self, text: str) -> str:
        """``text`` with each placeholder repeated as many times as its modality has tokens.

        Example:
            >>> from moezoo.processing.tokenizer import zoo_tokenizer
            >>> Processor(zoo_tokenizer(), {"image": 3}, image={"kind": "simple"}).expand_placeholders("<image>hi")
            '<image><image><image>hi'
        """
        for modality, n in self.num_tokens.items():
            placeholder = self.placeholders[modality]
            text = text.replace(placeholder, placeholder * n)
        return text

    def placeholder_ids(self) -> dict[str, int]:
        """Modality -> the token id of its placeholder (each must be one token of the tokenizer)."""
        key = tuple((m, self.placeholders[m]) for m in self.num_tokens)  # read on every call: kept per placeholders
        cached = self.__dict__.get("_placeholder_ids")
        if cached is not None and cached[0] == key:
            return dict(cached[1])
        out = {}
        for modality in self.num_tokens:
            placeholder = self.placeholders[modality]
            ids = self.tokenizer.encode(placeholder, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"the tokenizer encodes {placeholder!r} as {len(ids)} tokens {ids}; it must be one "
                                 f"special token (add it with tokenizer.add_special_tokens)")
            out[modality] = ids[0]
        self._placeholder_ids = (key, out)
        return dict(out)

    def _check_expansion(self, input_ids: Any, texts: list[str]) -> None:
        for modality, token_id in self.placeholder_ids().items():
            want = sum(t.count(self.placeholders[modality]) for t in texts) * self.num_tokens[modality]
            got = int((input_ids == token_id).sum()) if hasattr(input_ids, "sum") else \
                sum(row.count(token_id) for row in input_ids)
            if got != want:
                raise ValueError(f"the prompt tokenised to {got} {self.placeholders[modality]} tokens where "
                                 f"{want} were expected; the tokenizer splits or merges the placeholder")

    # -- decoding ----------------------------------------------------------------------------------------
    def batch_decode(self, ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> list[str]:
        """Decode each row of ``ids`` (the tokenizer's ``batch_decode``)."""
        return self.tokenizer.batch_decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    def decode(self, ids: Any, skip_special_tokens: bool = True, **kwargs: Any) -> str:
        """Decode one sequence of ``ids``."""
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens, **kwargs)

    # -- persistence -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The JSON of ``moezoo_processor.json`` (the tokenizer is saved beside it)."""
        values = (self.num_tokens, self.image_spec, self.audio_spec, self.video_frames, self.placeholders,
                  self.chat_template, self.padding_side)
        return dict(zip(_KEYS, values))

    def save_pretrained(self, path: str | Path) -> Path:
        """Write ``moezoo_processor.json`` and the tokenizer files into ``path`` (each atomically)."""
        path = Path(path)
        atomic_save_pretrained(self.tokenizer, path)
        atomic_write_text(path / PROCESSOR_NAME, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path) -> Processor:
        """Read a processor written by :meth:`save_pretrained`."""
        path = Path(path)
        try:
            data = json.loads((path / PROCESSOR_NAME).read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read {path / PROCESSOR_NAME}: {err}") from None
        unknown = sorted(set(data) - set(_KEYS))
        if unknown:
            raise ValueError(f"{path / PROCESSOR_NAME} has unknown keys {unknown}; known: {sorted(_KEYS)}")
        return cls(load_tokenizer(path), data["num_tokens"], image=data.get("image"), audio=data.get("audio"),
                   video_frames=data.get("video_frames"), placeholders=data.get("placeholders"),
                   chat_template=data.get("chat_template"), padding_side=data.get("padding_side", "left"))

