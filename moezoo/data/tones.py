"""tones-qa: procedurally generated beeps with exact answers, the audio sibling of shapes-vqa.

The audio QA set of the Uni-MoE-style image + audio recipe (Uni-MoE, Li et al. 2024,
arXiv 2405.11273, reads audio through a Whisper encoder and a resampler; this set lets
that path train and be evaluated offline, on a CPU, in minutes). Each clip is rendered
from a *clip description* (sample rate, beeps with start, duration, pitch and loudness,
the noise level and noise seed) that is stored in the sample's JSON, so every answer can
be checked against what was rendered. Question types: ``count`` (1-4 beeps), ``pitch``
(is the second beep higher or lower than the first), ``longer`` (which of the first two
beeps is longer) and ``pitch_level`` (low, middle or high, for a single beep). Answers
are balanced within each type.

**Why 8 kHz, 8-bit and at most 1 s.** The shipped data must stay within the repository's
size budget (``tests/data/test_shipped_data.py``). 16-bit PCM with noise costs about
14 kB a second even gzipped, so the defaults are 8 kHz, 8-bit unsigned PCM WAV (written
with the standard library's :mod:`wave`) and clips of at most one second: one second is
also the window of the tiny Whisper encoders (``max_source_positions=50``), and the
processor resamples to Whisper's 16 kHz. Pitches divide 8000 Hz, so every beep repeats
after a whole number of samples and gzip finds the repeats. The noise is a little:
Gaussian with a quarter of an 8-bit step as its deviation, so about one sample in twenty
is off by a step and silence is not digital zero; more noise costs size.
``sample_rate=16000, sample_width=2`` in :class:`TonesBuildConfig` writes 16-bit 16 kHz
clips instead.
"""

from __future__ import annotations

import io
import random
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from moezoo.data.shards import BuildConfig, DatasetIndex, encode_json
from moezoo.data.vqa import build_vqa_dataset, vqa_prompt
from moezoo.processing.tokens import AUDIO
from moezoo.utils.checks import require

QUESTION_TYPES = ("count", "pitch", "longer", "pitch_level")
# Every pitch divides 8000 Hz (a whole-sample period at 8 and 16 kHz); neighbours are 1.25-1.6x apart.
PITCHES_HZ = (200, 250, 320, 400, 500, 800, 1000, 1600, 2000)
# pitch_level draws from these; each level is at least 1.6x away from the next.
PITCH_LEVELS = {"low": (200, 250), "middle": (400, 500), "high": (1600, 2000)}
# A "higher/lower" pair is at least this ratio apart (about a fifth), so no answer hinges on a small step.
MIN_PITCH_RATIO = 1.5
MAX_BEEPS = 4
MAX_CLIP_MS = 1000  # the tiny Whisper encoders' window
BEEP_MS = (60, 200)
GAP_MS = (50, 130)  # silence between beeps: several 10 ms Whisper frames
LEAD_MS, TAIL_MS = (20, 120), (20, 100)
# "longer": the long beep lasts 1.7-2.5x the short one, so the answer is never a close call.
SHORT_MS, LONG_RATIO = (60, 140), (1.7, 2.5)
AMPLITUDE = (0.25, 0.6)
FADE_MS = 5  # raised-cosine ramps, so beeps start and stop without clicks


@dataclass
class TonesBuildConfig(BuildConfig):
    """Sizes and seed of tones-qa (the fields of :class:`~moezoo.data.shards.BuildConfig`, plus):

    Args:
        sample_rate: Hz of the written WAV files (the processor resamples to 16 kHz).
        sample_width: bytes per sample: 1 (8-bit unsigned PCM) or 2 (16-bit).
        noise: standard deviation of the Gaussian noise added to every clip (full scale 1).

    Example:
        >>> TonesBuildConfig().split_sizes()
        {'train': 2000, 'val': 100, 'test': 300}
        >>> TonesBuildConfig(sample_rate=4000)
        Traceback (most recent call last):
        ...
        ValueError: TonesBuildConfig.sample_rate=4000 must be a multiple of 1000 in [8000, 48000]
    """

    n_train: int = 2000
    n_val: int = 100
    n_test: int = 300
    samples_per_shard: int = 500
    sample_rate: int = 8000
    sample_width: int = 1
    noise: float = 0.002

    def __post_init__(self) -> None:
        super().__post_init__()
        # The highest pitch needs 2.5 samples a period or more; whole milliseconds need a multiple of 1000.
        require(self, "sample_rate", 8000 <= self.sample_rate <= 48000 and self.sample_rate % 1000 == 0,
                "must be a multiple of 1000 in [8000, 48000]")
        require(self, "sample_width", self.sample_width in (1, 2), "must be 1 (8-bit) or 2 (16-bit)")
        require(self, "noise", 0.0 <= self.noise <= 0.05, "must be in [0, 0.05] (a little noise)")


DEFAULT_CONFIG = TonesBuildConfig()


def random_clip(qtype: str, rng: random.Random, sample_rate: int = 8000, noise: float = 0.002) -> tuple[dict, str]:
    """A clip description that poses a question of type ``qtype``, and that question's answer.

    The answer is drawn first (uniformly), then a clip that has it, so every type is balanced.

    Example:
        >>> clip, answer = random_clip("count", random.Random(0))
        >>> len(clip["beeps"]) == int(answer), sorted(clip["beeps"][0])
        (True, ['amplitude', 'duration_ms', 'freq_hz', 'start_ms'])
    """
    if qtype == "count":
        answer = str(rng.randint(1, MAX_BEEPS))
        n, freqs, durations = int(answer), [], []
    elif qtype == "pitch":
        answer, n = rng.choice(("higher", "lower")), rng.randint(2, MAX_BEEPS)
        pairs = [(a, b) for a in PITCHES_HZ for b in PITCHES_HZ if b >= MIN_PITCH_RATIO * a]
        low, high = rng.choice(pairs)
        freqs, durations = ([low, high] if answer == "higher" else [high, low]), []
    elif qtype == "longer":
        answer, n = rng.choice(("first", "second")), rng.randint(2, MAX_BEEPS)
        short = rng.randint(*SHORT_MS)
        long = round(short * rng.uniform(*LONG_RATIO))
        freqs, durations = [], ([long, short] if answer == "first" else [short, long])
    elif qtype == "pitch_level":
        answer, n = rng.choice(list(PITCH_LEVELS)), 1
        freqs, durations = [rng.choice(PITCH_LEVELS[answer])], []
    else:
        raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")
    freqs += [rng.choice(PITCHES_HZ) for _ in range(n - len(freqs))]
    amplitudes = [round(rng.uniform(*AMPLITUDE), 2) for _ in range(n)]
    while True:  # redraw the free timings until the clip fits the window (a few tries at most)
        lengths = durations + [rng.randint(*BEEP_MS) for _ in range(n - len(durations))]
        gaps = [rng.randint(*GAP_MS) for _ in range(n - 1)]
        lead, tail = rng.randint(*LEAD_MS), rng.randint(*TAIL_MS)
        if lead + sum(lengths) + sum(gaps) + tail <= MAX_CLIP_MS:
            break
    beeps, t = [], lead
    for i in range(n):
        beeps.append({"start_ms": t, "duration_ms": lengths[i], "freq_hz": freqs[i], "amplitude": amplitudes[i]})
        t += lengths[i] + (gaps[i] if i < n - 1 else 0)
    clip = {"sample_rate": sample_rate, "duration_ms": t + tail, "beeps": beeps, "noise": noise,
            "noise_seed": rng.randrange(2**31)}
    return clip, answer


def render_clip(clip: dict[str, Any]) -> np.ndarray:
    """The float64 waveform ``(samples,)`` in [-1, 1] that ``clip`` describes.

    Example:
        >>> clip = {"sample_rate": 8000, "duration_ms": 100, "noise": 0.0, "noise_seed": 0,
        ...         "beeps": [{"start_ms": 20, "duration_ms": 50, "freq_hz": 1000, "amplitude": 0.5}]}
        >>> x = render_clip(clip)
        >>> x.shape, float(abs(x[:160]).max()), round(float(abs(x).max()), 2)
        ((800,), 0.0, 0.5)
    """
    rate = clip["sample_rate"]
    x = np.zeros(clip["duration_ms"] * rate // 1000)
    for beep in clip["beeps"]:
        start, n = beep["start_ms"] * rate // 1000, beep["duration_ms"] * rate // 1000
        # Phase from integers, (f * t) mod rate: a pitch dividing the rate repeats bit for bit.
        phase = (beep["freq_hz"] * np.arange(n, dtype=np.int64)) % rate
        tone = beep["amplitude"] * np.sin(2 * np.pi * phase / rate)
        ramp = min(n // 2, FADE_MS * rate // 1000)
        fade = 0.5 - 0.5 * np.cos(np.pi * (np.arange(ramp) + 0.5) / ramp)
        envelope = np.ones(n)
        envelope[:ramp], envelope[n - ramp:] = fade, fade[::-1]
        x[start:start + n] += tone * envelope
    if clip["noise"] > 0:
        x += np.random.default_rng(clip["noise_seed"]).normal(0.0, clip["noise"], x.shape)
    return np.clip(x, -1.0, 1.0)


def encode_wav(waveform: np.ndarray, sample_rate: int, sample_width: int = 2) -> bytes:
    """Mono float audio in [-1, 1] as PCM WAV bytes (8-bit unsigned or 16-bit), the same bytes every time.

    Example:
        >>> from moezoo.processing.audio import read_wav
        >>> read_wav(encode_wav(np.array([0.0, 0.5, -1.0]), 8000, 2))[0].round(3).tolist()
        [[0.0, 0.5, -1.0]]
    """
    if sample_width == 1:  # 8-bit WAV is unsigned, centred on 128
        pcm = (np.round(np.clip(waveform, -1, 1) * 127) + 128).astype(np.uint8).tobytes()
    elif sample_width == 2:
        pcm = np.round(np.clip(waveform, -1, 1) * 32767).astype("<i2").tobytes()
    else:
        raise ValueError(f"sample_width={sample_width}: expected 1 (8-bit) or 2 (16-bit)")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:  # the header holds only the format and lengths: no time stamp
        w.setnchannels(1)
        w.setsampwidth(sample_width)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def ask(qtype: str) -> str:
    """The question text of ``qtype``.

    Example:
        >>> ask("pitch")
        'Is the second beep higher or lower than the first?'
    """
    questions = {"count": "How many beeps are there?",
                 "pitch": "Is the second beep higher or lower than the first?",
                 "longer": "Which beep is longer, the first or the second?",
                 "pitch_level": "Is the beep low, middle or high in pitch?"}
    if qtype not in questions:
        raise ValueError(f"unknown question type {qtype!r}; expected one of {QUESTION_TYPES}")
    return questions[qtype]


def tones_record(key: str, wav: bytes, question: str, answer: str, question_type: str, index: int,
                 clip: dict[str, Any]) -> dict[str, Any]:
    """A shard sample: ``KEY.wav`` plus ``KEY.json`` with the conversation (``<audio>`` placeholder), QA and clip.

    ``image_id`` is the VQAv2 layout's id of the medium (here the clip), so the VQAv2
    files and tools work unchanged.
    """
    body = {
        "id": key,
        "conversations": [{"from": "human", "value": f"{AUDIO}\n{vqa_prompt(question)}"},
                          {"from": "gpt", "value": answer}],
        "question": question,
        "answer": answer,
        "question_type": question_type,
        "question_id": index,
        "image_id": index,
        "clip": clip,
    }
    return {"__key__": key, "wav": wav, "json": encode_json(body)}


def generate_split(split: str, n: int, cfg: TonesBuildConfig = DEFAULT_CONFIG) -> Iterator[dict[str, Any]]:
    """Yield ``n`` shard samples of ``split``, question types in turn.

    Each split draws from its own RNG (seeded by dataset, seed and split), so growing one
    split leaves the others, and the first samples of this one, unchanged.
    """
    rng = random.Random(f"tones-qa/{cfg.seed}/{split}")
    for i in range(n):
        qtype = QUESTION_TYPES[i % len(QUESTION_TYPES)]
        clip, answer = random_clip(qtype, rng, cfg.sample_rate, cfg.noise)
        wav = encode_wav(render_clip(clip), cfg.sample_rate, cfg.sample_width)
        yield tones_record(f"{split}-{i:06d}", wav, ask(qtype), answer, qtype, i, clip)


def build_tones_qa(out_dir: str | Path, cfg: TonesBuildConfig | None = None) -> DatasetIndex:
    """Build tones-qa into ``out_dir``: train/val/test shards, VQAv2 test JSON, index.

    Example:
        >>> import tempfile
        >>> index = build_tones_qa(tempfile.mkdtemp(), TonesBuildConfig(n_train=4, n_val=0, n_test=2))
        >>> {k: v.samples for k, v in index.splits.items()}
        {'train': 4, 'test': 2}
    """
    cfg = cfg or DEFAULT_CONFIG
    extra = {"question_types": list(QUESTION_TYPES), "pitches_hz": list(PITCHES_HZ),
             "pitch_levels": {k: list(v) for k, v in PITCH_LEVELS.items()}, "max_clip_seconds": MAX_CLIP_MS / 1000,
             "numpy": np.__version__}  # the noise comes from numpy's Generator: same numpy, same bytes
    return build_vqa_dataset(out_dir, "tones-qa", cfg, lambda split, n: generate_split(split, n, cfg), extra)

