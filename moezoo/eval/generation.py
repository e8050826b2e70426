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


def _model_name(model: nn.Module) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "name", None) or type(model).__name__


def _stop_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """The ids ``model.generate`` stops at (the LLM config's ``eos_token_id``), else the tokenizer's eos."""
    config = getattr(model, "config", None)
    config = getattr(config, "llm", config)
    stops = id_list(getattr(config, "eos_token_id", None))
    return stops or id_list(getattr(tokenizer, "eos_token_id", None))


def render_prompts(model: nn.Module, prompts: Sequence[str], chat: bool = True) -> tuple[list[str], bool]:
    """The prompts as the model reads them, and whether its chat template rendered them.

    Each prompt becomes a one-turn user conversation with the generation prompt after it, when
    ``chat`` and the processor (or, for a text model, the tokenizer) has a template; otherwise
    the prompts are taken as given. A rendered prompt holds its special tokens (BOS, role tags),
    so it is tokenised with ``add_special_tokens=False``, as transformers' ``apply_chat_template``
    tokenises.

    Example:
        >>> import moezoo
        >>> render_prompts(moezoo.create_model("moe_lm_tiny"), ["Hi"])
        (['<bos><|user|>\\nHi<|end|>\\n<|assistant|>\\n'], True)
    """
    processor, tokenizer = getattr(model, "processor", None), model.tokenizer
    has_template = bool(getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None))
    if not (chat and has_template):
        return list(prompts), False
    if processor is not None:
        return [processor.apply_chat_template([{"role": "user", "content": p}]) for p in prompts], True
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts], True


def _cut(text: str, until: Sequence[str]) -> str:
    """``text`` up to the earliest of the ``until`` strings, stripped."""
    end = min((i for i in (text.find(s) for s in until if s) if i >= 0), default=len(text))
    return text[:end].strip()


def _left_pad(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    """``input_ids`` / ``attention_mask`` of ``rows`` padded on the left."""
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(row)
            mask[i, width - len(row):] = 1
    return {"input_ids": ids, "attention_mask": mask}


def _per_prompt(model: nn.Module, processor: Any, modality: str, media: Sequence[list] | None, n: int,
                blank: Any = None) -> list[list] | None:
    """``media`` checked as one list per prompt for a model that reads ``modality`` (``None`` if none is given)."""
    if media is None:
        return None
    media = [list(m) for m in media]
    if len(media) != n:
        raise ValueError(f"{len(media)} {modality} lists for {n} prompts; give one list per prompt "
                         f"([] for a prompt without one)")
    if not any(media):
        return None
    modalities = list(getattr(processor, "modalities", []))
    if processor is None and modality in getattr(model, "num_tokens", {}):
        raise ValueError(f"model {_model_name(model)} takes {modality} input but has no processor to prepare it "
                         f"(model.processor is None); load it with moezoo.load or attach a Processor")
    if modality not in modalities:
        plural = "images" if modality == "image" else modality
        raise ValueError(f"model {_model_name(model)} takes no {plural}; its modalities are "
                         f"{modalities or ['text']}. Evaluate it on a text task, or pass {plural}=None")
    return [[blank(x) for x in row] for row in media] if blank is not None else media


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
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    processor, tokenizer = getattr(model, "processor", None), getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError(f"model {_model_name(model)} has no tokenizer (model.tokenizer is None); attach one "
                         f"before generating")
    images = _per_prompt(model, processor, "image", images, len(prompts), blank_like if blank_images else None)
    audios = _per_prompt(model, processor, "audio", audios, len(prompts), blank_audio if blank_images else None)

    if not prompts:
        return []
    texts, rendered = render_prompts(model, prompts, chat)
    special = {} if not rendered else {"add_special_tokens": False}  # the template wrote BOS etc. itself
    expand = processor.expand_placeholders if processor is not None else (lambda t: t)
    encoded = tokenizer([expand(t) for t in texts], **special)["input_ids"]
    # Longest first: batches of similar length pad little, and an out-of-memory shows at once.
    order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
    param = next(model.parameters())
    stops = _stop_ids(model, tokenizer)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (stops[0] if stops else 0)

    was_training = model.training
    model.eval()
    answers: list[str] = [""] * len(prompts)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(prompts), desc="generating", unit="prompt")
    try:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            if processor is not None:
                media = {key: None if lists is None else [lists[i] for i in batch]
                         for key, lists in (("images", images), ("audios", audios))}
                inputs = dict(processor(text=[texts[i] for i in batch], **media, **special))
            else:
                inputs = _left_pad([encoded[i] for i in batch], pad_id)
            inputs = {k: v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device)
                      for k, v in inputs.items()}
            stop = {"eos_token_id": []} if fixed_steps else {}
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, **stop)
            new = out[:, inputs["input_ids"].shape[1]:].tolist()
            for i, row in zip(batch, new):
                end = next((j for j, t in enumerate(row) if t in stops), len(row))
                answers[i] = _cut(tokenizer.decode(row[:end], skip_special_tokens=True), until)
            if bar is not None:
                bar.update(len(batch))
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    return answers
