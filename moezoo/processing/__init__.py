"""Preprocessing: what turns text, images, audio and video into a model's inputs.

The :class:`~moezoo.processing.processor.Processor` is the single owner of it, in training and at
inference alike: the tokenizer, the chat template, placeholder expansion and each modality's
preprocessing (:mod:`~moezoo.processing.image`, :mod:`~moezoo.processing.audio`,
:mod:`~moezoo.processing.video`).
"""
