"""Log-likelihood scoring of continuations and of whole documents, batched, for any moezoo LM.

Follows the conventions of EleutherAI's lm-evaluation-harness (Gao et al.,
github.com/EleutherAI/lm-evaluation-harness), so that moezoo's own numbers and the
harness's agree: ``HFLM._loglikelihood_tokens`` in ``lm_eval/models/huggingface.py``
(requests sorted longest first so a batch pads little, right padding, one forward per
batch, continuation log-probabilities from a float32 log-softmax, the greedy check,
too-long inputs cut on the left) and the disjoint rolling windows of
``get_rolling_token_windows`` / ``make_disjoint_window`` in ``lm_eval/utils.py``
(every token predicted once, each with as much context as the model takes).

The model is a text :class:`~moezoo.models.lm.MoEForCausalLM` or a
:class:`~moezoo.models.multimodal.MultimodalMoEForCausalLM` used text-only; both take
``model(input_ids=...)`` and return ``.logits``. Nothing here imports lm-eval.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def lm_config(model: nn.Module) -> Any:
    """The language model's config: ``model.config``, or ``model.config.llm`` for multimodal models."""
    config = getattr(model, "config", None)
    if config is None:
        raise ValueError(f"expected a moezoo model with a `config`, got {type(model).__name__}")
    return getattr(config, "llm", config)


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
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    config = lm_config(model)
    eos = config.eos_token_id[0] if isinstance(config.eos_token_id, (list, tuple)) else config.eos_token_id
    candidates = (getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "eos_token_id", None),
                  config.bos_token_id, eos)
    for token in candidates:
        if token is not None:
            return int(token)
    raise ValueError("the model has no BOS or EOS token (tokenizer or config) to condition a text's first token "
                     "on; pass prefix_token_id")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` in eval mode for the block and restore its training flag after (callbacks
    score a model mid-training)."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def loglikelihoods(model: nn.Module, requests: Sequence[tuple[Sequence[int], Sequence[int]]], batch_size: int = 16,
                   progress: bool = False, max_length: int | None = None) -> list[tuple[float, bool]]:
    """Summed log-probability of each continuation after its context, and whether it is greedy.

    Args:
        model: a moezoo causal LM (text, or multimodal used text-only).
        requests: ``(context ids, continuation ids)`` pairs; the context needs at least one token
            (lm-eval puts a BOS / EOS there for an empty context).
        batch_size: sequences per forward.
        progress: show a tqdm bar.
        max_length: the model's context; default :func:`context_length`. Longer inputs lose their
            leftmost context tokens, as in lm-eval.

    Returns:
        Per request, in order, ``(log p(continuation | context), every continuation token is the argmax)``.

    Batch composition does not change the scores of dropless token-choice MoE layers (moezoo's
    default); capacity-limited and expert-choice routers see the whole batch, as in training.

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
        >>> [(round(ll, 2) < 0, type(greedy)) for ll, greedy in loglikelihoods(model, [([1, 5], [6, 7]), ([1], [3])])]
        [(True, <class 'bool'>), (True, <class 'bool'>)]
    """
    max_length = max_length or context_length(model)
    check_batch_size(batch_size)
    seqs, cont_lens = [], []
    for i, (context, continuation) in enumerate(requests):
        if len(context) == 0 or len(continuation) == 0:
            raise ValueError(f"request {i}: expected a non-empty context and continuation, got {len(context)} "
                             f"and {len(continuation)} tokens (give an empty context as [bos_token_id])")
        if len(continuation) > max_length:
            raise ValueError(f"request {i}: the continuation has {len(continuation)} tokens, more than the "
                             f"model's context of {max_length}")
        # The last token is only a target; the input is the max_length tokens before it.
        seqs.append((list(context) + list(continuation))[-(max_length + 1):])
        cont_lens.append(len(continuation))
    # One row per distinct input (all tokens but the last): the choices of a multiple-choice
    # question whose continuations differ only in their last token share a forward.
    rows: dict[tuple[int, ...], list[int]] = {}
    for i in sorted(range(len(seqs)), key=lambda i: (-len(seqs[i]), seqs[i])):
        rows.setdefault(tuple(seqs[i][:-1]), []).append(i)
    row_inputs = list(rows)
    results: list[tuple[float, bool] | None] = [None] * len(seqs)
    bar = _progress(len(seqs), progress)
    device = _device(model)
    with eval_mode(model):
        for start in range(0, len(row_inputs), batch_size):
            chunk = row_inputs[start:start + batch_size]
            T = len(chunk[0])  # rows are sorted longest first
            ids_BT = torch.zeros(len(chunk), T, dtype=torch.long)  # right padding: causal attention never sees it
            for b, row in enumerate(chunk):
                ids_BT[b, :len(row)] = torch.tensor(row)
            # Logits only from the first continuation position of the batch on.
            first = min(len(row) - cont_lens[i] for row in chunk for i in rows[row])
            logits = model(input_ids=ids_BT.to(device), logits_to_keep=T - first, router_losses=False).logits
            for b, row in enumerate(chunk):
                for i in rows[row]:
                    n = cont_lens[i]
                    logp_NV = logits[b, len(row) - n - first:len(row) - first].float().log_softmax(-1)
                    target_N = torch.tensor(seqs[i][-n:], device=logp_NV.device)
                    ll = logp_NV.gather(-1, target_N[:, None]).sum()
                    results[i] = (float(ll), bool((logp_NV.argmax(-1) == target_N).all()))
                    bar.update(1)
    bar.close()
    return results  # type: ignore[return-value]


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


def check_batch_size(batch_size: int) -> None:
    """Raise ``ValueError`` unless ``batch_size`` is a positive int."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an int >= 1")


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Scoring", unit="request")
