"""webdataset pipelines: shards -> decoded, preprocessed, tokenised samples.

Two pipelines, as the webdataset docs recommend for multi-node training:

* **training, resampled** (``ResampledShards`` + ``with_epoch``): every worker of every
  rank draws shards with replacement from its own seeded stream, so an epoch has a set
  length however many ranks and workers there are; no split is needed.
* **evaluation (and non-resampled training)**: the work is split between the ranks and their
  workers, so within an epoch every sample is read exactly once across all processes: by
  shard (webdataset's ``split_by_node`` then ``split_by_worker``) when there are at least as
  many shards as readers, else by sample (:class:`ReaderSplit`): a one-shard validation split
  under DDP would otherwise leave rank 1 with nothing, and its collective calls would hang.

Seeds are derived from (seed, epoch, rank, worker), so a run is deterministic for a
seed and a given number of ranks and workers. Each sample passes through a
:class:`SampleProcessor`, which decodes it, preprocesses its media and tokenises its
conversation with the model's :class:`~moezoo.processing.processor.Processor` (so data
and model cannot disagree on token counts or pixels), and skips and counts what is broken.

The layout of a sample's members is :mod:`moezoo.data.media`'s.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
import webdataset as wds

from moezoo.data.media import decode_image, group_members, in_order
from moezoo.data.robust import SampleError, SkipCounter
from moezoo.processing.chat import Encoded, TokenizerAdapter, encode_document
from moezoo.processing.processor import DEFAULT_PLACEHOLDERS, INPUT_KEYS, MODALITIES, Processor

# A skip streak this long means the data and the processor do not fit (say, image data for
# a text-only model): stop with an error instead of skipping forever in a resampled epoch.
MAX_SKIP_STREAK = 1000
# What a chat sample's JSON may carry besides the conversation, passed on in the batch's ``meta``.
META_KEYS = ("id", "question_id", "image_id", "answer", "question_type", "caption")


@dataclass
class ProcessedSample:
    """A tokenised sample, ready for the collate.

    Attributes:
        media: model input key (``pixel_values``, ``input_features``, ``pixel_values_videos``)
            -> this sample's preprocessed items, ``(n, ...)`` in placeholder order.
    """

    key: str
    input_ids: torch.Tensor  # (T,)
    labels: torch.Tensor  # (T,)
    media: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict | None = None


class PlaceholderTokens(TokenizerAdapter):
    """The processor's tokenizer, with the data's placeholders mapped to the processor's tokens.

    Data follows LLaVA and writes ``<image>``; a model may call its placeholder otherwise
    (Qwen's ``<|image_pad|>``). The chat template asks :meth:`placeholder_id` for the data's
    placeholder and gets the model's id, which is also masked out of the labels.
    """

    def __init__(self, processor: Processor):
        super().__init__(processor.tokenizer)
        self._mapped: dict[str, int] = {}
        for modality in processor.modalities:  # raises, naming the token, if the tokenizer lacks one
            self._mapped[DEFAULT_PLACEHOLDERS[modality]] = super().placeholder_id(processor.placeholders[modality])
        self.placeholder_ids = frozenset(self.placeholder_ids | set(self._mapped.values()))

    def placeholder_id(self, token: str) -> int:
        return self._mapped[token] if token in self._mapped else super().placeholder_id(token)


class SampleProcessor:
    """A webdataset stage: raw tar samples in, :class:`ProcessedSample` out; bad ones skipped and counted.

    Chat samples follow the layout of the module docstring; their media go through
    ``processor``'s image / audio / video preprocessing and each placeholder expands to
    the processor's token count, with labels -100 on prompts and placeholders
    (``processor.training_template``). Text samples (``txt``) become ``max_length``
    windows. A chat sample longer than ``max_length`` is skipped (``too_long``):
    truncating it would cut off the answer it is there to teach.

    Args:
        processor: the model's processor (``Processor(tokenizer, {})`` for text-only models).
        counter: where skipped samples are counted.
        max_length: the token budget of a sample.
        system_prompt: an optional system turn before every conversation.
    """

    def __init__(self, processor: Processor, counter: SkipCounter, max_length: int, system_prompt: str | None = None):
        self.processor, self.counter, self.max_length = processor, counter, max_length
        self.tok = PlaceholderTokens(processor)
        self.template = processor.training_template(system_prompt)
        self._streak = 0

    def __call__(self, src: Iterator[dict]) -> Iterator[ProcessedSample]:
        for sample in src:
            key = sample.get("__key__", "?")
            try:
                out = self.process(sample)
            except SampleError as err:
                self._skip(err.reason, key, err.detail)
                continue
            except Exception as err:  # a user's preprocessing or tokenizer failing must not end the run
                self._skip("error", key, f"{type(err).__name__}: {err}"[:200])
                continue
            self._streak = 0
            yield from out

    def _skip(self, reason: str, key: str, detail: str) -> None:
        self.counter.skip(reason, key, detail)
        self._streak += 1
        if self._streak >= MAX_SKIP_STREAK:
            totals = {r: n for r, n in self.counter.totals().items() if n}
            raise RuntimeError(f"the last {self._streak} samples were all skipped (so far: {totals}; the last: "
                               f"{reason}: {detail}); check that the data fits the processor "
                               f"(it takes {self.processor.modalities or 'text only'})")

    def process(self, sample: dict) -> list[ProcessedSample]:
        key = sample["__key__"]
        if "txt" in sample:  # a document (its json, if any, is provenance only)
            text = sample["txt"].decode("utf-8", errors="replace")
            windows = encode_document(text, self.tok, self.max_length)
            return [self._tensors(f"{key}/{i}", enc, {}, None) for i, enc in enumerate(windows)]
        if "json" not in sample:
            members = sorted(k for k in sample if not k.startswith("__"))
            raise SampleError("missing_key", f"no 'json' or 'txt' member (has {members})")
        try:
            body = json.loads(sample["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SampleError("bad_json", type(err).__name__) from None
        if not isinstance(body, dict) or not isinstance(body.get("conversations"), list):
            raise SampleError("bad_json", "expected an object with a 'conversations' list")
        conversations = body["conversations"]
        text = " ".join(str(t.get("value", "")) for t in conversations if isinstance(t, dict))
        groups, members = group_members(sample), {}
        for modality in MODALITIES:
            members[modality], conversations = self._check_media(modality, text, groups[modality], conversations)
        try:
            enc = self.template.encode(conversations, self.tok)
        except ValueError as err:
            raise SampleError("bad_json", str(err)) from None
        if len(enc.input_ids) > self.max_length:
            raise SampleError("too_long", f"{len(enc.input_ids)} tokens > max_length={self.max_length}")
        media = {}
        for modality in MODALITIES:  # decoded only now: a sample skipped above costs no decoding
            if members[modality]:
                items = [sample[n] if isinstance(n, str) else [sample[f] for f in n] for n in members[modality]]
                media[INPUT_KEYS[modality]] = self._preprocess(modality, items)
        meta = {k: body[k] for k in META_KEYS if k in body}
        return [self._tensors(key, enc, media, meta)]

    def _check_media(self, modality: str, text: str, groups: dict, conversations: list[dict]) -> tuple[list, list]:
        """The sample's ``modality`` members in order and the conversation, checked against each other
        (a lone image without a placeholder is put first)."""
        placeholder = DEFAULT_PLACEHOLDERS[modality]
        n_text = text.count(placeholder)
        if not n_text and not groups:
            return [], conversations
        if modality not in self.processor.num_tokens:  # before the names: the model cannot use them anyway
            raise SampleError("unsupported_modality", f"the sample has {modality} ({n_text} {placeholder}, "
                                                      f"{len(groups)} member(s)) but the model takes "
                                                      f"{self.processor.modalities or 'text only'}")
        members = in_order(modality, groups)
        n_media = len(members)
        if not n_media:
            raise SampleError("missing_key", f"a turn holds {placeholder} but the sample has no {modality} member")
        if not n_text and n_media == 1 and modality == "image":  # LLaVA puts the image first when the text does not
            return members, _prepend(conversations, placeholder)
        if n_text != n_media:
            raise SampleError("media_mismatch", f"{n_text} {placeholder} placeholder(s) but {n_media} {modality} "
                                                f"member(s) {members}")
        return members, conversations

    def _preprocess(self, modality: str, items: list) -> torch.Tensor:
        """``(n, ...)`` model inputs of one sample's ``modality`` items (member bytes; a video's frames a list)."""
        if modality == "image":
            return self.processor.image_processor([decode_image(data) for data in items])
        if modality == "audio":
            return self.processor.audio_processor([self._audio(data) for data in items])
        return self.processor.video_processor([self._video(item) for item in items])

    def _audio(self, data: bytes) -> tuple[Any, int]:
        from moezoo.processing.audio import load_audio

        try:
            wave_CS, rate = load_audio(data)
        except ValueError as err:
            raise SampleError("corrupt_audio", str(err)[:200]) from None
        features = self.processor.audio_processor
        limit, to_rate = getattr(features, "max_samples", None), getattr(features, "sampling_rate", None)
        # Checked here, not left to the processor's ValueError, so it is counted as what it is.
        if limit is not None and math.ceil(wave_CS.shape[-1] * to_rate / rate) > limit:  # resample_poly's length
            raise SampleError("too_long", f"audio of {wave_CS.shape[-1] / rate:.2f} s > the encoder's window "
                                          f"of {limit / to_rate:g} s")
        return wave_CS, rate

    def _video(self, item: bytes | list[bytes]) -> Any:
        if isinstance(item, list):  # frames
            return [decode_image(data) for data in item]
        # PyAV reads a path; the frames are decoded (and the file removed) before returning.
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "video")
            with open(path, "wb") as f:
                f.write(item)
            from moezoo.processing.video import read_video

            try:  # without PyAV this raises ImportError, counted as "error" with its message
                return read_video(path, self.processor.video_frames)
            except (OSError, ValueError) as err:  # PyAV's errors are OSErrors
                raise SampleError("corrupt_video", f"{type(err).__name__}: {err}"[:200]) from None

    @staticmethod
    def _tensors(key: str, enc: Encoded, media: dict[str, torch.Tensor], meta: dict | None) -> ProcessedSample:
        ids = torch.tensor(enc.input_ids, dtype=torch.long)
        return ProcessedSample(key, ids, torch.tensor(enc.labels, dtype=torch.long), media, meta)


def _prepend(conversations: list[dict], placeholder: str) -> list[dict]:
    out = [dict(t) for t in conversations]
    first = next((t for t in out if t.get("from") in ("human", "user")), None)
    if first is not None:
        first["value"] = f"{placeholder}\n{first['value']}"
    return out


class WorkerShuffle(wds.PipelineStage):
    """A sample shuffle buffer seeded by (seed, epoch, rank, worker): reproducible, and different per worker.

    ``wds.detshuffle`` seeds with (seed, epoch) only, so every worker would shuffle alike.
    """

    def __init__(self, bufsize: int, seed: int):
        self.bufsize, self.seed, self.epoch = bufsize, seed, -1

    def run(self, src):
        self.epoch += 1
        rng = random.Random(wds.utils.make_seed(self.seed, self.epoch, wds.utils.pytorch_worker_seed()))
        return wds.shuffle(self.bufsize, min(self.bufsize, 100), rng=rng)(src)


class NodeInfo:
    """DataLoader ``worker_init_fn``: tells webdataset in each worker which rank it serves.

    Workers started by forkserver/spawn do not see the parent's ``torch.distributed``
    state, and ``split_by_node`` / the resampling seed would then all think they are
    rank 0; webdataset reads ``RANK`` / ``WORLD_SIZE`` from the environment first.
    """

    def __init__(self, rank: int, world_size: int):
        self.rank, self.world_size = rank, world_size

    def __call__(self, worker_id: int) -> None:
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(self.rank), str(self.world_size)


class ReaderSplit:
    """Share ``num_shards`` shards between the readers (every DataLoader worker of every rank).

    With at least as many shards as readers, :meth:`shards` deals the shards out (webdataset's
    ``split_by_node`` then ``split_by_worker``) and :meth:`samples` passes everything through.
    With fewer, every reader opens every shard and :meth:`samples` keeps every ``n``-th sample
    from its own offset, so no reader is left empty and each sample is still read once. The
    readers are counted where the pipeline runs (``pytorch_worker_info``).

    Example:
        >>> split = ReaderSplit(num_shards=1)
        >>> list(split.samples(iter(range(5))))  # one process, no workers: one reader keeps all
        [0, 1, 2, 3, 4]
    """

    def __init__(self, num_shards: int):
        self.num_shards = num_shards

    @staticmethod
    def reader() -> tuple[int, int]:
        """(this reader's index, number of readers)."""
        rank, world_size, worker, num_workers = wds.utils.pytorch_worker_info()
        return rank * num_workers + worker, world_size * num_workers

    def by_shard(self) -> bool:
        return self.num_shards >= self.reader()[1]

    def shards(self, src: Iterator[Any]) -> Iterator[Any]:
        if self.by_shard():
            yield from wds.split_by_worker(wds.split_by_node(src))
        else:
            yield from src

    def samples(self, src: Iterator[Any]) -> Iterator[Any]:
        if self.by_shard():
            yield from src
        else:
            index, readers = self.reader()
            yield from itertools.islice(src, index, None, readers)


def _key_order(key: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", key)]


def build_pipeline(
    urls: list[str],
    processor: SampleProcessor,
    *,
    resampled: bool,
    shuffle: bool,
    seed: int = 0,
    shuffle_buffer: int = 500,
    samples_per_worker: int | None = None,
) -> wds.DataPipeline:
    """The webdataset pipeline over ``urls`` (see the module docstring for the two kinds).

    Args:
        resampled: draw shards with replacement; needs ``samples_per_worker`` (the epoch).
        shuffle: shuffle shards (per epoch, identically on every rank) and samples.
    """
    if not urls:
        raise ValueError("no shards given")
    counter = processor.counter
    split = None
    if resampled:
        if not samples_per_worker:
            raise ValueError("a resampled pipeline needs samples_per_worker (the epoch length)")
        source = [wds.ResampledShards(urls, seed=seed, deterministic=True)]
    else:
        source = [wds.SimpleShardList(sorted(urls, key=_key_order))]
        if shuffle:  # the same order on every rank, so split_by_node still partitions the shards
            source.append(wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed))
        split = ReaderSplit(len(urls))
        source.append(split.shards)
    stages = [*source, wds.tarfile_to_samples(handler=counter.handler("bad_shard"))]
    if split is not None:
        stages.append(split.samples)
    if shuffle and shuffle_buffer > 1:
        stages.append(WorkerShuffle(shuffle_buffer, seed))
    pipeline = wds.DataPipeline(*stages, processor)
    return pipeline.with_epoch(samples_per_worker) if resampled else pipeline


def samples_per_worker(epoch_length: int, num_workers: int) -> int:
    """Per-worker epoch so the workers of one rank together give ``epoch_length`` samples.

    Example:
        >>> samples_per_worker(1000, 3)
        334
    """
    return math.ceil(epoch_length / max(1, num_workers))
