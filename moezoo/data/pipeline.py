"""webdataset pipelines: shards -> decoded, preprocessed, tokenised samples.

Two pipelines, as the webdataset docs recommend for multi-node training:

* **training, resampled** (``ResampledShards`` + ``with_epoch``): every worker of every
  rank draws shards with replacement from its own seeded stream, so an epoch has a set
  length however many ranks and workers there are; no split is needed.
* **evaluation (and non-resampled training)**: the shard list is split by node, then by
  worker (``split_by_node``, ``split_by_worker``), so within an epoch every sample is
  read exactly once across all processes.

Seeds are derived from (seed, epoch, rank, worker), so a run is deterministic for a
seed and a given number of ranks and workers. Each sample passes through a
:class:`SampleProcessor`, which decodes it, applies the encoder's own preprocessing
and the chat template, and skips and counts what is broken.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import re
import wave
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch
import webdataset as wds

from moezoo.processing.chat import ChatTemplate, Encoded, TokenizerAdapter, encode_document
from moezoo.data.robust import SampleError, SkipCounter
from moezoo.processing.tokens import AUDIO, IMAGE

IMAGE_EXTS = ("png", "jpg", "jpeg", "webp", "bmp")
AUDIO_EXTS = ("wav",)


def decode_image(data: bytes):
    """Decode image bytes to an RGB PIL image; a broken file raises ``SampleError('corrupt_image')``.

    Example:
        >>> from moezoo.data.shards import encode_png
        >>> from PIL import Image
        >>> decode_image(encode_png(Image.new("L", (3, 2)))).mode
        'RGB'
        >>> decode_image(b"not a png")
        Traceback (most recent call last):
        ...
        moezoo.data.robust.SampleError: corrupt_image: UnidentifiedImageError
    """
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # PIL is lazy: truncation only shows when the pixels are read
        return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise SampleError("corrupt_image", type(err).__name__) from None


def decode_wav(data: bytes) -> tuple[torch.Tensor, int]:
    """Decode a PCM WAV file to a float waveform ``(channels, samples)`` in [-1, 1] and its rate.

    Example:
        >>> buf = io.BytesIO()
        >>> with wave.open(buf, "wb") as w:
        ...     w.setnchannels(1); w.setsampwidth(2); w.setframerate(8000); w.writeframes(b"\\x00\\x40" * 4)
        >>> wav, rate = decode_wav(buf.getvalue())
        >>> tuple(wav.shape), rate, wav[0, 0].item()
        ((1, 4), 8000, 0.5)
    """
    try:
        with wave.open(io.BytesIO(data), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
        dtype = {1: np.uint8, 2: np.int16, 4: np.int32}[width]
        pcm = np.frombuffer(frames, dtype=dtype).astype(np.float32)
    except (wave.Error, EOFError, KeyError, ValueError) as err:
        raise SampleError("corrupt_audio", type(err).__name__) from None
    pcm = (pcm - 128.0) / 128.0 if width == 1 else pcm / float(2 ** (8 * width - 1))
    return torch.from_numpy(pcm.reshape(-1, channels).T.copy()), rate


def default_image_transform(image_size: int | None = None) -> Callable:
    """PIL image -> float tensor ``(3, H, W)`` in [0, 1], resized to a square if ``image_size`` is set.

    Pass an encoder's own transform instead (timm ``create_transform``, open_clip's
    ``preprocess``) to match what its weights were trained on.
    """
    return _ToTensor(image_size)


class _ToTensor:
    def __init__(self, size: int | None):
        self.size = size

    def __call__(self, image) -> torch.Tensor:
        from PIL import Image

        if self.size is not None and image.size != (self.size, self.size):
            image = image.resize((self.size, self.size), Image.BILINEAR)
        return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()


@dataclass
class ProcessedSample:
    """A tokenised sample, ready for the collate."""

    key: str
    input_ids: torch.Tensor  # (T,)
    labels: torch.Tensor  # (T,)
    image: Any = None
    audio: Any = None
    meta: dict | None = None


class SampleProcessor:
    """A webdataset stage: raw tar samples in, :class:`ProcessedSample` out; bad ones skipped and counted.

    Chat samples have ``json`` with LLaVA ``conversations`` (plus an image / ``wav`` member
    when a turn holds ``<image>`` / ``<audio>``); text samples have ``txt`` and become
    ``max_length`` windows. A chat sample longer than ``max_length`` is skipped
    (``too_long``): truncating it would cut off the answer it is there to teach.
    """

    def __init__(
        self,
        tokenizer: Any,
        template: ChatTemplate,
        counter: SkipCounter,
        max_length: int,
        image_transform: Callable | None = None,
        audio_transform: Callable | None = None,
    ):
        self.tok = tokenizer if isinstance(tokenizer, TokenizerAdapter) else TokenizerAdapter(tokenizer)
        self.template, self.counter, self.max_length = template, counter, max_length
        self.image_transform = image_transform or default_image_transform()
        self.audio_transform = audio_transform

    def __call__(self, src: Iterator[dict]) -> Iterator[ProcessedSample]:
        for sample in src:
            key = sample.get("__key__", "?")
            try:
                yield from self.process(sample)
            except SampleError as err:
                self.counter.skip(err.reason, key, err.detail)
            except Exception as err:  # a user transform or tokenizer failing must not end the run
                self.counter.skip("error", key, f"{type(err).__name__}: {err}"[:200])

    def process(self, sample: dict) -> list[ProcessedSample]:
        key = sample["__key__"]
        if "txt" in sample:  # a document (its json, if any, is provenance only)
            text = sample["txt"].decode("utf-8", errors="replace")
            windows = encode_document(text, self.tok, self.max_length)
            return [self._tensors(f"{key}/{i}", enc, None, None, None) for i, enc in enumerate(windows)]
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
        image = audio = None
        image_ext = next((e for e in IMAGE_EXTS if e in sample), None)
        if IMAGE in text or image_ext:
            if image_ext is None:
                raise SampleError("missing_key", "a turn holds <image> but the sample has no image member")
            if IMAGE not in text:  # LLaVA puts the image first when the text does not place it
                conversations = _prepend(conversations, IMAGE)
            elif text.count(IMAGE) > 1:
                raise SampleError("bad_json", f"{text.count(IMAGE)} <image> placeholders; one image per sample")
            image = self.image_transform(decode_image(sample[image_ext]))
        if AUDIO in text:
            audio_ext = next((e for e in AUDIO_EXTS if e in sample), None)
            if audio_ext is None:
                raise SampleError("missing_key", "a turn holds <audio> but the sample has no wav member")
            wav, rate = decode_wav(sample[audio_ext])
            audio = self.audio_transform(wav, rate) if self.audio_transform else wav
        try:
            enc = self.template.encode(conversations, self.tok)
        except ValueError as err:
            raise SampleError("bad_json", str(err)) from None
        if len(enc.input_ids) > self.max_length:
            raise SampleError("too_long", f"{len(enc.input_ids)} tokens > max_length={self.max_length}")
        meta = {k: body[k] for k in ("id", "question_id", "image_id", "answer", "question_type", "caption") if k in body}
        return [self._tensors(key, enc, image, audio, meta)]

    @staticmethod
    def _tensors(key: str, enc: Encoded, image: Any, audio: Any, meta: dict | None) -> ProcessedSample:
        ids = torch.tensor(enc.input_ids, dtype=torch.long)
        return ProcessedSample(key, ids, torch.tensor(enc.labels, dtype=torch.long), image, audio, meta)


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
    if resampled:
        if not samples_per_worker:
            raise ValueError("a resampled pipeline needs samples_per_worker (the epoch length)")
        source = [wds.ResampledShards(urls, seed=seed, deterministic=True)]
    else:
        source = [wds.SimpleShardList(sorted(urls, key=_key_order))]
        if shuffle:  # the same order on every rank, so split_by_node still partitions the shards
            source.append(wds.detshuffle(bufsize=len(urls), initial=len(urls), seed=seed))
        source += [wds.split_by_node, wds.split_by_worker]
    stages = [*source, wds.tarfile_to_samples(handler=counter.handler("bad_shard"))]
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
