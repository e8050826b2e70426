"""Evaluation: the standard VQA and language metrics, the shipped tasks, and the harnesses.

- :mod:`~moezoo.eval.metrics`: VQAv2 accuracy (the EvalAI answer processing of
  :mod:`~moezoo.eval.answers`, leave-one-out over annotators), exact match, option-letter
  accuracy, POPE.
- :mod:`~moezoo.eval.scoring`: the one log-likelihood scorer, for text and multimodal
  continuations (:func:`~moezoo.eval.scoring.loglikelihoods`); :mod:`~moezoo.eval.language`:
  perplexity and multiple-choice accuracy on it.
- :mod:`~moezoo.eval.generation`: batched short-answer generation (the VQA loop).
- :mod:`~moezoo.eval.prompts`: prompts as the model reads them (chat template, media, token ids),
  shared by scoring and generation; :mod:`~moezoo.eval.batching`: padding, media, device moves,
  eval mode and progress, shared by every evaluation path.
- :mod:`~moezoo.eval.tasks` / :mod:`~moezoo.eval.runner`: the shipped tasks and ``evaluate``,
  behind ``moezoo eval``.
- :mod:`~moezoo.eval.harness`: adapters for lm-evaluation-harness (``moezoo[eval]``) and
  lmms-eval (``moezoo[lmms]``); nothing else here imports either harness.

The Lightning callbacks that run these during training live in :mod:`moezoo.train.callbacks`.

Example:
    >>> import moezoo.eval as ev
    >>> ev.vqa_accuracy("Two", ["2"] * 10)
    1.0
"""

from moezoo.utils.lazy import lazy_attributes

_LAZY = {
    "normalize_answer": "moezoo.eval.answers",
    "vqa_accuracy": "moezoo.eval.metrics",
    "exact_match": "moezoo.eval.metrics",
    "extract_choice": "moezoo.eval.metrics",
    "multiple_choice_accuracy": "moezoo.eval.metrics",
    "pope_metrics": "moezoo.eval.metrics",
    "loglikelihoods": "moezoo.eval.scoring",
    "Request": "moezoo.eval.scoring",
    "continuation_requests": "moezoo.eval.prompts",
    "rolling_loglikelihood": "moezoo.eval.scoring",
    "perplexity": "moezoo.eval.language",
    "multiple_choice": "moezoo.eval.language",
    "generate_answers": "moezoo.eval.generation",
    "TASKS": "moezoo.eval.tasks",
    "evaluate": "moezoo.eval.runner",
    "EvalReport": "moezoo.eval.runner",
}
__getattr__, __dir__ = lazy_attributes(__name__, _LAZY, globals())
