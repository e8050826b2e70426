"""Reading, resampling and Whisper features of audio, checked against soundfile, FFTs and transformers."""

import sys
import wave

import numpy as np
import pytest
import soundfile
from transformers import WhisperFeatureExtractor

from moezoo.processing.audio import build_audio_processor, load_audio, read_wav, resample, to_mono

SPEC = {"kind": "whisper", "feature_size": 16, "sampling_rate": 16000, "hop_length": 160, "chunk_length": 1,
        "n_fft": 400}


def sine(freq, rate, seconds, amplitude=0.5, phase=0.0):
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def peak_hz(wave_, rate):
    spectrum = np.abs(np.fft.rfft(wave_ * np.hanning(len(wave_))))
    return np.fft.rfftfreq(len(wave_), 1 / rate)[spectrum.argmax()]


def write_pcm_wav(path, pcm_SC: np.ndarray, rate: int, width: int):
    """A PCM WAV written by the standard library, from int samples (samples, channels)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(pcm_SC.shape[1]), w.setsampwidth(width), w.setframerate(rate)
        if width == 3:
            as_int32 = pcm_SC.astype("<i4").reshape(-1, 1).view(np.uint8)  # little-endian bytes of each sample
            w.writeframes(as_int32[:, :3].tobytes())
        else:
            w.writeframes(pcm_SC.astype({1: np.uint8, 2: "<i2", 4: "<i4"}[width]).tobytes())


@pytest.mark.parametrize("fmt, subtype, tol", [("WAV", "PCM_16", 1 / 32768), ("WAV", "FLOAT", 0.0),
                                               ("FLAC", "PCM_24", 1 / 2**23), ("OGG", "VORBIS", None)])
def test_soundfile_formats_load_as_channels_first(tmp_path, fmt, subtype, tol):
    stereo_SC = np.stack([sine(440, 16000, 0.5), sine(1000, 16000, 0.5, amplitude=0.25)], axis=1)
    path = tmp_path / f"a.{fmt.lower()}"
    soundfile.write(path, stereo_SC, 16000, format=fmt, subtype=subtype)
    wav_CS, rate = load_audio(path)
    assert rate == 16000 and wav_CS.dtype == np.float32 and wav_CS.shape[0] == 2
    if tol is not None:
        np.testing.assert_allclose(wav_CS, stereo_SC.T, atol=tol, rtol=0)
    # Lossy OGG too: each channel keeps its own tone, in order.
    assert peak_hz(wav_CS[0], rate) == pytest.approx(440, abs=4)
    assert peak_hz(wav_CS[1], rate) == pytest.approx(1000, abs=4)
    from_bytes, rate_b = load_audio(path.read_bytes())
    np.testing.assert_array_equal(from_bytes, wav_CS)


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_stdlib_pcm_wav_reads_the_same_with_and_without_soundfile(tmp_path, monkeypatch, width):
    full = 2 ** (8 * width - 1)
    x = sine(300, 8000, 0.25, amplitude=0.9)
    pcm = np.round(x * (full - 1)).astype(np.int64)
    pcm_SC = np.stack([pcm, -pcm], axis=1) + (128 if width == 1 else 0)  # 8-bit WAV is unsigned
    path = tmp_path / "pcm.wav"
    write_pcm_wav(path, pcm_SC, 8000, width)
    with_sf, rate = load_audio(path)
    assert rate == 8000 and with_sf.shape == (2, len(x))
    np.testing.assert_allclose(with_sf[0], x, atol=1.5 / full * (1 if width > 1 else 2))
    np.testing.assert_allclose(read_wav(path)[0], with_sf, atol=1e-7)
    monkeypatch.setitem(sys.modules, "soundfile", None)  # as if soundfile were not installed
    without, rate2 = load_audio(path.read_bytes())
    assert rate2 == 8000
    np.testing.assert_allclose(without, with_sf, atol=1e-7)


def test_reading_errors_are_clear(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no audio file"):
        load_audio(tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="could not decode audio '<bytes>'"):
        load_audio(b"definitely not audio")
    flac = tmp_path / "a.flac"
    soundfile.write(flac, sine(440, 16000, 0.1), 16000)
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(ValueError, match="as PCM WAV.*pip install soundfile"):
        load_audio(flac)


@pytest.mark.parametrize("from_rate, to_rate, freq", [(8000, 16000, 1000), (44100, 16000, 3000), (48000, 16000, 440)])
def test_resample_keeps_frequency_and_waveform(from_rate, to_rate, freq):
    x = sine(freq, from_rate, 1.0, phase=0.3)
    y = resample(x, from_rate, to_rate)
    assert y.dtype == np.float32 and len(y) == to_rate
    assert peak_hz(y, to_rate) == pytest.approx(freq, abs=1)
    # Away from the edges (filter warm-up) it is the same tone sampled at the new rate.
    interior = slice(to_rate // 10, -to_rate // 10)
    np.testing.assert_allclose(y[interior], sine(freq, to_rate, 1.0, phase=0.3)[interior], atol=2e-2)
    stereo = resample(np.stack([x, -x]), from_rate, to_rate)
    np.testing.assert_allclose(stereo, np.stack([y, -y]), atol=1e-6)
    with pytest.raises(ValueError, match="to_rate must be a positive integer"):
        resample(x, from_rate, 0)


def test_to_mono():
    np.testing.assert_allclose(to_mono(np.stack([np.ones(4), -np.ones(4) * 0.5])), [0.25] * 4)
    assert to_mono(np.zeros(5, np.float64)).dtype == np.float32
    with pytest.raises(ValueError, match=r"\(channels, samples\), got \(100, 2\).*transpose"):
        to_mono(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="dtype int16"):
        to_mono(np.zeros(10, np.int16))


def reference_features(waves):
    fe = WhisperFeatureExtractor(**{k: v for k, v in SPEC.items() if k != "kind"})
    return np.concatenate([fe(w, sampling_rate=16000, return_tensors="np")["input_features"] for w in waves])


def test_features_equal_whisper_feature_extractor(tmp_path):
    proc = build_audio_processor(SPEC)
    assert (proc.sampling_rate, proc.max_samples, proc.num_frames) == (16000, 16000, 100)
    short, full = sine(440, 16000, 0.3), sine(2000, 16000, 1.0, amplitude=0.1)
    at_8k = sine(700, 8000, 0.5)
    stereo = np.stack([sine(440, 16000, 0.5), sine(880, 16000, 0.5)])
    path = tmp_path / "clip.flac"
    soundfile.write(path, sine(1200, 22050, 0.6), 22050, subtype="PCM_24")
    features = proc([short, full, (at_8k, 8000), stereo, str(path)])
    assert features.shape == (5, 16, 100) and features.dtype.is_floating_point
    from_file, rate = load_audio(path)
    ref = reference_features([short, full, resample(at_8k, 8000, 16000), stereo.mean(0),
                              resample(from_file[0], rate, 16000)])
    np.testing.assert_allclose(features.numpy(), ref, atol=1e-6, rtol=0)
    # Bare arrays at another rate, by keyword.
    np.testing.assert_allclose(proc([at_8k], sampling_rate=8000).numpy(), ref[2:3], atol=1e-6, rtol=0)
    assert proc([]).shape == (0, 16, 100)


def test_too_long_audio_is_an_error_not_a_cut():
    proc = build_audio_processor(SPEC)
    proc([np.zeros(16000, np.float32)])  # exactly the window is fine
    with pytest.raises(ValueError, match=r"audio 1 lasts 1\.50 s, longer than the encoder's window of at most 1 s"):
        proc([np.zeros(100, np.float32), np.zeros(24000, np.float32)])
    with pytest.raises(ValueError, match=r"audio 0 lasts 1\.25 s"):
        proc([(np.zeros(10000, np.float32), 8000)])  # 1.25 s at 8 kHz: the duration, not the sample count
    with pytest.raises(ValueError, match="audio 0 is empty"):
        proc([np.zeros(0, np.float32)])


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="expected a whisper preprocessing spec"):
        build_audio_processor({"kind": "whisper", "feature_size": 80})
    with pytest.raises(ValueError, match="expected a whisper preprocessing spec"):
        build_audio_processor({**SPEC, "kind": "timm"})
