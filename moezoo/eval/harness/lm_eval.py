"""lm-evaluation-harness adapter: any moezoo model as the lm-eval model ``"moezoo"``.

EleutherAI's lm-evaluation-harness (github.com/EleutherAI/lm-evaluation-harness, 0.4.x)
asks a model for three request types. :class:`MoezooLM` subclasses its ``TemplateLM``, so
context and continuation are split into tokens by lm-eval's own ``_encode_pair``, exactly
as its ``hf`` model (``lm_eval/models/huggingface.py``, ``HFLM``) does. The adapter only
translates: the requests go to moezoo's one scorer (:mod:`moezoo.eval.scoring`) and to the
model's ``generate`` on batches from :mod:`moezoo.eval.batching`, and the results come back:

- ``loglikelihood``: :func:`~moezoo.eval.scoring.loglikelihoods` (longest first, right padding);
- ``loglikelihood_rolling``: lm-eval's disjoint rolling windows (``get_rolling_token_windows``),
  all windows of all documents batched together;
- ``generate_until``: the model's ``generate``, left-padded batches grouped by generation
  arguments, cut at the first ``until`` string.

Importing this module registers the model under the name ``"moezoo"`` (lm-eval 0.4 has no
plugin entry points; its registry knows what has been imported), so after
``import moezoo.eval.harness.lm_eval``,
``lm_eval.simple_evaluate(model="moezoo", model_args="pretrained=DIR", tasks=[...])`` works.
On the command line, this module *is* lm-eval's CLI with ``moezoo`` known::

    python -m moezoo.eval.harness.lm_eval --model moezoo --model_args pretrained=DIR --tasks hellaswag

:func:`run_lm_eval` is the Python entry ``moezoo eval`` uses: tasks by name (the user's own
task YAMLs from ``include_path`` too) to a flat ``{task: {metric: value}}`` table.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models enter the registry before "moezoo": see the end)
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from torch import nn

from moezoo.eval import batching, scoring
from moezoo.eval.language import encode

logger = logging.getLogger(__name__)
# Generation arguments moezoo's `generate` takes besides the ones lm-eval normalises.
_SAMPLING_KEYS = ("top_k", "top_p")


class MoezooLM(TemplateLM):
    """A moezoo model (text, or multimodal used text-only) as an lm-eval ``TemplateLM``.

    Args:
        pretrained: a registered pretrained name or a checkpoint dir (read by :func:`moezoo.load`),
            or a model object.
        batch_size: sequences per forward (lm-eval's ``"auto"`` is not supported).
        max_length: the context to use; default the model's ``max_position_embeddings``.
        device: where to load a named model (default ``"cpu"``); for a model object, where to move
            it (default: where it is). A CUDA device without CUDA falls back to the CPU, with a warning
            (lm-eval's CLI asks for ``cuda:0`` by default).
        dtype: e.g. ``"bfloat16"``; default the checkpoint's / the model's.
        tokenizer: a tokenizer, or a dir holding one; default ``model.tokenizer``.
        max_gen_toks: new tokens per generation when a task sets none (lm-eval's default 256).
        max_batch_size: accepted for lm-eval's CLI, unused.

    Example:
        >>> import moezoo
        >>> lm = MoezooLM(moezoo.create_model("moe_lm_tiny"), batch_size=4)
        >>> lm.max_length, lm.prefix_token_id, lm.tok_decode(lm.tok_encode("a red circle"))
        (1024, 1, 'a red circle')
    """

    def __init__(self, pretrained: str | os.PathLike | nn.Module, batch_size: int | str = 8,
                 max_length: int | str | None = None, device: str | None = None, dtype: Any = None,
                 tokenizer: Any = None, max_gen_toks: int | str = 256, max_batch_size: Any = None) -> None:
        super().__init__()
        dtype = None if dtype in (None, "auto") else dtype
        if device is not None and str(device).startswith("cuda") and not torch.cuda.is_available():
            # lm-eval's CLI asks for cuda:0 unless told otherwise.
            logger.warning("device=%s asked for but CUDA is not available: running on the CPU", device)
            device = "cpu"
        if isinstance(pretrained, nn.Module):
            model = pretrained
            if dtype is not None:
                model = model.to(getattr(torch, dtype) if isinstance(dtype, str) else dtype)
            if device is not None:
                model = model.to(device)
        elif isinstance(pretrained, (str, os.PathLike)):
            import moezoo

            model = moezoo.load(pretrained, device=device or "cpu", dtype=dtype)
        else:
            raise ValueError(f"pretrained must be a moezoo name, a checkpoint dir or an nn.Module, "
                             f"got {type(pretrained).__name__}")
        if isinstance(batch_size, str) and not batch_size.isdigit():
            raise ValueError(f"batch_size={batch_size!r}: the moezoo model takes a fixed batch size (an int >= 1)")
        self._model = model
        self._batch_size = int(batch_size)
        batching.check_batch_size(self._batch_size)
        self._max_length = int(max_length) if max_length else scoring.context_length(model)
        self._max_gen_toks = int(max_gen_toks)
        if isinstance(tokenizer, (str, os.PathLike)):
            from moezoo.processing.tokenizer import load_tokenizer

            tokenizer = load_tokenizer(tokenizer)
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError(f"{type(model).__name__} has no tokenizer attached; pass tokenizer=")
        self._device = batching.model_device(model)

    # -- what lm-eval reads ----------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def eot_token_id(self) -> int:
        eos = getattr(self.tokenizer, "eos_token_id", None)
        if eos is not None:
            return eos
        eos = scoring.lm_config(self._model).eos_token_id
        return eos[0] if isinstance(eos, (list, tuple)) else eos

    @property
    def prefix_token_id(self) -> int:
        return scoring.prefix_token(self._model, self.tokenizer)

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def max_gen_toks(self) -> int:
        return self._max_gen_toks

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", None) or "moezoo").replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return encode(self.tokenizer, string, add_special_tokens)

    def tok_decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(tokens, skip_special_tokens=skip_special_tokens)

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        renderer = getattr(self._model, "processor", None) or self.tokenizer
        if renderer is self.tokenizer and not getattr(self.tokenizer, "chat_template", None):
            raise ValueError("this model's tokenizer has no chat template; run without --apply_chat_template")
        kwargs = {} if renderer is not self.tokenizer else {"tokenize": False}
        return renderer.apply_chat_template(chat_history, add_generation_prompt=add_generation_prompt, **kwargs)

    # -- the three request types -----------------------------------------------------------------------
    def _loglikelihood_tokens(self, requests: list[tuple[tuple[str, str] | None, list[int], list[int]]],
                              disable_tqdm: bool = False, **kwargs: Any) -> list[tuple[float, bool]]:
        answers = scoring.loglikelihoods(self._model, [(ctx, cont) for _, ctx, cont in requests],
                                         batch_size=self._batch_size, progress=not disable_tqdm,
                                         max_length=self._max_length)
        for (request, _, _), answer in zip(requests, answers):
            if request is not None:
                self.cache_hook.add_partial("loglikelihood", request, answer)
        return answers

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, (string,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(string)
            for window in get_rolling_token_windows(token_list=tokens, prefix_token=self.prefix_token_id,
                                                    max_seq_len=self._max_length, context_len=1):
                windows.append((None, *make_disjoint_window(window)))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owners, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[i] += ll
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", tuple(req.args), total)
        return totals

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        # Requests with the same generation arguments are batched together, longest first.
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(repr(sorted(req.args[1].items())), []).append(i)
        results: list[str] = [""] * len(requests)
        eos = self.tok_decode([self.eot_token_id], skip_special_tokens=False)
        bar = batching.progress(len(requests), not disable_tqdm, "generating", "request")
        for indices in groups.values():
            gen_kwargs = requests[indices[0]].args[1]
            until, generate_kwargs = self._generation_kwargs(gen_kwargs, eos)
            max_new = generate_kwargs["max_new_tokens"]
            max_context = self._max_length - max_new
            if max_context < 1:
                raise ValueError(f"max_gen_toks={max_new} leaves no room for a prompt in the model's context of "
                                 f"{self._max_length} tokens")
            encoded = {i: self.tok_encode(requests[i].args[0])[-max_context:] for i in indices}
            order = sorted(indices, key=lambda i: -len(encoded[i]))
            for start in range(0, len(order), self._batch_size):
                chunk = order[start:start + self._batch_size]
                texts = self._generate([encoded[i] for i in chunk], generate_kwargs)
                for i, text in zip(chunk, texts):
                    results[i] = postprocess_generated_text(text, until, None)
                    self.cache_hook.add_partial("generate_until", (requests[i].args[0], gen_kwargs), results[i])
                    bar.update(1)
        bar.close()
        return results

    def _generation_kwargs(self, gen_kwargs: dict[str, Any], eos: str) -> tuple[list[str], dict[str, Any]]:
        """lm-eval's generation arguments -> (stop strings, ``generate`` keyword arguments)."""
        kwargs = dict(normalize_gen_kwargs(gen_kwargs, self._max_gen_toks))
        until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = bool(kwargs.pop("do_sample", False)) and temperature > 0  # temperature 0 means greedy
        out = {"max_new_tokens": int(kwargs.pop("max_gen_toks")), "do_sample": do_sample}
        if do_sample:
            out["temperature"] = temperature
            out.update({k: kwargs.pop(k) for k in _SAMPLING_KEYS if k in kwargs})
        return until, out

    def _generate(self, prompts: list[list[int]], generate_kwargs: dict[str, Any]) -> list[str]:
        """Greedy or sampled continuations of a left-padded batch of prompts, decoded."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        inputs = batching.to_device(batching.pad(prompts, pad, side="left"), self._model)
        with batching.eval_mode(self._model):
            out = self._model.generate(inputs["input_ids"], attention_mask=inputs["attention_mask"],
                                       **generate_kwargs)
        return [self.tok_decode(row[inputs["input_ids"].shape[1]:].tolist()) for row in out]


def run_lm_eval(model: str | os.PathLike | nn.Module | MoezooLM, tasks: str | Sequence[str],
                include_path: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
                limit: int | float | None = None, batch_size: int = 8,
                num_fewshot: int | None = None, bootstrap_iters: int = 1000,
                include_defaults: bool | None = None) -> dict[str, dict[str, float]]:
    """Run lm-eval tasks on a moezoo model; return ``{task: {metric: value}}``.

    Args:
        model: a name or checkpoint dir, a model object, or a :class:`MoezooLM`.
        tasks: task names (or a comma-separated string); lm-eval's bundled tasks, the tasks in
            ``include_path``, globs (``"mmlu_*"``) and YAML paths.
        include_path: dir(s) of the user's own task YAMLs (lm-eval's ``--include_path``). lm-eval's
            bundled task index (thousands of files) is only built when a task is not found here.
        limit: examples per task (a fraction when < 1).
        batch_size: sequences per forward.
        num_fewshot: few-shot examples (default: each task's own).
        bootstrap_iters: resamples for the standard errors of metrics without a closed form
            (perplexity, F1); lm-eval's CLI takes 100000, 0 skips standard errors altogether.
        include_defaults: search lm-eval's bundled tasks: ``None`` only when ``include_path`` lacks
            a task, ``False`` never (tests), ``True`` always.

    Returns:
        Per task (and group), lm-eval's metrics with the filter suffix dropped for the default
        filter (``"acc,none"`` -> ``"acc"``; other filters become ``"metric/filter"``), standard
        errors as ``"acc_stderr"``; non-numeric entries are left out.

    Raises:
        ValueError: a task is unknown (the message lists the closest task names).
    """
    from lm_eval import simple_evaluate

    names = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [str(t) for t in tasks]
    names = [n for n in names if n]
    if not names:
        raise ValueError("expected at least one task name")
    manager = task_manager(names, include_path, include_defaults)
    lm = model if isinstance(model, MoezooLM) else MoezooLM(model, batch_size=batch_size)
    out = simple_evaluate(model=lm, tasks=names, task_manager=manager, limit=limit, num_fewshot=num_fewshot,
                          log_samples=False, bootstrap_iters=bootstrap_iters)
    return flatten_results(out["results"])


def task_manager(names: Sequence[str], include_path: Any = None, include_defaults: bool | None = None) -> Any:
    """lm-eval's ``TaskManager`` that knows every task in ``names``: by default the ``include_path``
    index alone when it has them all, else with lm-eval's bundled tasks too (see :func:`run_lm_eval`).

    Raises:
        ValueError: a name is still unknown; the message lists the closest known task names.
    """
    from lm_eval.tasks import TaskManager

    if include_defaults is None:
        if include_path:
            manager = TaskManager(include_path=include_path, include_defaults=False)
            if not _unknown(manager, names):
                return manager
        include_defaults = True
    manager = TaskManager(include_path=include_path, include_defaults=include_defaults)
    unknown = _unknown(manager, names)
    if unknown:
        where = " or ".join(([str(include_path)] if include_path else []) +
                            (["lm-eval's bundled tasks"] if include_defaults else []))
        hints = "; ".join(f"{n!r}: closest {difflib.get_close_matches(n, manager.all_tasks, n=5, cutoff=0.5)}"
                          for n in unknown)
        raise ValueError(f"unknown lm-eval task(s) {unknown}, not found in {where} ({len(manager.all_tasks)} "
                         f"known); {hints}")
    return manager


def _unknown(manager: Any, names: Sequence[str]) -> list[str]:
    known = set(manager.all_tasks)
    return [n for n in names
            if n not in known and not fnmatch.filter(known, n) and not Path(n).is_file()]


def flatten_results(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """lm-eval's ``results["results"]`` -> ``{task: {metric: float}}`` (see :func:`run_lm_eval`).

    Example:
        >>> flatten_results({"arc": {"alias": "arc", "acc,none": 0.5, "acc_stderr,none": 0.1,
        ...                          "exact_match,strict": 0.25, "f1_stderr,none": "N/A"}})
        {'arc': {'acc': 0.5, 'acc_stderr': 0.1, 'exact_match/strict': 0.25}}
    """
    table = {}
    for task, metrics in results.items():
        row = {}
        for key, value in metrics.items():
            if "," not in key or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, filter_name = key.split(",", 1)
            row[metric if filter_name == "none" else f"{metric}/{filter_name}"] = float(value)
        table[task] = row
    return table


def main(argv: Sequence[str] | None = None) -> None:
    """lm-eval's command line, with ``--model moezoo`` known (``python -m moezoo.eval.harness.lm_eval ...``)."""
    import importlib
    import sys

    # Under `python -m` this file runs as `__main__`; the model is registered from its real module.
    importlib.import_module("moezoo.eval.harness.lm_eval")
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    cli_evaluate()


if __name__ == "__main__":
    main()
else:
    # lm-eval's `get_model` fills its registry with its own (lazy) models only while the registry is
    # empty, which is why `lm_eval.models` is imported above, before this. Under `python -m` the class
    # is registered from the real module (see `main`), never twice under two module names.
    register_model("moezoo")(MoezooLM)
