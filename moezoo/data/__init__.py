"""Data for the zoo: webdataset shards, shipped datasets, tokenizers and loaders.

The layout follows the webdataset convention (one tar member per sample field,
``KEY.png`` + ``KEY.json``) used by LLaVA-scale training, so shards built here and
shards converted from LLaVA JSON are read by the same pipeline.

Modules:
    shards: deterministic shard writing and the ``index.json`` of a dataset dir.
    scenes: the shapes-vqa scene generator (PIL drawing, exact answers).
    digits: digits-vqa over scikit-learn's bundled handwritten digits.
    phrasing: VQA questions worded as people type them (train/val variety, the typed test).
    text: a text corpus from the docstrings of the Python standard library.
    llava: conversion of LLaVA instruction JSON into shards.
    tokenizer: training the byte-level BPE tokenizer with ``tokenizers``.
    robust: skip-and-count of bad samples.
    media: which members of a sample hold its images, audio and video; image decoding.
    pipeline: the webdataset pipelines (resampled training, split evaluation).

The chat template and the preprocessing live in :mod:`moezoo.processing` (inference needs
them too); the ``LightningDataModule`` and the ``data/skipped`` callback in
:mod:`moezoo.train`. Nothing here is imported by ``import moezoo``.
"""
