"""Audio input: read a file, mix to mono, resample, and compute Whisper's log-mel features.

Follows Uni-MoE's audio path (arXiv 2405.11273): 16 kHz mono speech becomes the
log-mel spectrogram of transformers' ``WhisperFeatureExtractor``, padded to the
encoder's fixed window. No torchaudio build exists for torch 2.14.1, so files are read
with ``soundfile`` (WAV, FLAC, OGG, ...; the standard library's ``wave`` reads PCM WAV
when ``soundfile`` is missing) and resampled with ``scipy.signal.resample_poly``.

A clip longer than the window is an error, never silently cut: a question about the
end of a recording must not be answered from its beginning.
"""

from __future__ import annotations

import io
import math
import os
import wave
from typing import Any, Sequence, Union

import numpy as np
import torch

AudioInput = Union[str, os.PathLike, bytes, np.ndarray, torch.Tensor, tuple]
SPEC_KEYS = ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft")


def load_audio(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """Read an audio file (a path or its bytes) as float32 ``(channels, samples)`` in [-1, 1] and its rate.

    Uses ``soundfile`` (WAV, FLAC, OGG, ...); without it, PCM WAV through :func:`read_wav`.

    Example:
        >>> buf = io.BytesIO()
        >>> with wave.open(buf, "wb") as w:
        ...     w.setnchannels(2); w.setsampwidth(2); w.setframerate(8000); w.writeframes(b"\\x00\\x40\\x00\\xc0" * 3)
        >>> wav, rate = load_audio(buf.getvalue())
        >>> wav.shape, rate, wav[:, 0].tolist()
        ((2, 3), 8000, [0.5, -0.5])
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    if not isinstance(source, (bytes, bytearray)) and not os.path.exists(name):
        raise FileNotFoundError(f"no audio file {name!r}")
    try:
        import soundfile
    except ImportError:
        return read_wav(source)
    data = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else name
    try:
        samples_SC, rate = soundfile.read(data, dtype="float32", always_2d=True)
    except (RuntimeError, TypeError) as err:  # soundfile's LibsndfileError is a RuntimeError
        raise ValueError(f"could not decode audio {name!r}: {err}") from None
    return np.ascontiguousarray(samples_SC.T), int(rate)


def read_wav(source: str | os.PathLike | bytes) -> tuple[np.ndarray, int]:
    """Read a PCM WAV (8, 16, 24 or 32 bit) with the standard library: float32 ``(channels, samples)`` and rate.

    Example:
        >>> buf = io.BytesIO()
        >>> with wave.open(buf, "wb") as w:
        ...     w.setnchannels(1); w.setsampwidth(3); w.setframerate(16000); w.writeframes(b"\\x00\\x00\\xc0")
        >>> read_wav(buf.getvalue())
        (array([[-0.5]], dtype=float32), 16000)
    """
    name = "<bytes>" if isinstance(source, (bytes, bytearray)) else os.fspath(source)
    try:
        with wave.open(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else name, "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as err:
        raise ValueError(f"could not read {name!r} as PCM WAV ({err}); other formats need `pip install soundfile`") \
            from None
    if width == 1:  # 8-bit WAV is unsigned
        pcm = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 3:  # little-endian 24 bit: place the 3 bytes high in an int32, keeping the sign
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        pcm = ((b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)).astype(np.float32) / 2.0**31
    elif width in (2, 4):
        pcm = np.frombuffer(raw, np.int16 if width == 2 else np.int32).astype(np.float32) / 2.0 ** (8 * width - 1)
    else:
        raise ValueError(f"{name!r} has {8 * width}-bit samples; PCM WAV of 8, 16, 24 or 32 bit is supported")
    return np.ascontiguousarray(pcm.reshape(-1, channels).T), rate


def to_mono(waveform: np.ndarray | torch.Tensor) -> np.ndarray:
    """``(samples,)`` or ``(channels, samples)`` float audio -> float32 ``(samples,)``, the channel mean.

    Example:
        >>> to_mono(np.array([[1.0, 0.0], [0.0, 0.0]])).tolist()
        [0.5, 0.0]
    """
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform)
    if not np.issubdtype(waveform.dtype, np.floating):
        raise ValueError(f"expected float audio samples in [-1, 1], got dtype {waveform.dtype} "
                         "(load_audio returns floats)")
    if waveform.ndim == 1:
        return waveform.astype(np.float32, copy=False)
    if waveform.ndim != 2 or waveform.shape[0] > waveform.shape[1]:
        raise ValueError(f"expected audio of shape (samples,) or (channels, samples), got {waveform.shape}"
                         + (" (transpose a (samples, channels) array)" if waveform.ndim == 2 else ""))
    return waveform.mean(axis=0, dtype=np.float32)


def resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float32 audio along its last axis by the exact ratio ``to_rate / from_rate`` (polyphase).

    Example:
        >>> resample(np.zeros(8000, np.float32), 8000, 16000).shape
        (16000,)
    """
    for name, rate in (("from_rate", from_rate), ("to_rate", to_rate)):
        if int(rate) != rate or rate < 1:
            raise ValueError(f"{name} must be a positive integer sample rate, got {rate!r}")
    if from_rate == to_rate:
        return np.asarray(waveform, dtype=np.float32)
    from scipy.signal import resample_poly

    g = math.gcd(int(from_rate), int(to_rate))
    return resample_poly(waveform, int(to_rate) // g, int(from_rate) // g, axis=-1).astype(np.float32)


class AudioProcessor:
    """Raw audio clips -> Whisper log-mel ``input_features (N, feature_size, frames)`` float32.

    Built from an encoder's ``{"kind": "whisper", ...}`` preprocessing spec by
    :func:`build_audio_processor`. Every clip is mixed to mono, resampled to the spec's
    rate and padded with silence to ``chunk_length`` seconds, as Whisper was trained.

    Attributes:
        spec: the spec it was built from.
        sampling_rate: the rate features are computed at.
        max_samples: the longest clip accepted, ``chunk_length * sampling_rate``.
        num_frames: feature frames per clip, ``max_samples // hop_length``.
    """

    def __init__(self, spec: dict[str, Any]):
        from transformers import WhisperFeatureExtractor

        if spec.get("kind") != "whisper" or any(k not in spec for k in SPEC_KEYS):
            raise ValueError(f"expected a whisper preprocessing spec with keys {['kind', *SPEC_KEYS]}, got {spec}")
        self.spec = dict(spec)
        self.extractor = WhisperFeatureExtractor(**{k: spec[k] for k in SPEC_KEYS})
        self.sampling_rate = int(spec["sampling_rate"])
        self.max_samples = self.extractor.n_samples
        self.num_frames = self.max_samples // int(spec["hop_length"])

    def waveform(self, audio: AudioInput, index: int = 0, sampling_rate: int | None = None) -> np.ndarray:
        """One clip as float32 mono ``(samples,)`` at the spec's rate; ``index`` names it in errors.

        ``audio`` is a path or file bytes, an ``(array, rate)`` pair, or a bare array at
        ``sampling_rate`` (default: the spec's rate); arrays are ``(samples,)`` or
        ``(channels, samples)``.
        """
        if isinstance(audio, (str, os.PathLike, bytes, bytearray)):
            audio = load_audio(audio)
        if isinstance(audio, tuple):
            if len(audio) != 2:
                raise ValueError(f"audio {index}: expected an (array, sampling_rate) pair, got a {len(audio)}-tuple")
            audio, rate = audio
        else:
            rate = self.sampling_rate if sampling_rate is None else sampling_rate
        try:
            mono = resample(to_mono(audio), rate, self.sampling_rate)
        except ValueError as err:
            raise ValueError(f"audio {index}: {err}") from None
        if mono.size == 0:
            raise ValueError(f"audio {index} is empty")
        if mono.size > self.max_samples:
            raise ValueError(f"audio {index} lasts {mono.size / self.sampling_rate:.2f} s, longer than the "
                             f"encoder's window of at most {self.max_samples / self.sampling_rate:g} s "
                             "(chunk_length); trim or split it: it is never cut silently")
        return mono

    def __call__(self, audios: Sequence[AudioInput], sampling_rate: int | None = None) -> torch.Tensor:
        """Log-mel features ``(len(audios), feature_size, num_frames)`` of the clips.

        Args:
            audios: paths / bytes, ``(array, rate)`` pairs, or bare arrays (see :meth:`waveform`).
            sampling_rate: the rate of the bare arrays; default the spec's.
        """
        if not audios:
            return torch.zeros(0, self.extractor.feature_size, self.num_frames)
        waves = [self.waveform(a, i, sampling_rate) for i, a in enumerate(audios)]
        features = self.extractor(waves, sampling_rate=self.sampling_rate, return_tensors="np")["input_features"]
        return torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))


def build_audio_processor(spec: dict[str, Any]) -> AudioProcessor:
    """The processor for an audio encoder's preprocessing ``spec`` (``{"kind": "whisper", ...}``).

    Example:
        >>> proc = build_audio_processor({"kind": "whisper", "feature_size": 8, "sampling_rate": 16000,
        ...     "hop_length": 160, "chunk_length": 1, "n_fft": 400})
        >>> proc([np.zeros(8000, np.float32), (np.zeros((2, 4000), np.float32), 8000)]).shape
        torch.Size([2, 8, 100])
    """
    return AudioProcessor(spec)
