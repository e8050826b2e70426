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
:class:`SampleProcessor`, which reads its members into a conversation and its media and
hands them to the model's :class:`~moezoo.processing.processor.Processor`
(``encode_example``: the model's own chat template, tokens and pixels, exactly as at
inference), and skips and counts what is broken.

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
from moezoo.processing.chat import ConversationError
from moezoo.processing.documents import Encoded, TokenizerAdapter, encode_document
from moezoo.processing.processor import (
    DEFAULT_PLACEHOLDERS,
    MEDIA_KEYS,
    MODALITIES,
    Processor,
)

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
    input_ids: list[int]  # (T,): lists, made one tensor per batch by the collate
    labels: list[int]  # (T,)
    media: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict | None = None


class SampleProcessor:
    """A webdataset stage: raw tar samples in, :class:`ProcessedSample` out; bad ones skipped and counted.

    A chat sample (the layout of :mod:`moezoo.data.media`) is read into a conversation and its
    media (images by :func:`~moezoo.processing.image.load_image`, the loader inference uses) and
    encoded by ``processor.encode_example``: the model's chat template, each placeholder expanded
    to the processor's token count, labels -100 except on the assistant's answers. The data's
    placeholders (LLaVA's ``<image>``, ``<audio>``, ``<video>``) become the processor's own (Qwen's
    ``<|image_pad|>``, say). Text samples (``txt``) become ``max_length`` windows. A chat sample
    longer than ``max_length`` is skipped (``too_long``): truncating it would cut off the answer
    it is there to teach.

    Args:
        processor: the model's processor (``Processor(tokenizer, {})`` for text-only models).
        counter: where skipped samples are counted.
        max_length: the token budget of a sample.
        system_prompt: an optional system turn before every conversation.
    """

    def __init__(self, processor: Processor, counter: SkipCounter, max_length: int, system_prompt: str | None = None):
        self.processor, self.counter, self.max_length = processor, counter, max_length
        self.system_prompt = system_prompt
        self.tok = TokenizerAdapter(processor.tokenizer)
        # The data's placeholder -> the model's, where they differ.
        self.renames = {DEFAULT_PLACEHOLDERS[m]: processor.placeholders[m] for m in processor.modalities
                        if processor.placeholders[m] != DEFAULT_PLACEHOLDERS[m]}
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
            return [self._tensors(f"{key}/{i}", enc) for i, enc in enumerate(windows)]
        if "json" not in sample:
            members = sorted(k for k in sample if not k.startswith("__"))
            raise SampleError("missing_key", f"no 'json' or 'txt' member (has {members})")
        try:
            body = json.loads(sample["json"])
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise SampleError("bad_json", type(err).__name__) from None
        if not isinstance(body, dict) or not isinstance(body.get("conversations"), list):
            raise SampleError("bad_json", "expected an object with a 'conversations' list")
        conversation = body["conversations"]
        text = " ".join(_turn_text(t) for t in conversation)
        groups, members = group_members(sample), {}
        for modality in MODALITIES:
            members[modality], conversation = self._check_media(modality, text, groups[modality], conversation)
        media = {}
        for modality in MODALITIES:
            if members[modality]:
                items = [sample[n] if isinstance(n, str) else [sample[f] for f in n] for n in members[modality]]
                media[f"{modality}s"] = [getattr(self, f"_{modality}")(item) for item in items]
        try:
            enc = self.processor.encode_example(self._conversation(conversation), **media, return_tensors=None)
        except ConversationError as err:
            raise SampleError("bad_json", str(err)[:300]) from None
        if len(enc["input_ids"]) > self.max_length:
            raise SampleError("too_long", f"{len(enc['input_ids'])} tokens > max_length={self.max_length}")
        tensors = {k: enc[k] for k in MEDIA_KEYS if k in enc}
        meta = {k: body[k] for k in META_KEYS if k in body}
        return [ProcessedSample(key, enc["input_ids"], enc["labels"], tensors, meta)]

    def _conversation(self, turns: list) -> list:
        """The sample's turns behind the system prompt, with the data's placeholders renamed to the model's."""
        out = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        for turn in turns:
            if isinstance(turn, dict) and self.renames:
                turn = {k: _rename(v, self.renames) if k in ("value", "content") else v for k, v in turn.items()}
            out.append(turn)
        return out

    def _check_media(self, modality: str, text: str, groups: dict, conversations: list[dict]) -> tuple[list, list]:
        """The sample's ``modality`` members in order and the conversation, checked against each other
        (a lone image without a placeholder is put first)."""
        placeholder = DEFAULT_PLACEHOLDERS[modality]
        n_text = text.count(placeholder)
        if not n_text and not groups:
            return [], conversations
        if modality not in self.processor.modalities:  # before the names: the model cannot use them anyway
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

    @staticmethod
    def _image(data: bytes) -> Any:
        return decode_image(data)

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
            try:  # without PyAV this raises ImportError, counted as "error" with its message
                return self.processor.read_video_file(path)
            except (OSError, ValueError) as err:  # PyAV's errors are OSErrors
                raise SampleError("corrupt_video", f"{type(err).__name__}: {err}"[:200]) from None

    @staticmethod
    def _tensors(key: str, enc: Encoded) -> ProcessedSample:
        return ProcessedSample(key, list(enc.input_ids), list(enc.labels))


def _turn_text(turn: Any) -> str:
    """A turn's text (LLaVA's ``value`` or a message's ``content``, its media parts written as the data's
    placeholders), for counting its placeholders."""
    value = turn.get("value", turn.get("content")) if isinstance(turn, dict) else None
    if isinstance(value, list):
        return "".join(str(part.get("text", "")) if part.get("type") == "text" else
                       DEFAULT_PLACEHOLDERS.get(part.get("type"), "") for part in value if isinstance(part, dict))
    return value if isinstance(value, str) else ""


def _rename(value: Any, renames: dict[str, str]) -> Any:
    if isinstance(value, str):
        for old, new in renames.items():
            value = value.replace(old, new)
    return value


def _is_user(turn: Any) -> bool:
    return isinstance(turn, dict) and (turn.get("from") in ("human", "user") or turn.get("role") == "user")


def _prepend(conversations: list[dict], placeholder: str) -> list[dict]:
    out = [dict(t) if isinstance(t, dict) else t for t in conversations]
    first = next((t for t in out if _is_user(t)), None)
    if first is not None:
        key = "value" if "value" in first else "content"
        if isinstance(first.get(key), str):
            first[key] = f"{placeholder}\n{first[key]}"
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
