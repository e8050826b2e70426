"""The lmms-eval adapter: any moezoo model as an lmms-eval "simple" model named ``moezoo``.

lmms-eval (EvolvingLMMs-Lab/lmms-eval, 0.7.x) is the vision-language harness LibMoE
(arXiv 2411.00918) and MoE-LLaVA report their numbers with. Its simple models subclass
``lmms_eval.api.model.lmms`` and answer ``generate_until`` / ``loglikelihood`` requests
whose images come from the task's ``doc_to_visual`` applied to ``self.task_dict``, as its
``llava_hf`` model does; ``<image>`` placeholders are put before a context that has none.
External models register through the ``lmms_eval.models`` entry-point group with a
``ModelManifest`` (``lmms_eval/models/registry_v2.py``); moezoo's pyproject points it at
:func:`manifest`, so ``lmms_eval --model moezoo --model_args pretrained=DIR`` and
``simple_evaluate(model="moezoo", ...)`` find it. ``simple_evaluate(model=MoezooLMMs(m))``
takes a model already in memory.

The adapter only translates: lmms-eval's requests into prompts, media and continuations,
and the results back. Generation is :func:`moezoo.eval.generation.generate_answers` (batched,
greedy, chat template); log-likelihoods are moezoo's one scorer,
:func:`moezoo.eval.scoring.loglikelihoods`, on the requests of
:func:`moezoo.eval.prompts.continuation_requests` (the same rendered prompt as generation).

lmms-eval is an optional extra (``moezoo[lmms]``): only this module imports it.
"""

from __future__ import annotations

import json
from typing import Any, Sequence

import torch
from torch import nn

try:
    from lmms_eval.api.model import lmms
except ImportError as err:  # the optional extra is missing
    raise ImportError("moezoo.eval.harness.lmms needs lmms-eval: pip install 'moezoo[lmms]'") from err

from moezoo.eval.batching import model_device
from moezoo.eval.generation import generate_answers
from moezoo.eval.prompts import continuation_requests
from moezoo.eval.scoring import loglikelihoods

MODEL_ID = "moezoo"
# lmms-eval passes these to every model built by name; a moezoo model has no use for them.
_HARNESS_ARGS = ("max_batch_size",)


def manifest() -> Any:
    """lmms-eval's registration of this adapter (the ``lmms_eval.models`` entry point).

    Example:
        >>> manifest().simple_class_path
        'moezoo.eval.harness.lmms.MoezooLMMs'
    """
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id=MODEL_ID, simple_class_path=f"{__name__}.MoezooLMMs")


def _lmms_eval_compat() -> None:
    """Work around two faults of lmms-eval 0.7.3 that stop a local run; each fix is applied only
    where its fault is detected, so a fixed lmms-eval runs untouched.

    - ``simple_evaluate`` first patches ``filelock._api.FileLockMeta`` (a lock cache against a
      deadlock of several ranks loading datasets); filelock 4 has no ``_api`` module, so every
      run raises ``ModuleNotFoundError``. The patch is marked as done (its own re-entry flag),
      which skips it: this adapter runs in one process, which never takes that deadlock.
    - The evaluator passes each response through ``unwrap_generation_output``, which turns
      anything but text into ``str(...)``: the ``(log-likelihood, is_greedy)`` pairs of
      ``loglikelihood`` become strings and every multiple-choice task fails. The evaluator's
      reference to it is wrapped so that such pairs pass through as they are.
    """
    from lmms_eval import evaluator

    try:
        import filelock._api  # noqa: F401
    except ImportError:
        patch = getattr(evaluator, "_enable_reentrant_filelocks", None)
        if patch is not None:
            patch._patched = True
    unwrap = getattr(evaluator, "unwrap_generation_output", None)
    if unwrap is not None and unwrap((-1.0, True))[0] != (-1.0, True):

        def keep_scores(output: Any) -> Any:
            if isinstance(output, tuple) and len(output) == 2 and isinstance(output[0], float) \
                    and isinstance(output[1], bool):
                return output, None
            return unwrap(output)

        evaluator.unwrap_generation_output = keep_scores


def _flat_visuals(visuals: Any) -> list:
    """The PIL images ``doc_to_visual`` returned (``None``, one image or a list, possibly nested)."""
    from PIL import Image

    if visuals is None:
        return []
    items = list(visuals) if isinstance(visuals, (list, tuple)) else [visuals]
    flat = [v for item in items for v in (item if isinstance(item, (list, tuple)) else [item])]
    others = sorted({type(v).__name__ for v in flat if not isinstance(v, Image.Image)})
    if others:
        raise ValueError(f"the moezoo lmms-eval model takes images (PIL) only; doc_to_visual gave {others}")
    from moezoo.processing.image import load_image  # the loader training uses: transparency onto white

    return [load_image(v) for v in flat]


class MoezooLMMs(lmms):
    """A moezoo model answering lmms-eval requests (single process).

    Args:
        pretrained: a moezoo model, or what :func:`moezoo.load` takes (a checkpoint dir or name).
        batch_size: prompts per generation / scoring batch.
        device: where to load ``pretrained`` (default ``"cpu"``); a given module is moved only
            when ``device`` is set.
        dtype: weights dtype when loading (``None``: the checkpoint's).
        max_new_tokens: answer length when the task's ``generation_kwargs`` set none.
        chat: render prompts with the model's chat template (see :func:`generate_answers`).
        blank_images: replace every image by a blank one (the visual-grounding check).

    Example:
        >>> import moezoo
        >>> lm = MoezooLMMs(moezoo.create_model("mm_tiny_cnn"), batch_size=4)
        >>> lm.batch_size, lm.rank, lm.world_size
        (4, 0, 1)
    """

    is_simple = True

    def __init__(self, pretrained: str | nn.Module, batch_size: int | str = 8, device: str | None = None,
                 dtype: str | torch.dtype | None = None, max_new_tokens: int = 32, chat: bool = True,
                 blank_images: bool = False, **kwargs: Any) -> None:
        super().__init__()
        _lmms_eval_compat()
        unknown = sorted(set(kwargs) - set(_HARNESS_ARGS))
        if unknown:
            raise ValueError(f"unknown moezoo model_args {unknown}; known: pretrained, batch_size, device, dtype, "
                             f"max_new_tokens, chat, blank_images")
        try:
            self.batch_size_per_gpu = int(batch_size)
        except (TypeError, ValueError):
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer ('auto' is not supported)") from None
        if self.batch_size_per_gpu < 1 or int(max_new_tokens) < 1:
            raise ValueError(f"batch_size={batch_size} and max_new_tokens={max_new_tokens} must be >= 1")
        if isinstance(pretrained, nn.Module):
            model = pretrained if device is None else pretrained.to(device)
        else:
            import moezoo

            model = moezoo.load(pretrained, device=device or "cpu", dtype=dtype)
        self.model = model.eval()
        self.pretrained = pretrained if isinstance(pretrained, str) else type(pretrained).__name__
        self.max_new_tokens, self.chat, self.blank_images = int(max_new_tokens), bool(chat), bool(blank_images)
        self.processor, self.tokenizer = model.processor, model.tokenizer
        self._owns_model = not isinstance(pretrained, nn.Module)

    def clean(self) -> None:
        """lmms-eval's end-of-run clean-up drops the model; a model the caller passed in is kept,
        so the adapter (a training callback's, say) can evaluate again."""
        if self._owns_model:
            super().clean()

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    # -- requests -> prompts and images ------------------------------------------------------------------
    def _visuals(self, doc_to_visual: Any, doc_id: int, task: str, split: str) -> list:
        return _flat_visuals(doc_to_visual(self.task_dict[task][split][doc_id]))

    def _with_placeholders(self, context: str, n_images: int) -> str:
        """``context`` with one image placeholder per image in front, unless it already has them (llava_hf's rule)."""
        placeholder = self.processor.placeholders["image"] if self.processor is not None else "<image>"
        if n_images == 0 or placeholder in context:
            return context
        return " ".join([placeholder] * n_images) + "\n" + context

    # -- generate_until ----------------------------------------------------------------------------------
    def generate_until(self, requests: Sequence[Any]) -> list[str]:
        """Greedy answers, batched over requests that share their generation kwargs."""
        groups: dict[str, list[int]] = {}
        for i, request in enumerate(requests):
            groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
        answers: list[str] = [""] * len(requests)
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1] or {})
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            if float(gen_kwargs.get("temperature") or 0) > 0 or gen_kwargs.get("do_sample"):
                from loguru import logger

                logger.warning("moezoo: the task asks for sampling; answers are decoded greedily")
            prompts, images = [], []
            for i in indices:
                context, _, doc_to_visual, doc_id, task, split = requests[i].args
                visuals = self._visuals(doc_to_visual, doc_id, task, split)
                prompts.append(self._with_placeholders(context, len(visuals)))
                images.append(visuals)
            out = generate_answers(self.model, prompts, images, batch_size=self.batch_size,
                                   max_new_tokens=int(gen_kwargs.get("max_new_tokens") or self.max_new_tokens),
                                   until=until, chat=self.chat, progress=self.rank == 0,
                                   blank_images=self.blank_images)
            for i, prompt, answer in zip(indices, prompts, out):
                answers[i] = answer
                self.cache_hook.add_partial("generate_until", (prompt, gen_kwargs), answer)
        return answers

    def generate_until_multi_round(self, requests: Sequence[Any]) -> list[str]:
        raise NotImplementedError("the moezoo lmms-eval model answers single-turn tasks only "
                                  "(generate_until, loglikelihood); multi-round tasks are not supported")

    # -- loglikelihood -----------------------------------------------------------------------------------
    def loglikelihood(self, requests: Sequence[Any]) -> list[tuple[float, bool]]:
        """lmms-eval's score of each continuation after its (image +) text context: the mean
        negative log-likelihood of its tokens (0 for an empty one), and whether greedy decoding
        would produce it.

        That is lmms-eval's convention, not lm-eval's: its own models (``llava_hf``, ``llava``,
        ``qwen_vl``, ...) return the continuation's mean token loss, and its multiple-choice
        scoring takes the ``argmin``; a log-likelihood here would pick the least likely option.
        The context is rendered as the prompt :meth:`generate_until` would give (chat template,
        generation prompt); the continuation's tokens follow it. Instruction-aware encoders read
        the context only, as when generating.
        """
        contexts, continuations, images = [], [], []
        for request in requests:
            args = request.args
            if len(args) == 2:  # lmms-eval's unconditional ("", choice) requests carry no visual
                context, continuation, visuals = args[0], args[1], []
            else:
                context, target, doc_to_visual, doc_id, task, split = args
                doc = self.task_dict[task][split][doc_id]
                continuation = target if isinstance(target, str) else target(doc)
                visuals = _flat_visuals(doc_to_visual(doc))
            contexts.append(self._with_placeholders(context, len(visuals)))
            continuations.append(str(continuation))
            images.append(visuals)
        scored = continuation_requests(self.model, contexts, continuations, images=images, chat=self.chat)
        non_empty = [i for i, r in enumerate(scored) if r.continuation]  # an empty continuation: loss 0, greedy
        results = [(0.0, True)] * len(requests)
        for i, (logprob, greedy) in zip(non_empty, loglikelihoods(self.model, [scored[i] for i in non_empty],
                                                                  batch_size=self.batch_size)):
            results[i] = (-logprob / len(scored[i].continuation), greedy)
        return results
