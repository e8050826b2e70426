"""The one log-likelihood scorer: continuations after text or multimodal contexts, batched, for any moezoo model.

Follows the conventions of EleutherAI's lm-evaluation-harness (Gao et al.,
github.com/EleutherAI/lm-evaluation-harness), so that moezoo's own numbers and the
harness's agree: ``HFLM._loglikelihood_tokens`` in ``lm_eval/models/huggingface.py``
(requests sorted longest first so a batch pads little, right padding, one forward per
batch, continuation log-probabilities from a float32 log-softmax, the greedy check,
too-long inputs cut on the left) and the disjoint rolling windows of
``get_rolling_token_windows`` / ``make_disjoint_window`` in ``lm_eval/utils.py``
(every token predicted once, each with as much context as the model takes).

A :class:`Request` may carry media (images, audio clips, videos) for the placeholders of its
context, as lmms-eval's ``loglikelihood`` requests do (Zhang et al. 2024,
github.com/EvolvingLMMs-Lab/lmms-eval); the processor preprocesses them batch by batch and
instruction-aware parts (a FiLM encoder, an ``instruct`` connector) read the context only,
never the continuation they help to score. The lm-eval and lmms-eval adapters
(:mod:`moezoo.eval.harness`) translate their requests into this scorer; nothing here imports
either harness. :func:`moezoo.eval.prompts.continuation_requests` makes requests from
prompt strings and media.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from moezoo.eval import batching


class Request(NamedTuple):
    """One continuation to score: token ids of its ``context`` and ``continuation``, and the
    ``media`` (modality -> raw items, in placeholder order) that the context's expanded
    placeholders stand for. A ``(context, continuation)`` pair is a request without media.

    Example:
        >>> Request([1, 5], [6])
        Request(context=[1, 5], continuation=[6], media=None)
    """

    context: Sequence[int]
    continuation: Sequence[int]
    media: Mapping[str, Sequence] | None = None


def lm_config(model: nn.Module) -> Any:
    """The config of the model's language model (:attr:`~moezoo.models.base.ZooModel.language_model`)."""
    try:
        return model.language_model.config
    except AttributeError:
        raise ValueError(f"expected a moezoo model (with .language_model and its .config), got "
                         f"{type(model).__name__}") from None


def context_length(model: nn.Module) -> int:
    """The longest sequence the model takes (``max_position_embeddings`` of its LM config).

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> context_length(MoEForCausalLM(LMConfig(vocab_size=8, dim=8, num_layers=1, num_heads=2, ffn_dim=8,
        ...                                         max_position_embeddings=128)))
        128
    """
    return int(lm_config(model).max_position_embeddings)


def prefix_token(model: nn.Module, tokenizer: Any = None) -> int:
    """The token that conditions the first token of a text: lm-eval's ``prefix_token_id``.

    As lm-eval's ``hf`` model: the tokenizer's BOS, else its EOS; without a tokenizer, the
    model config's BOS, else its (first) EOS.
    """
    tokenizer = tokenizer if tokenizer is not None else model.tokenizer
    config = lm_config(model)
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
    candidates = (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None),
                  config.bos_token_id, eos)
    for token in candidates:
        if token is not None:
            return int(token)
    raise ValueError("the model has no BOS or EOS token (tokenizer or config) to condition a text's first token "
                     "on; pass prefix_token_id")


@torch.inference_mode()
def loglikelihoods(model: nn.Module, requests: Sequence[Request | tuple], batch_size: int = 16,
                   progress: bool = False, max_length: int | None = None) -> list[tuple[float, bool]]:
    """Summed log-probability of each continuation after its context (and media), and whether it is greedy.

    Args:
        model: a moezoo causal LM: text, or multimodal (with or without media).
        requests: :class:`Request` s, or ``(context ids, continuation ids[, media])`` tuples. The
            context needs at least one token (lm-eval puts a BOS / EOS there for an empty
            context); its placeholders must be expanded (``processor.expand_placeholders``), one
            run of them per media item.
        batch_size: sequences per forward.
        progress: show a tqdm bar.
        max_length: the model's context; default :func:`context_length`. Longer inputs lose their
            leftmost context tokens, as in lm-eval (never a placeholder: that is an error).

    Returns:
        Per request, in order, ``(log p(continuation | context), every continuation token is the argmax)``.

    Raises:
        ValueError: an empty context or continuation, a continuation longer than the context
            window, media the model does not take, or placeholders that do not match the media.

    Requests with the same input (all tokens but the last) and the same media share a forward.
    Batch composition does not change the scores of dropless token-choice MoE layers (moezoo's
    default); capacity-limited and expert-choice routers see the whole batch, as in training.

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
        >>> [(round(ll, 2) < 0, type(greedy)) for ll, greedy in loglikelihoods(model, [([1, 5], [6, 7]), ([1], [3])])]
        [(True, <class 'bool'>), (True, <class 'bool'>)]
    """
    max_length = max_length or context_length(model)
    batching.check_batch_size(batch_size)
    requests = [Request(*r) for r in requests]
    processor = model.processor
    placeholders = _placeholder_ids(model, requests)
    seqs = [_input(i, r, max_length, placeholders, processor) for i, r in enumerate(requests)]
    cont_lens = [len(r.continuation) for r in requests]
    # One row per distinct input (all tokens but the last) and media: the choices of a multiple-choice
    # question whose continuations differ only in their last token share a forward. With media, the
    # context's length is part of the row too: instruction-aware parts read the context only.
    rows: dict[tuple, list[int]] = {}
    for i in sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), seqs[i])):
        media = requests[i].media
        key = (tuple(seqs[i][:-1]), _media_key(media), len(seqs[i]) - cont_lens[i] if media else 0)
        rows.setdefault(key, []).append(i)
    pad_id = min(set(range(len(placeholders) + 1)) - set(placeholders.values()))  # never a placeholder
    results: list[tuple[float, bool] | None] = [None] * len(seqs)
    with batching.eval_mode(model), batching.progress(len(seqs), progress, "Scoring", "request") as bar:
        for chunk in batching.chunks(list(rows), batch_size):
            ids_BT = batching.pad([row for row, _, _ in chunk], pad_id, side="right")["input_ids"]
            T = ids_BT.shape[1]  # rows are sorted longest first
            inputs: dict[str, torch.Tensor] = {"input_ids": ids_BT}
            media = batching.media_inputs(processor, [requests[rows[key][0]].media or {} for key in chunk],
                                          f"model {type(model).__name__}")
            if media:  # instruction-aware parts read the context's text: no placeholder, no continuation
                prompt_B = torch.tensor([n_prompt for _, _, n_prompt in chunk])
                inputs |= media | {"prompt_mask": (torch.arange(T)[None] < prompt_B[:, None])
                                   & ~torch.isin(ids_BT, torch.tensor(list(placeholders.values())))}
            # Logits only from the first continuation position of the batch on.
            first = min(len(key[0]) - cont_lens[i] for key in chunk for i in rows[key])
            logits = model(**batching.to_device(inputs, model), logits_to_keep=T - first,
                           router_losses=False).logits
            for b, key in enumerate(chunk):
                for i in rows[key]:
                    n = cont_lens[i]
                    logp_NV = logits[b, len(seqs[i]) - 1 - n - first:len(seqs[i]) - 1 - first].float().log_softmax(-1)
                    target_N = torch.tensor(seqs[i][-n:], device=logp_NV.device)
                    ll = logp_NV.gather(-1, target_N[:, None]).sum()
                    results[i] = (float(ll), bool((logp_NV.argmax(-1) == target_N).all()))
                    bar.update(1)
    return results  # type: ignore[return-value]


def _placeholder_ids(model: nn.Module, requests: Sequence[Request]) -> dict[str, int]:
    """Modality -> placeholder token id, for the modalities the model takes; ``{}`` when no request has media."""
    given = sorted({m for r in requests for m, items in (r.media or {}).items() if len(items)})
    if not given:
        return {}
    modalities = list(model.processor.num_tokens) if model.processor is not None else []
    refused = [m for m in given if m not in modalities]
    if refused:
        raise ValueError(f"model {type(model).__name__} takes no {refused} input; its modalities are "
                         f"{modalities or ['text']}")
    return model.processor.placeholder_ids()


def _input(i: int, request: Request, max_length: int, placeholders: dict[str, int], processor: Any) -> list[int]:
    """Request ``i``'s tokens, context and continuation, cut on the left to ``max_length + 1``; checked."""
    context, continuation = list(request.context), list(request.continuation)
    if len(context) == 0 or len(continuation) == 0:
        raise ValueError(f"request {i}: expected a non-empty context and continuation, got {len(context)} "
                         f"and {len(continuation)} tokens (give an empty context as [bos_token_id])")
    if len(continuation) > max_length:
        raise ValueError(f"request {i}: the continuation has {len(continuation)} tokens, more than the "
                         f"model's context of {max_length}")
    # The last token is only a target; the input is the max_length tokens before it.
    seq = (context + continuation)[-(max_length + 1):]
    if placeholders:
        cut = len(context) + len(continuation) - len(seq)
        media = request.media or {}
        for modality, token in placeholders.items():
            if token in context[:cut]:
                raise ValueError(f"request {i}: {len(context) + len(continuation)} tokens do not fit the model's "
                                 f"context of {max_length + 1}, and cutting them on the left would cut one of "
                                 f"its {modality} placeholders; shorten the context")
            found, given = context.count(token), len(media.get(modality, ()))
            if found != given * processor.num_tokens[modality]:
                raise ValueError(f"request {i}: the context holds {found} {modality} placeholder tokens but "
                                 f"{given} {modality}(s) were given, which need {processor.num_tokens[modality]} "
                                 f"each; expand each placeholder once per item (processor.expand_placeholders)")
    return seq


def _media_key(media: Mapping[str, Sequence] | None) -> tuple:
    """Which media objects a request reads (by identity: the same items share a forward)."""
    return tuple((m, tuple(map(id, items))) for m, items in sorted((media or {}).items()) if len(items))


def rolling_windows(token_ids: Sequence[int], prefix_token_id: int | None,
                    max_length: int) -> list[tuple[list[int], list[int]]]:
    """Split a document into lm-eval's disjoint rolling windows, as ``(context, continuation)`` requests.

    The document (after ``prefix_token_id``, which only conditions the first token) is cut into
    chunks of ``max_length`` tokens; each chunk is a continuation whose context is the tokens just
    before it, as many as fit in ``max_length`` inputs. So every token is predicted exactly once,
    and ``loglikelihoods`` of the windows sum to the document's log-likelihood. Without a prefix
    token the first token is context only.

    Example:
        >>> rolling_windows([5, 6, 7, 8, 9], prefix_token_id=1, max_length=2)
        [([1], [5, 6]), ([6], [7, 8]), ([7, 8], [9])]
    """
    if max_length < 1:
        raise ValueError(f"max_length={max_length} must be >= 1")
    seq = ([prefix_token_id] if prefix_token_id is not None else []) + list(token_ids)
    windows = []
    for start in range(0, len(seq) - 1, max_length):  # predict seq[start + 1 : end + 1]
        end = min(start + max_length, len(seq) - 1)
        windows.append((seq[max(0, end - max_length):start + 1], seq[start + 1:end + 1]))
    return windows


def rolling_loglikelihood(model: nn.Module, token_ids: Sequence[int], max_length: int | None = None,
                          prefix_token_id: int | None = None, batch_size: int = 16) -> float:
    """Log-likelihood of a whole document, scored in lm-eval's disjoint rolling windows.

    Args:
        model: a moezoo causal LM.
        token_ids: the document's tokens (without BOS: ``prefix_token_id`` conditions the first).
        max_length: window size; default the model's context.
        prefix_token_id: default :func:`prefix_token` (BOS, else EOS), as lm-eval's.
        batch_size: windows per forward.

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32,
        ...                                 bos_token_id=1))
        >>> whole = rolling_loglikelihood(model, [5, 6, 7, 8, 9])
        >>> abs(whole - loglikelihoods(model, [([1], [5, 6, 7, 8, 9])])[0][0]) < 1e-4
        True
    """
    max_length = max_length or context_length(model)
    prefix = prefix_token_id if prefix_token_id is not None else prefix_token(model)
    windows = rolling_windows(token_ids, prefix, max_length)
    return sum(ll for ll, _ in loglikelihoods(model, windows, batch_size=batch_size, max_length=max_length))
