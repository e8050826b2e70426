"""One user turn answered: the code path ``moezoo chat`` and ``moezoo demo`` share.

:func:`build_inputs` turns a prompt and media files into the model's inputs: one user turn of the
model's chat template (with a system turn if given), each medium's placeholder put in front of the
prompt unless the prompt already places it, tokenised as training tokenises
(:func:`~moezoo.processing.chat.adds_special_tokens`), images read by the loader training uses.
:func:`reply` decodes the answer, greedily unless a temperature is given, and keeps the inputs and
the token ids, so a caller can look at what the model did (the demo re-runs the whole exchange to
show which experts handled each token). Both commands print or show ``reply(...).text``, so for the
same prompt and files they give the same answer.

Example:
    >>> import moezoo
    >>> model = moezoo.create_model("moe_lm_tiny")
    >>> answer = reply(model, "Hi", max_new_tokens=3)
    >>> answer.sequence.shape[1] == answer.inputs["input_ids"].shape[1] + len(answer.new_ids)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moezoo.processing.chat import adds_special_tokens
from moezoo.processing.image import load_image


def build_inputs(model: nn.Module, prompt: str, images: Sequence[str] = (), audios: Sequence[str] = (),
                 videos: Sequence[str] = (), system: str | None = None) -> dict:
    """The model's inputs for one user turn holding ``prompt`` and the media files (paths).

    Raises:
        FileNotFoundError: a media file does not exist.
        ValueError: media given to a text model.
    """
    for path in (*images, *audios, *videos):
        if not Path(path).is_file():
            raise FileNotFoundError(f"no such file: {path}")
    processor = model.processor
    if processor is None:
        if images or audios or videos:
            raise ValueError(f"{type(model).__name__} is a text model: it takes no images, audio or video")
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        tok = model.tokenizer
        if not getattr(tok, "chat_template", None):
            return dict(tok(prompt, return_tensors="pt"))
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return dict(tok(text, return_tensors="pt", add_special_tokens=adds_special_tokens(tok, text)))
    media = {"image": list(images), "audio": list(audios), "video": list(videos)}
    for m, files in media.items():
        if files and m not in processor.placeholders:
            raise ValueError(f"{type(model).__name__} takes no {m}: it takes {', '.join(processor.placeholders)}")
    prefix = "".join(f"{processor.placeholders[m]}\n" * len(files) for m, files in media.items()
                     if files and processor.placeholders.get(m, "\0") not in prompt)
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prefix + prompt}]
    text = processor.apply_chat_template(messages)
    return processor(text=text, images=_images(media["image"]) or None, audios=media["audio"] or None,
                     videos=media["video"] or None, add_special_tokens=processor.adds_special_tokens(text))


def _images(paths: list[str]) -> list:
    return [load_image(path) for path in paths]  # the loader training uses: transparency onto white


@dataclass
class Reply:
    """A decoded answer and what produced it.

    Attributes:
        text: the new tokens decoded without special tokens, stripped (what ``moezoo chat`` prints).
        inputs: the model's inputs (:func:`build_inputs`).
        sequence: ``(1, T_prompt + T_new)`` the prompt ids followed by the new ids.
        new_ids: ``(T_new,)`` the generated ids (an end-of-turn token included, when the model stopped on one).
    """

    text: str
    inputs: dict[str, Any]
    sequence: torch.Tensor
    new_ids: torch.Tensor


def reply(model: nn.Module, prompt: str, images: Sequence[str] = (), audios: Sequence[str] = (),
          videos: Sequence[str] = (), system: str | None = None, max_new_tokens: int = 64,
          temperature: float = 0.0, seed: int = 0) -> Reply:
    """Answer ``prompt`` (with the media files) in one user turn: greedy for ``temperature`` 0, else
    sampled with a generator seeded by ``seed``."""
    inputs = build_inputs(model, prompt, images, audios, videos, system)
    sampling = {"do_sample": True, "temperature": temperature,
                "generator": torch.Generator().manual_seed(seed)} if temperature > 0 else {}
    ids = model.generate(**inputs, max_new_tokens=max_new_tokens, **sampling)
    new = ids[0, inputs["input_ids"].shape[1]:]
    return Reply(model.tokenizer.decode(new, skip_special_tokens=True).strip(), inputs, ids, new)
