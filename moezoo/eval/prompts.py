"""Prompts as a model reads them at evaluation: chat template, media lists, token ids.

Answer generation (:mod:`moezoo.eval.generation`) and scoring (:mod:`moezoo.eval.scoring`)
read a prompt the same way, so that a task scored by log-likelihood and the same task
answered by generation condition on the same tokens:

- :func:`render_prompts`: each prompt as a one-turn user conversation through the model's
  chat template with the generation prompt after it, as LLaVA-1.5's evaluation
  (``llava/eval/model_vqa_loader.py``) and lmms-eval's ``llava_hf`` render it;
- :func:`media_per_prompt`: one list of images (or audio clips) per prompt, checked against
  what the model reads;
- :func:`continuation_requests`: ``(prompt, continuation, media)`` to the scorer's
  :class:`~moezoo.eval.scoring.Request` s, the continuation's tokens after the rendered prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from moezoo.eval.scoring import Request
from moezoo.processing.chat import adds_special_tokens


def model_name(model: nn.Module) -> str:
    """The model's name for messages: its config's ``name``, else its class name."""
    config = getattr(model, "config", None)
    return getattr(config, "name", None) or type(model).__name__


def render_prompts(model: nn.Module, prompts: Sequence[str], chat: bool = True) -> tuple[list[str], bool]:
    """The prompts as the model reads them, and whether its chat template rendered them.

    Each prompt becomes a one-turn user conversation with the generation prompt after it, when
    ``chat`` and the processor (or, for a text model, the tokenizer) has a template; otherwise
    the prompts are taken as given. A rendered prompt is tokenised by the rule training uses
    (:func:`rendered_special_tokens`): without the tokenizer's special tokens when the template wrote
    the BOS, with them otherwise, as transformers' ``apply_chat_template(tokenize=True)`` tokenises.

    Example:
        >>> import moezoo
        >>> render_prompts(moezoo.create_model("moe_lm_tiny"), ["Hi"])
        (['<bos><|user|>\\nHi<|end|>\\n<|assistant|>\\n'], True)
    """
    processor, tokenizer = model.processor, model.tokenizer
    has_template = bool(getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", None))
    if not (chat and has_template):
        return list(prompts), False
    if processor is not None:
        return [processor.apply_chat_template([{"role": "user", "content": p}]) for p in prompts], True
    return [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                          add_generation_prompt=True) for p in prompts], True


def media_per_prompt(model: nn.Module, modality: str, media: Sequence[list] | None, n: int,
                     blank: Callable[[Any], Any] | None = None) -> list[list] | None:
    """``media`` checked as one list per prompt for a model that reads ``modality`` (``None`` if none is given).

    Args:
        model: the model that will read them.
        modality: ``"image"``, ``"audio"`` or ``"video"``.
        media: one list per prompt (``[]`` for a prompt without one), or ``None``.
        n: the number of prompts.
        blank: applied to every item (the blank-input grounding check), or ``None``.

    Raises:
        ValueError: not one list per prompt, or media of a modality the model does not read.

    Example:
        >>> import moezoo
        >>> media_per_prompt(moezoo.create_model("moe_lm_tiny"), "image", [[], []], n=2) is None
        True
    """
    if media is None:
        return None
    media = [list(m) for m in media]
    if len(media) != n:
        raise ValueError(f"{len(media)} {modality} lists for {n} prompts; give one list per prompt "
                         f"([] for a prompt without one)")
    if not any(media):
        return None
    processor = model.processor
    if processor is None and model.encoders():
        raise ValueError(f"model {model_name(model)} takes {modality} input but has no processor to prepare it "
                         f"(model.processor is None); load it with moezoo.load or attach a Processor")
    modalities = list(getattr(processor, "modalities", None) or [])
    if modality not in modalities:
        plural = {"image": "images", "video": "videos"}.get(modality, modality)
        raise ValueError(f"model {model_name(model)} takes no {plural}; its modalities are "
                         f"{modalities or ['text']}. Evaluate it on a text task, or pass {plural}=None")
    return [[blank(x) for x in row] for row in media] if blank is not None else media


def encode_prompts(model: nn.Module, texts: Sequence[str], rendered: bool) -> list[list[int]]:
    """Token ids of (rendered) prompts, placeholders expanded; a rendered prompt gets no extra special tokens.

    Example:
        >>> import moezoo
        >>> model = moezoo.create_model("moe_lm_tiny")
        >>> texts, rendered = render_prompts(model, ["Hi"])
        >>> model.tokenizer.decode(encode_prompts(model, texts, rendered)[0]) == texts[0]
        True
    """
    if not texts:
        return []
    tokenizer = model.tokenizer
    expand = model.processor.expand_placeholders if model.processor is not None else (lambda t: t)
    return [list(tokenizer(expand(t), **rendered_special_tokens(tokenizer, t, rendered))["input_ids"]) for t in texts]


def rendered_special_tokens(tokenizer: Any, text: str, rendered: bool) -> dict[str, bool]:
    """The tokenizer's ``add_special_tokens`` for a prompt: for a rendered one, the rule training uses
    (:func:`~moezoo.processing.chat.adds_special_tokens`: no second BOS after a template's own); a raw
    prompt gets the tokenizer's default."""
    return {"add_special_tokens": adds_special_tokens(tokenizer, text)} if rendered else {}


def continuation_requests(model: nn.Module, contexts: Sequence[str], continuations: Sequence[str],
                          images: Sequence[list] | None = None, audios: Sequence[list] | None = None,
                          chat: bool = True) -> list[Request]:
    """Scorer requests for continuations of prompts: the continuation's tokens after the prompt's.

    Args:
        model: the model to score with.
        contexts: prompts with one placeholder per medium (``<image>``), as for :func:`render_prompts`.
        continuations: the texts to score after each prompt (tokenised alone, no special tokens).
        images / audios: one list per prompt (``[]`` for none), or ``None``.
        chat: render the prompts with the model's chat template (see :func:`render_prompts`).

    Returns:
        One :class:`~moezoo.eval.scoring.Request` per prompt. An empty raw context is
        conditioned on the tokenizer's BOS (else EOS), as lm-eval does; an empty continuation
        stays empty (the scorer refuses it: lm-eval has no score for it).

    Example:
        >>> import moezoo
        >>> from PIL import Image
        >>> from moezoo.eval.scoring import loglikelihoods
        >>> model = moezoo.create_model("mm_tiny_cnn")
        >>> black = Image.new("RGB", (64, 64))
        >>> requests = continuation_requests(model, ["<image>\\nColour?"], ["red"], images=[[black]])
        >>> [(lp, greedy)] = loglikelihoods(model, requests)
        >>> lp < 0, isinstance(greedy, bool)
        (True, True)
    """
    if len(contexts) != len(continuations):
        raise ValueError(f"{len(contexts)} contexts for {len(continuations)} continuations; give one of each per "
                         f"request")
    media = {m: media_per_prompt(model, m, given, len(contexts))
             for m, given in (("image", images), ("audio", audios))}
    texts, rendered = render_prompts(model, contexts, chat)
    tokenizer = model.tokenizer
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    requests = []
    for i, (context_ids, continuation) in enumerate(zip(encode_prompts(model, texts, rendered), continuations)):
        items = {m: lists[i] for m, lists in media.items() if lists is not None and lists[i]}
        requests.append(Request(context_ids or [start], tokenizer(continuation, add_special_tokens=False)["input_ids"],
                                items or None))
    return requests
