"""Language metrics: perplexity on held-out text and log-likelihood multiple choice.

Both score text the way EleutherAI's lm-evaluation-harness does, so that the numbers
compare with the harness's (see :mod:`moezoo.eval.scoring`):

- **perplexity**: each document is its own sequence, every token predicted once after
  a prefix token (lm-eval's ``loglikelihood_rolling``; windows of the model's context
  for long documents); perplexity is ``exp`` of the mean negative log-likelihood per token.
- **multiple choice** (MMLU / HellaSwag / ARC style): each choice is scored as the
  continuation ``" " + choice`` of the context, split into tokens as lm-eval's
  ``TemplateLM._encode_pair`` does; ``acc`` picks the most likely choice, ``acc_norm``
  divides each log-likelihood by the choice's length in characters first (lm-eval's
  ``acc_norm``, Gao et al. 2021).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import nn

from moezoo.processing.chat import adds_special_tokens
from moezoo.eval.scoring import (
    context_length,
    loglikelihoods,
    prefix_token,
    rolling_windows,
)


def encode(tokenizer: Any, text: str, add_special_tokens: bool | None = None) -> list[int]:
    """Token ids of ``text`` as lm-eval's ``hf`` model encodes it (``tok_encode``).

    The tokenizer's own special tokens are added (a BOS, for tokenizers that add one) unless
    ``add_special_tokens`` says otherwise or the text already starts with the BOS string
    (a rendered chat template, say).
    """
    if add_special_tokens is None:
        add_special_tokens = adds_special_tokens(tokenizer, text)
    return list(tokenizer.encode(text, add_special_tokens=add_special_tokens))


def encode_pair(tokenizer: Any, context: str, continuation: str,
                prefix_token_id: int | None = None) -> tuple[list[int], list[int]]:
    """Split ``context + continuation`` into context and continuation ids, as lm-eval does.

    Trailing spaces of the context move to the continuation; the whole string is encoded and
    the context's own encoding length marks the split (so a word-boundary merge lands in the
    continuation). An empty context becomes ``[prefix_token_id]`` (unless the continuation
    already starts with that token).

    Example:
        >>> from moezoo.processing.tokenizer import zoo_tokenizer
        >>> tok = zoo_tokenizer()
        >>> ctx, cont = encode_pair(tok, "The sky is ", "blue")
        >>> tok.decode(ctx), tok.decode(cont)
        ('The sky is', ' blue')
    """
    if not context:
        cont = encode(tokenizer, continuation, add_special_tokens=False)
        if prefix_token_id is None or (cont and cont[0] == prefix_token_id):
            return cont[:1], cont[1:]
        return [prefix_token_id], cont
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    whole = encode(tokenizer, stripped + continuation)
    n_context = len(encode(tokenizer, stripped))
    return whole[:n_context], whole[n_context:]


def perplexity(model: nn.Module, texts: Sequence[str], tokenizer: Any = None, max_length: int | None = None,
               batch_size: int = 8) -> dict[str, float]:
    """Token-level perplexity of ``model`` on ``texts``, each text scored as its own sequence.

    Every token of a text is predicted once: the first after the tokenizer's BOS when it adds
    one, else after the model's prefix token (BOS, else EOS: lm-eval's ``loglikelihood_rolling``).
    Texts longer than ``max_length`` are scored in disjoint rolling windows with full context.

    Args:
        model: a moezoo causal LM (text, or multimodal used text-only).
        texts: the held-out documents.
        tokenizer: default ``model.tokenizer``.
        max_length: window size; default the model's context.
        batch_size: windows per forward.

    Returns:
        ``{"perplexity": exp(nll_per_token), "nll_per_token": float, "tokens": int}``.

    Example:
        >>> import moezoo
        >>> out = perplexity(moezoo.create_model("moe_lm_tiny"), ["a red circle", "two blue squares"])
        >>> sorted(out), abs(out["perplexity"] - math.exp(out["nll_per_token"])) < 1e-9
        (['nll_per_token', 'perplexity', 'tokens'], True)
    """
    tokenizer = _tokenizer(model, tokenizer)
    max_length = max_length or context_length(model)
    default_prefix = prefix_token(model, tokenizer)
    bos = getattr(tokenizer, "bos_token_id", None)
    windows: list[tuple[list[int], list[int]]] = []
    for text in texts:
        ids = encode(tokenizer, text)
        prefix = default_prefix
        if ids and bos is not None and ids[0] == bos:  # the tokenizer's own BOS conditions the text
            prefix, ids = ids[0], ids[1:]
        windows += rolling_windows(ids, prefix, max_length)
    tokens = sum(len(cont) for _, cont in windows)
    if tokens == 0:
        raise ValueError(f"expected texts with at least one token, got {len(texts)} text(s) and no tokens")
    total = sum(ll for ll, _ in loglikelihoods(model, windows, batch_size=batch_size, max_length=max_length))
    nll = -total / tokens
    return {"perplexity": math.exp(nll), "nll_per_token": nll, "tokens": tokens}


def multiple_choice(model: nn.Module, items: Sequence[dict[str, Any]], tokenizer: Any = None, batch_size: int = 16,
                    target_delimiter: str = " ", max_length: int | None = None) -> dict[str, float]:
    """Log-likelihood multiple-choice accuracy, with and without length normalisation.

    Args:
        model: a moezoo causal LM.
        items: ``{"context": str, "choices": [str, ...], "label": int}``, ``label`` the index of the
            right choice.
        tokenizer: default ``model.tokenizer``.
        batch_size: sequences per forward.
        target_delimiter: put between context and choice (lm-eval's default ``" "``).
        max_length: the model's context; longer inputs lose their leftmost tokens (as in lm-eval).

    Returns:
        ``{"acc", "acc_norm"}``: the share of items whose most likely choice is right, by summed
        log-likelihood and by log-likelihood per character of the choice. Ties go to the first.

    Example:
        >>> import moezoo
        >>> item = {"context": "The circle is", "choices": ["red", "blue"], "label": 0}
        >>> sorted(multiple_choice(moezoo.create_model("moe_lm_tiny"), [item]))
        ['acc', 'acc_norm']
    """
    tokenizer = _tokenizer(model, tokenizer)
    prefix = prefix_token(model, tokenizer)
    requests = []
    for i, item in enumerate(items):
        _check_item(i, item)
        requests += [encode_pair(tokenizer, item["context"], target_delimiter + choice, prefix)
                     for choice in item["choices"]]
    if not requests:
        raise ValueError("expected at least one item")
    lls = iter(ll for ll, _ in loglikelihoods(model, requests, batch_size=batch_size, max_length=max_length))
    hits = hits_norm = 0
    for item in items:
        scores = [next(lls) for _ in item["choices"]]
        lengths = [max(len(choice), 1) for choice in item["choices"]]  # an empty choice would divide by 0
        hits += _argmax(scores) == item["label"]
        hits_norm += _argmax([s / n for s, n in zip(scores, lengths)]) == item["label"]
    return {"acc": hits / len(items), "acc_norm": hits_norm / len(items)}


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal maxima, as numpy's


def _check_item(i: int, item: dict[str, Any]) -> None:
    choices = item.get("choices")
    if not isinstance(item.get("context"), str) or not isinstance(choices, (list, tuple)) or not choices:
        raise ValueError(f"item {i}: expected {{'context': str, 'choices': [str, ...], 'label': int}}, got {item!r}")
    label = item.get("label")
    if not isinstance(label, int) or not 0 <= label < len(choices):
        raise ValueError(f"item {i}: label={label!r} must be an int index into its {len(choices)} choices")


def _tokenizer(model: nn.Module, tokenizer: Any) -> Any:
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    if tokenizer is None:
        raise ValueError(f"{type(model).__name__} has no tokenizer attached; pass tokenizer=")
    return tokenizer
