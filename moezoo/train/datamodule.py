"""The ``LightningDataModule`` over webdataset shards, and its padding collate.

Follows Lightning's DataModule contract (one object owns the train / val / test
loaders, so a YAML ``data:`` section fully describes the data) and the webdataset
multi-node recipe described in :mod:`moezoo.data.pipeline`. A batch is a dict::

    input_ids (B, T), attention_mask (B, T), labels (B, T; -100 on prompt, placeholders, padding),
    images (N_img, C, H, W) in the order their <image> slots appear, audios (list), keys, meta
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import lightning.pytorch as pl
import torch
import webdataset as wds

from moezoo.processing.chat import IGNORE_INDEX, ChatTemplate, TokenizerAdapter
from moezoo.data.pipeline import (
    NodeInfo,
    ProcessedSample,
    SampleProcessor,
    build_pipeline,
    default_image_transform,
    samples_per_worker,
)
from moezoo.data.robust import SkipCounter, merge_totals
from moezoo.data.shards import DatasetIndex
from moezoo.utils.checks import check_min, require


@dataclass
class DataConfig:
    """Scalar settings of :class:`ShardDataModule` (see there), checked when built.

    Example:
        >>> DataConfig(data_dir="data/shapes-vqa", batch_size=0)
        Traceback (most recent call last):
        ...
        ValueError: DataConfig.batch_size=0 must be >= 1
    """

    data_dir: str
    batch_size: int = 32
    num_workers: int = 0
    max_length: int = 256
    image_size: int | None = None
    image_tokens: int = 1
    system_prompt: str | None = None
    resampled: bool = True
    epoch_length: int = 10_000
    shuffle_buffer: int = 500
    seed: int = 0
    train_split: str | None = "train"
    val_split: str | None = "val"
    test_split: str | None = "test"
    warn_first: int = 5

    def __post_init__(self) -> None:
        check_min(self, batch_size=1, num_workers=0, max_length=2, epoch_length=1, shuffle_buffer=0, image_tokens=1,
                  warn_first=0)  # fmt: skip
        if self.image_size is not None:
            require(self, "image_size", self.image_size >= 1, "must be >= 1 or None (keep the size)")


def pad_collate(samples: list[ProcessedSample], pad_id: int) -> dict[str, Any]:
    """Right-pad a list of samples into a batch dict (see the module docstring).

    Example:
        >>> a = ProcessedSample("a", torch.tensor([5, 6, 7]), torch.tensor([-100, 6, 7]))
        >>> b = ProcessedSample("b", torch.tensor([8]), torch.tensor([8]))
        >>> batch = pad_collate([a, b], pad_id=0)
        >>> batch["input_ids"].tolist(), batch["labels"][1].tolist(), batch["attention_mask"][1].tolist()
        ([[5, 6, 7], [8, 0, 0]], [8, -100, -100], [1, 0, 0])
    """
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    length = max(len(s.input_ids) for s in samples)
    ids = torch.full((len(samples), length), pad_id, dtype=torch.long)
    labels = torch.full((len(samples), length), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(samples), length), dtype=torch.long)
    for i, s in enumerate(samples):
        n = len(s.input_ids)
        ids[i, :n], labels[i, :n], mask[i, :n] = s.input_ids, s.labels, 1
    batch: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    images = [s.image for s in samples if s.image is not None]
    if images:  # stack when the transform gives same-shape tensors (the usual case), else keep a list
        same = all(isinstance(x, torch.Tensor) and x.shape == images[0].shape for x in images)
        batch["images"] = torch.stack(images) if same else images
    audios = [s.audio for s in samples if s.audio is not None]
    if audios:
        batch["audios"] = audios  # lengths differ; the audio encoder pads / resamples
    batch["keys"] = [s.key for s in samples]
    batch["meta"] = [s.meta or {} for s in samples]
    return batch


class _Collate:
    """Picklable collate bound to a pad id (DataLoader workers may be spawned)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, samples: list[ProcessedSample]) -> dict[str, Any]:
        return pad_collate(samples, self.pad_id)


class ShardDataModule(pl.LightningDataModule):
    """Train / val / test loaders over a dataset dir of webdataset shards (``index.json``).

    Args:
        data_dir: a dataset dir from ``moezoo data build`` / ``from-llava``.
        tokenizer: a tokenizer dir (``tokenizer.json``) or a tokenizer object (ours or HF).
        batch_size: samples per batch, per rank.
        num_workers: DataLoader worker processes per rank.
        max_length: token budget; longer chat samples are skipped, documents are windowed.
        image_size: resize images to this square size for the default transform (None: keep).
        image_tokens: slots each ``<image>`` expands to (the image encoder's token count).
        system_prompt: optional system turn in the chat template.
        resampled: train on resampled shards with a set epoch length (multi-node safe), or
            on one shuffled pass split by node and worker.
        epoch_length: training samples per epoch per rank when ``resampled``.
        shuffle_buffer: samples in each worker's shuffle buffer (0 or 1: no sample shuffle).
        seed: the seed of shard resampling and shuffling.
        train_split, val_split, test_split: split names in ``index.json``; None disables one.
        warn_first: skipped samples named in a warning per process before counting silently.
        image_transform: the image encoder's preprocessing (PIL image -> tensor), e.g. timm's
            ``create_transform(**resolve_data_config(model=...))`` or open_clip's ``preprocess``.
        audio_transform: ``(waveform (C, T), sample_rate) -> features`` for audio samples.

    Example:
        >>> from moezoo.processing.tokenizer import ZOO_TOKENIZER_DIR
        >>> data = Path(__file__).resolve().parents[2] / "data"  # the shipped data
        >>> dm = ShardDataModule(data / "shapes-vqa", ZOO_TOKENIZER_DIR, batch_size=8, epoch_length=8)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> sorted(batch), tuple(batch["images"].shape)
        (['attention_mask', 'images', 'input_ids', 'keys', 'labels', 'meta'], (8, 3, 64, 64))
    """

    def __init__(
        self,
        data_dir: str,
        tokenizer: str | Any,
        batch_size: int = 32,
        num_workers: int = 0,
        max_length: int = 256,
        image_size: int | None = None,
        image_tokens: int = 1,
        system_prompt: str | None = None,
        resampled: bool = True,
        epoch_length: int = 10_000,
        shuffle_buffer: int = 500,
        seed: int = 0,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        warn_first: int = 5,
        image_transform: Callable | None = None,
        audio_transform: Callable | None = None,
    ):
        super().__init__()
        args = {**locals(), "data_dir": str(data_dir)}
        self.config = DataConfig(**{f.name: args[f.name] for f in dataclasses.fields(DataConfig)})
        # Recorded in checkpoints; the tokenizer and transforms are objects, saved by the model.
        self.save_hyperparameters(ignore=["tokenizer", "image_transform", "audio_transform"])
        self.index = DatasetIndex.load(data_dir)  # fail now, not when the first loader is built
        for split in (train_split, val_split, test_split):
            if split is not None:
                self.index.urls(split)  # raises KeyError naming the splits that exist
        self._tokenizer_arg = tokenizer
        self._tokenizer: TokenizerAdapter | None = None
        self.template = ChatTemplate(system=system_prompt, image_tokens=image_tokens)
        self.image_transform = image_transform or default_image_transform(image_size)
        self.audio_transform = audio_transform
        self._counters: dict[str, SkipCounter] = {}

    @property
    def tokenizer(self) -> TokenizerAdapter:
        """The tokenizer, loaded on first use (a path is loaded as a ``PreTrainedTokenizerFast``)."""
        if self._tokenizer is None:
            tok = self._tokenizer_arg
            if isinstance(tok, (str, Path)):
                from moezoo.processing.tokenizer import load_tokenizer

                tok = load_tokenizer(tok)
            self._tokenizer = tok if isinstance(tok, TokenizerAdapter) else TokenizerAdapter(tok)
        return self._tokenizer

    def skip_counters(self) -> dict[str, SkipCounter]:
        """Split -> its :class:`SkipCounter` (what :class:`SkippedSamplesLogger` logs)."""
        return dict(self._counters)

    def skipped(self) -> dict[str, int]:
        """Reason -> skipped samples so far, over every loader built."""
        return merge_totals(self._counters)

    def dataset(self, split: str, train: bool = False) -> wds.DataPipeline:
        """The webdataset pipeline of ``split``; ``train`` turns on shuffling and (if set) resampling."""
        cfg = self.config
        counter = self._counters.setdefault(split, SkipCounter(cfg.num_workers, cfg.warn_first))
        processor = SampleProcessor(
            self.tokenizer, self.template, counter, cfg.max_length, self.image_transform, self.audio_transform
        )
        resampled = train and cfg.resampled
        return build_pipeline(
            self.index.urls(split),
            processor,
            resampled=resampled,
            shuffle=train,
            seed=cfg.seed,
            shuffle_buffer=cfg.shuffle_buffer,
            samples_per_worker=samples_per_worker(cfg.epoch_length, cfg.num_workers) if resampled else None,
        )

    def _loader(self, split: str | None, train: bool):
        if split is None:
            return []  # Lightning skips a stage whose loader list is empty
        cfg = self.config
        rank, world_size, _, _ = wds.utils.pytorch_worker_info()  # in the main process: the real rank
        if cfg.num_workers > 0:  # each sample is encoded alone, so the Rust thread pool only warns after fork
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        return torch.utils.data.DataLoader(
            self.dataset(split, train),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            collate_fn=_Collate(self.tokenizer.pad_id),
            worker_init_fn=NodeInfo(rank, world_size),
            # Persistent workers keep the pipeline's epoch counters, so each epoch reshuffles.
            persistent_workers=train and cfg.num_workers > 0,
        )

    def train_dataloader(self):
        return self._loader(self.config.train_split, train=True)

    def val_dataloader(self):
        return self._loader(self.config.val_split, train=False)

    def test_dataloader(self):
        return self._loader(self.config.test_split, train=False)
