"""Adapters that run moezoo models inside the evaluation harnesses people trust.

- :mod:`~moezoo.eval.harness.lm_eval`: an lm-evaluation-harness ``TemplateLM`` (``pip install 'moezoo[eval]'``).
- :mod:`~moezoo.eval.harness.lmms`: an lmms-eval model, registered through the ``lmms_eval.models``
  entry point (``pip install 'moezoo[lmms]'``).

Each imports its harness itself; importing this package imports neither.
"""
