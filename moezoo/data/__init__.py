"""Data for the zoo: webdataset shards, shipped datasets, tokenizers and loaders.

The layout follows the webdataset convention (one tar member per sample field,
``KEY.png`` + ``KEY.json``) used by LLaVA-scale training, so shards built here and
shards converted from LLaVA JSON are read by the same pipeline.

Modules:
    shards: deterministic shard writing and the ``index.json`` of a dataset dir.
    scenes: the shapes-vqa scene generator (PIL drawing, exact answers).
    digits: digits-vqa over scikit-learn's bundled handwritten digits.
    text: a text corpus from the docstrings of the Python standard library.
    llava: conversion of LLaVA instruction JSON into shards.
    tokenizer: a byte-level BPE tokenizer trained with ``tokenizers``.
    chat: the chat template, tokenisation and label masking.
    robust: skip-and-count of bad samples and the ``data/skipped`` callback.
    pipeline: the webdataset pipelines (resampled training, split evaluation).
    datamodule: the ``LightningDataModule`` over shards.

Nothing here is imported by ``import moezoo``: the modules that pull in
webdataset or Lightning are imported by the training code and ``moezoo data``.
"""
