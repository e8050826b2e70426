"""The ``LightningDataModule`` over webdataset shards, and its padding collate.

Follows Lightning's DataModule contract (one object owns the train / val / test
loaders, so a YAML ``data:`` section fully describes the data) and the webdataset
multi-node recipe described in :mod:`moezoo.data.pipeline`. The model's
:class:`~moezoo.processing.processor.Processor` is the single source of preprocessing
and placeholder token counts, so data and model cannot disagree. A batch is what
``model(**batch)`` takes, in transformers' key names, plus two ride-alongs::

    input_ids (B, T), attention_mask (B, T), labels (B, T; -100 on prompt, placeholders, padding),
    pixel_values (N_images, 3, H, W), input_features (N_audios, mel_bins, frames),
    pixel_values_videos (N_videos, F, 3, H, W)   (each flattened over the batch in placeholder order)
    image_grid_thw (N_images, 3), video_grid_thw (N_videos, 3)   (Qwen3-VL's, whose pixel_values are patches)
    keys (B sample keys), meta (B dicts)          (not tensors; MoEZooModule drops them)
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import webdataset as wds

from moezoo.data.pipeline import NodeInfo, ProcessedSample, SampleProcessor, build_pipeline, samples_per_worker
from moezoo.data.robust import SkipCounter, merge_totals
from moezoo.data.shards import DatasetIndex
from moezoo.processing.chat import IGNORE_INDEX
from moezoo.processing.documents import TokenizerAdapter
from moezoo.processing.processor import MEDIA_KEYS, Processor
from moezoo.train.processors import ONE_SOURCE, resolve_processor
from moezoo.utils.checks import check_min

__all__ = ["DataConfig", "ResumableLoader", "ShardDataModule", "pad_collate", "resolve_processor"]


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
        check_min(self, batch_size=1, num_workers=0, max_length=2, epoch_length=1, shuffle_buffer=0, warn_first=0)


def pad_collate(samples: list[ProcessedSample], pad_id: int) -> dict[str, Any]:
    """Right-pad a list of samples into a batch dict (see the module docstring).

    Example:
        >>> a = ProcessedSample("a", [5, 6, 7], [-100, 6, 7], {"pixel_values": torch.zeros(2, 3, 4, 4)})
        >>> b = ProcessedSample("b", [8], [8], {"pixel_values": torch.ones(1, 3, 4, 4)})
        >>> batch = pad_collate([a, b], pad_id=0)
        >>> batch["input_ids"].tolist(), batch["labels"][1].tolist(), batch["attention_mask"][1].tolist()
        ([[5, 6, 7], [8, 0, 0]], [8, -100, -100], [1, 0, 0])
        >>> batch["pixel_values"].shape, batch["pixel_values"][:, 0, 0, 0].tolist()  # a's two images, then b's
        (torch.Size([3, 3, 4, 4]), [0.0, 0.0, 1.0])
    """
    if not samples:
        raise ValueError("pad_collate got an empty batch")
    length = max(len(s.input_ids) for s in samples)
    pads = [length - len(s.input_ids) for s in samples]  # the rows as lists, each made a tensor once
    batch: dict[str, Any] = {
        "input_ids": torch.tensor([list(s.input_ids) + [pad_id] * p for s, p in zip(samples, pads)]),
        "attention_mask": torch.tensor([[1] * (length - p) + [0] * p for p in pads]),
        "labels": torch.tensor([list(s.labels) + [IGNORE_INDEX] * p for s, p in zip(samples, pads)]),
    }
    for key in MEDIA_KEYS:  # in batch order, each sample's items in placeholder order: the model's order
        parts = [s.media[key] for s in samples if key in s.media]
        if parts:
            if any(p.shape[1:] != parts[0].shape[1:] for p in parts):
                raise ValueError(f"{key} of different shapes in one batch: {[tuple(p.shape) for p in parts]}; "
                                 "the processor must give one size")
            batch[key] = torch.cat(parts)
    batch["keys"] = [s.key for s in samples]
    batch["meta"] = [s.meta or {} for s in samples]
    return batch


class _Collate:
    """Picklable collate bound to a pad id (DataLoader workers may be spawned)."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, samples: list[ProcessedSample]) -> dict[str, Any]:
        return pad_collate(samples, self.pad_id)


class ResumableLoader:
    """The train loader, able to pick up where an interrupted run stopped.

    At the first pass it asks ``position()`` for (epoch, batches of it already trained), read
    from Lightning's loops, which are restored from the checkpoint by then. On a resume it sets
    the pipeline's epoch counters (webdataset's stages count passes from -1) so the shard draws
    and shuffles are that epoch's, and leaves out the batches already trained. A resampled
    stream cannot be indexed, so those batches are read and dropped. Later passes are the
    loader's own epochs.
    """

    def __init__(self, loader: torch.utils.data.DataLoader, position: Any):
        self.loader, self.position, self.started = loader, position, False

    def __iter__(self):
        skip = 0
        if not self.started:
            self.started = True
            epoch, skip = self.position()
            if epoch or skip:
                for stage in getattr(self.loader.dataset, "pipeline", []):
                    if hasattr(stage, "epoch"):
                        stage.epoch = epoch - 1
        batches = iter(self.loader)
        for _ in range(skip):
            next(batches, None)
        yield from batches

    def __len__(self) -> int:
        return len(self.loader)


class ShardDataModule(pl.LightningDataModule):
    """Train / val / test loaders over a dataset dir of webdataset shards (``index.json``).

    Args:
        data_dir: a dataset dir from ``moezoo data build`` / ``from-llava``.
        tokenizer: for text-only models, a tokenizer dir or object (ours or HF) instead of a processor.
        processor: the model's preprocessing: a :class:`~moezoo.processing.processor.Processor`, a
            model or :class:`~moezoo.train.module.MoEZooModule` (``moezoo fit`` links the run's
            module here), a checkpoint dir, or a registered architecture name, whose processor its
            spec builds without building the model (:func:`~moezoo.train.processors.resolve_processor`).
            Resolved on first use, so a module's model is built by the trainer first.
        batch_size: samples per batch, per rank.
        num_workers: DataLoader worker processes per rank.
        max_length: token budget (placeholders expanded); longer chat samples are skipped,
            documents are windowed.
        system_prompt: optional system turn in the chat template.
        resampled: train on resampled shards with a set epoch length (multi-node safe), or
            on one shuffled pass split by node and worker.
        epoch_length: training samples per epoch per rank when ``resampled``.
        shuffle_buffer: samples in each worker's shuffle buffer (0 or 1: no sample shuffle).
        seed: the seed of shard resampling and shuffling.
        train_split, val_split, test_split: split names in ``index.json``; None disables one.
        warn_first: skipped samples named in a warning per process before counting silently.
        train_data: train instead on a dataset generated afresh by ``moezoo data build``:
            ``{"dataset": "shapes-vqa", "n_train": 40000, "seed": 1}`` (the other fields of that
            dataset's config may be given too). It is built once in ``prepare_data`` (rank 0),
            into ``$MOEZOO_CACHE/data`` (default ``~/.cache/moezoo/data``), and reused; validation
            and test stay on ``data_dir``'s splits.
        mix: more dataset dirs whose training split joins ``data_dir``'s (Uni-MoE's image + audio
            mixture): shards are drawn from all of them alike, so each dataset weighs as its
            samples (its shards times their size); the model's processor reads each sample's own media.
        mix_repeat: how many times each ``mix`` dir's shards are listed (default once each), so they
            are drawn that many times as often: with ``mix: [data/tones-qa], mix_repeat: [10]``, its
            4 shards of 500 are drawn as often as 40 shards would be.

    Example:
        >>> data = Path(__file__).resolve().parents[2] / "data"  # the shipped data
        >>> dm = ShardDataModule(data / "shapes-vqa", processor="mm_tiny_cnn", batch_size=8, epoch_length=8)
        >>> batch = next(iter(dm.train_dataloader()))
        >>> sorted(batch), tuple(batch["pixel_values"].shape)
        (['attention_mask', 'input_ids', 'keys', 'labels', 'meta', 'pixel_values'], (8, 3, 32, 32))
    """

    def __init__(
        self,
        data_dir: str,
        tokenizer: str | Any | None = None,
        processor: str | Any | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        max_length: int = 256,
        system_prompt: str | None = None,
        resampled: bool = True,
        epoch_length: int = 10_000,
        shuffle_buffer: int = 500,
        seed: int = 0,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        warn_first: int = 5,
        train_data: dict[str, Any] | None = None,
        mix: list[str] | None = None,
        mix_repeat: list[int] | None = None,
    ):
        super().__init__()
        args = {**locals(), "data_dir": str(data_dir)}
        self.config = DataConfig(**{f.name: args[f.name] for f in dataclasses.fields(DataConfig)})
        if (processor is None) == (tokenizer is None):
            raise ValueError(ONE_SOURCE)
        # Recorded in checkpoints as plain values (they load with weights_only=True); a processor or
        # tokenizer object is the model's, saved with it.
        sources = (("tokenizer", tokenizer), ("processor", processor))
        named = {k: str(v) for k, v in sources if isinstance(v, (str, Path))}
        self.save_hyperparameters({**dataclasses.asdict(self.config), **named})
        self.index = DatasetIndex.load(data_dir)  # fail now, not when the first loader is built
        for split in (train_split if train_data is None else None, val_split, test_split):
            if split is not None:
                self.index.urls(split)  # raises KeyError naming the splits that exist
        self.train_data = dict(train_data) if train_data else None
        if self.train_data is not None:
            from moezoo.data.builders import build_config

            name, fields = self._train_build()
            build_config(name, **fields)  # a bad name or field fails now
        self._train_index: DatasetIndex | None = None
        if mix_repeat is not None and (len(mix_repeat) != len(mix or []) or min(mix_repeat, default=1) < 1):
            raise ValueError(f"mix_repeat={mix_repeat} must give one count >= 1 per mix dir ({len(mix or [])}: "
                             f"{mix or []})")
        self.mix = [DatasetIndex.load(d) for d in (mix or [])]  # a missing dir fails now
        self.mix_repeat = list(mix_repeat or [1] * len(self.mix))
        for extra in self.mix:
            if train_split is not None:
                extra.urls(train_split)
        self._sources = (processor, tokenizer)
        self._processor: Processor | None = None
        self._tokenizer: TokenizerAdapter | None = None
        self._counters: dict[str, SkipCounter] = {}

    @property
    def processor(self) -> Processor:
        """The model's processor, resolved on first use (:func:`resolve_processor`)."""
        if self._processor is None:
            self._processor = resolve_processor(*self._sources)
        return self._processor

    @property
    def tokenizer(self) -> TokenizerAdapter:
        """The processor's tokenizer, behind :class:`~moezoo.processing.documents.TokenizerAdapter`."""
        if self._tokenizer is None:
            self._tokenizer = TokenizerAdapter(self.processor.tokenizer)
        return self._tokenizer

    def skip_counters(self) -> dict[str, SkipCounter]:
        """Split -> its :class:`SkipCounter` (what :class:`SkippedSamplesLogger` logs)."""
        return dict(self._counters)

    def skipped(self) -> dict[str, int]:
        """Reason -> skipped samples so far, over every loader built."""
        return merge_totals(self._counters)

    def prepare_data(self) -> None:
        """Build ``train_data`` once (Lightning calls this on one process before the others read it)."""
        self.train_index()

    def train_index(self) -> DatasetIndex:
        """The index the training split is read from: ``data_dir``'s, or the built ``train_data``'s."""
        if self.train_data is None:
            return self.index
        if self._train_index is None:
            from moezoo.data.builders import cached_build

            name, fields = self._train_build()
            self._train_index = DatasetIndex.load(cached_build(name, **fields))
        return self._train_index

    def _train_build(self) -> tuple[str, dict[str, Any]]:
        """``train_data`` as (dataset name, its config fields)."""
        fields = dict(self.train_data)
        return fields.pop("dataset", ""), fields

    def dataset(self, split: str, train: bool = False) -> wds.DataPipeline:
        """The webdataset pipeline of ``split``; ``train`` turns on shuffling and (if set) resampling."""
        cfg = self.config
        urls = self.train_index().urls(split) if train else self.index.urls(split)
        if train:
            urls += [url for extra, k in zip(self.mix, self.mix_repeat) for url in extra.urls(split) * k]
        counter = self._counters.setdefault(split, SkipCounter(cfg.num_workers, cfg.warn_first))
        stage = SampleProcessor(self.processor, counter, cfg.max_length, cfg.system_prompt)
        resampled = train and cfg.resampled
        return build_pipeline(
            urls,
            stage,
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
        loader = self._loader(self.config.train_split, train=True)
        return ResumableLoader(loader, self._resume_position) if loader != [] else loader

    def _resume_position(self) -> tuple[int, int]:
        """(epoch, batches of it already trained) when Lightning resumes a run, else (0, 0).

        Read when the first pass starts, after Lightning restored its loops (see :class:`ResumableLoader`).
        """
        trainer = getattr(self, "trainer", None)
        if trainer is None or not self.config.train_split:
            return 0, 0
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        # "ready": the batches fetched; a checkpoint saved at a batch's end counts it there first.
        return int(trainer.current_epoch), int(progress.ready)

    def val_dataloader(self):
        return self._loader(self.config.val_split, train=False)

    def test_dataloader(self):
        return self._loader(self.config.test_split, train=False)
