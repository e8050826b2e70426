"""Batched short-answer generation for (multimodal) prompts: the VQA evaluation loop.

LLaVA-1.5's VQA evaluation (``llava/eval/model_vqa_loader.py``, Liu et al. 2023, arXiv
2310.03744) renders each question with the model's chat template, decodes greedily a
handful of tokens and scores the stripped text; lmms-eval's ``generate_until`` models do the
same and cut the answer at the task's ``until`` strings. :func:`generate_answers` is that
loop for any moezoo model, batched: prompts are sorted by token length so that a batch
pads little, padded on the left (the prompt's last token is then the last position of
every row), decoded with the model's KV cache, and returned in the order given.

:func:`blank_like` makes the uniform images of the "blank images" grounding check: a
model that really reads the image loses accuracy when every image is replaced by one.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from moezoo.eval import batching
from moezoo.eval.prompts import encode_prompts, media_per_prompt, model_name, render_prompts
from moezoo.models.lm.config import id_list

# Mid-grey: the mean pixel of an 8-bit image, so a blank image normalises to about zero under
# the usual (0.5, 0.5) or ImageNet / CLIP mean-std preprocessing: no colour, edge or shape cue,
# and no saturated input (a black or white image would be an extreme, not an absence).
BLANK_RGB = (128, 128, 128)


def blank_like(image: Any) -> Any:
    """A uniform mid-grey image of ``image``'s size and mode (see :data:`BLANK_RGB`).

    Example:
        >>> from PIL import Image
        >>> blank = blank_like(Image.new("RGB", (40, 30), "red"))
        >>> blank.size, blank.mode, blank.getpixel((5, 5)), blank.getextrema()
        ((40, 30), 'RGB', (128, 128, 128), ((128, 128), (128, 128), (128, 128)))
        >>> blank_like(Image.new("L", (8, 8))).getpixel((0, 0))
        128
    """
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ValueError(f"blank_like expects a PIL image, got {type(image).__name__}")
    grey = Image.new("RGB", image.size, BLANK_RGB)  # converted so every mode gets its own mid-grey
    return grey if image.mode == "RGB" else grey.convert(image.mode)


def _stop_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """The ids ``model.generate`` stops at (the LLM config's ``eos_token_id``), else the tokenizer's eos."""
    stops = id_list(model.language_model.config.eos_token_id)
    return stops or id_list(getattr(tokenizer, "eos_token_id", None))


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the earliest of the ``until`` strings, stripped."""
    end = min((i for i in (text.find(s) for s in until if s) if i >= 0), default=len(text))
    return text[:end].strip()


def blank_audio(clip: Any) -> tuple[Any, int]:
    """Silence as long as ``clip`` (a ``(waveform, sample_rate)`` pair): the audio grounding check.

    Example:
        >>> import numpy as np
        >>> wave, rate = blank_audio((np.ones(5, dtype=np.float32), 8000))
        >>> wave.tolist(), rate
        ([0.0, 0.0, 0.0, 0.0, 0.0], 8000)
    """
    import numpy as np

    wave, rate = clip
    return np.zeros_like(np.asarray(wave)), rate


@torch.inference_mode()
def generate_answers(model: nn.Module, prompts: Sequence[str], images: Sequence[list] | None = None,
                     batch_size: int = 16, max_new_tokens: int = 16, until: Sequence[str] = (),
                     chat: bool = True, progress: bool = False, blank_images: bool = False,
                     fixed_steps: bool = False, audios: Sequence[list] | None = None) -> list[str]:
    """Greedy short answers to ``prompts``, batched, in the order given.

    Args:
        model: a moezoo model: multimodal (``model.processor``) or text-only (``model.tokenizer``).
        prompts: user messages, with one ``<image>`` placeholder per image (none for text-only models).
        images: one list of PIL images per prompt (``[]`` for a prompt without one), or ``None``.
        batch_size: prompts per ``model.generate`` call.
        max_new_tokens: most tokens per answer.
        until: stop strings; each answer is cut at the earliest one found.
        chat: render each prompt as a one-turn conversation with the model's chat template
            (when the processor or tokenizer has one); the rendered prompt already holds its
            special tokens, so none are added on top. ``False`` takes the prompts as given.
        progress: show a tqdm bar over the prompts.
        blank_images: replace every image by :func:`blank_like` of it, every audio clip by silence
            (:func:`blank_audio`): the grounding check.
        audios: one list of ``(waveform, sample_rate)`` clips per prompt (``<audio>`` placeholders), or ``None``.
        fixed_steps: decode exactly ``max_new_tokens`` steps in every batch, whatever the rows
            emit (the answers are still cut at eos). A sharded model (FSDP, expert parallel)
            all-gathers inside each forward, so every rank must run the same number of them.

    Returns:
        One answer per prompt: the new tokens decoded without special tokens (decoding stops at
        the model's eos), cut at ``until``, stripped.

    Raises:
        ValueError: images are given to a model that takes none, ``images`` does not hold one
            list per prompt, or ``batch_size`` < 1.

    Example:
        >>> import moezoo
        >>> from PIL import Image
        >>> model = moezoo.create_model("mm_tiny_cnn")
        >>> answers = generate_answers(model, ["<image>\\nWhat colour is the circle?", "How many shapes?"],
        ...                            images=[[Image.new("RGB", (64, 64), "red")], []], max_new_tokens=3)
        >>> len(answers), all(isinstance(a, str) for a in answers)
        (2, True)
    """
    batching.check_batch_size(batch_size)
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    processor, tokenizer = model.processor, model.tokenizer
    if tokenizer is None:
        raise ValueError(f"model {model_name(model)} has no tokenizer (model.tokenizer is None); attach one "
                         f"before generating")
    media = {key: media_per_prompt(model, modality, given, len(prompts), blank if blank_images else None)
             for key, modality, given, blank in (("images", "image", images, blank_like),
                                                 ("audios", "audio", audios, blank_audio))}
    if not prompts:
        return []
    texts, rendered = render_prompts(model, prompts, chat)
    encoded = encode_prompts(model, texts, rendered)
    stops = _stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)
    answers: list[str] = [""] * len(prompts)
    with batching.eval_mode(model), batching.progress(len(prompts), progress, "generating", "prompt") as bar:
        for batch in batching.chunks(batching.longest_first([len(ids) for ids in encoded]), batch_size):
            inputs: dict[str, Any] = {}
            rows = [encoded[i] for i in batch]
            if processor is not None:  # the media, checked against each prompt's placeholders and preprocessed
                given = {key: None if lists is None else [lists[i] for i in batch] for key, lists in media.items()}
                inputs = processor.media_inputs([texts[i] for i in batch], **given)
            # Left padding: every prompt ends at the last position, so new tokens line up across the batch.
            inputs = batching.to_device(inputs | batching.pad(rows, pad_id, side="left"), model)
            stop = {"eos_token_id": []} if fixed_steps else {}
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **stop)
            new = out[:, inputs["input_ids"].shape[1]:].tolist()
            for i, row in zip(batch, new):
                end = next((j for j, t in enumerate(row) if t in stops), len(row))
                answers[i] = _cut(tokenizer.decode(row[:end], skip_special_tokens=True), until)
            bar.update(len(batch))
    return answers
