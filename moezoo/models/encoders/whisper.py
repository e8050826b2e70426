"""Whisper's audio encoder as a moezoo encoder (Uni-MoE's audio path).

Uni-MoE (Li et al. 2024, arXiv 2405.11273) feeds speech to its MoE LLM through the
encoder of Whisper (Radford et al. 2022, arXiv 2212.04356): a log-mel spectrogram
``(N, mel_bins, 2 * max_source_positions)`` goes through two 1-D convolutions (the
second with stride 2) and a Transformer, giving ``max_source_positions`` tokens per
clip; a learned-query resampler connector then shrinks that count.

The module holds transformers' ``WhisperEncoder`` itself as ``encoder``, so its
weight names are a Whisper checkpoint's ``model.encoder.*`` with the ``model.``
dropped, and a local checkpoint directory loads without renaming.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from moezoo.models.encoders.base import ENCODERS, Encoder
from moezoo.utils.checks import require
from moezoo.utils.config import Config

# Every released Whisper uses these STFT settings (its feature extractor's defaults).
SAMPLING_RATE = 16000
HOP_LENGTH = 160
N_FFT = 400
# The whisper_config keys the encoder's shape depends on; a saved WhisperConfig has them all.
REQUIRED_KEYS = ("num_mel_bins", "max_source_positions", "d_model", "encoder_layers")


class WhisperAudioEncoder(Encoder):
    """Audio ``input_features (N, num_mel_bins, 2 * max_source_positions)`` -> ``(N, max_source_positions, d_model)``.

    Args:
        config: a :class:`WhisperEncoderConfig`; with ``pretrained`` set, the encoder
            weights are read from that local transformers checkpoint.

    Example:
        >>> cfg = WhisperEncoderConfig({"num_mel_bins": 8, "max_source_positions": 50, "d_model": 16,
        ...     "encoder_layers": 1, "encoder_attention_heads": 2, "encoder_ffn_dim": 32})
        >>> enc = WhisperAudioEncoder(cfg)
        >>> enc(torch.zeros(2, 8, 100)).shape
        torch.Size([2, 50, 16])
        >>> enc.preprocess_spec()["chunk_length"]
        1
    """

    modality = "audio"

    def __init__(self, config: WhisperEncoderConfig):
        super().__init__()
        from transformers import WhisperConfig
        from transformers.models.whisper.modeling_whisper import WhisperEncoder

        self.config = config
        hf_config = WhisperConfig(**config.whisper_config)
        self.encoder = WhisperEncoder(hf_config)
        self.num_mel_bins = hf_config.num_mel_bins
        self.num_tokens = hf_config.max_source_positions
        self.num_mel_frames = 2 * hf_config.max_source_positions  # conv2 has stride 2
        self.out_dim = hf_config.d_model
        if config.pretrained is not None:
            self.encoder.load_state_dict(_read_encoder_weights(Path(config.pretrained), self.encoder.state_dict()))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``input_features (N, num_mel_bins, frames)`` -> ``(N, num_tokens, out_dim)``; ``condition`` is ignored."""
        expected = (self.num_mel_bins, self.num_mel_frames)
        if x.dim() != 3 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected input_features of shape (N, {expected[0]}, {expected[1]}) "
                             f"(mel bins, frames), got {tuple(x.shape)}")
        x = x.to(self.encoder.conv1.weight.dtype)
        if self.config.feature_layer == -1:
            return self.encoder(x).last_hidden_state
        # hidden_states = (embeddings, layer 1, ..., layer L after the final norm), as LLaVA indexes them.
        return self.encoder(x, output_hidden_states=True).hidden_states[self.config.feature_layer]

    def preprocess_spec(self) -> dict[str, Any]:
        """``WhisperFeatureExtractor`` settings that give exactly ``2 * max_source_positions`` frames."""
        return {"kind": "whisper", "feature_size": self.num_mel_bins, "sampling_rate": SAMPLING_RATE,
                "hop_length": HOP_LENGTH, "chunk_length": self.num_mel_frames * HOP_LENGTH // SAMPLING_RATE,
                "n_fft": N_FFT}


@ENCODERS.register(WhisperAudioEncoder)
@dataclass
class WhisperEncoderConfig(Config):
    """Config of :class:`WhisperAudioEncoder`.

    Args:
        whisper_config: a transformers ``WhisperConfig`` as a dict (``config.to_dict()`` or a
            checkpoint's ``config.json``); only the encoder part is built. It must name
            ``num_mel_bins``, ``max_source_positions``, ``d_model`` and ``encoder_layers``.
        feature_layer: index into the encoder's hidden states ``(embeddings, layer 1, ...,
            layer L)``; ``-1`` is the final output (after the last layer norm).
        pretrained: a local transformers Whisper checkpoint directory (safetensors) to
            read the encoder weights from; ``None`` keeps the random init.

    Example:
        >>> WhisperEncoderConfig({"num_mel_bins": 8, "max_source_positions": 60, "d_model": 16,
        ...     "encoder_layers": 1})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: WhisperEncoderConfig.whisper_config: max_source_positions=60 must be a multiple of 50: ...
    """

    kind: ClassVar[str] = "whisper"
    whisper_config: dict[str, Any] = field(default_factory=dict)
    feature_layer: int = -1
    pretrained: str | None = None

    def __post_init__(self) -> None:
        cfg = self.whisper_config
        require(self, "whisper_config", isinstance(cfg, dict), "must be a dict (a WhisperConfig's to_dict())")
        missing = [k for k in REQUIRED_KEYS if k not in cfg]
        require(self, "whisper_config", not missing, f"misses keys {missing}")
        positions, layers = cfg["max_source_positions"], cfg["encoder_layers"]
        # chunk_length (an int of seconds) * sampling_rate / hop_length must equal 2 * positions.
        frames_per_second = SAMPLING_RATE // HOP_LENGTH
        if positions < 1 or (2 * positions) % frames_per_second:
            raise ValueError(f"WhisperEncoderConfig.whisper_config: max_source_positions={positions} must be a "
                             f"multiple of {frames_per_second // 2}: Whisper's features come in whole seconds "
                             f"({frames_per_second} frames of hop {HOP_LENGTH} at {SAMPLING_RATE // 1000} kHz) "
                             "and the encoder halves them")
        require(self, "feature_layer", -(layers + 1) <= self.feature_layer <= layers,
                f"must index the {layers + 1} hidden states (embeddings + {layers} layers): "
                f"in [{-(layers + 1)}, {layers}]")

    @classmethod
    def from_pretrained(cls, path: str | Path, **overrides: Any) -> WhisperEncoderConfig:
        """The config of the checkpoint directory ``path``: its ``config.json``, with ``pretrained=path``.

        Example:
            >>> import tempfile
            >>> with tempfile.TemporaryDirectory() as d:
            ...     _ = (Path(d) / "config.json").write_text(json.dumps({"num_mel_bins": 8, "d_model": 16,
            ...         "max_source_positions": 50, "encoder_layers": 1}))
            ...     cfg = WhisperEncoderConfig.from_pretrained(d, feature_layer=-2)
            >>> cfg.feature_layer, cfg.whisper_config["d_model"]
            (-2, 16)
        """
        whisper_config = json.loads((Path(path) / "config.json").read_text())
        return cls(whisper_config=whisper_config, pretrained=str(path), **overrides)


def _read_encoder_weights(path: Path, expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The encoder tensors of the checkpoint at ``path``, named as ``WhisperEncoder``'s state dict."""
    from safetensors import safe_open

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise ValueError(f"no *.safetensors file in {path}: only safetensors Whisper checkpoints are loaded "
                         "(re-save a .bin one with transformers' save_pretrained)")
    # WhisperForConditionalGeneration saves model.encoder.*, WhisperModel encoder.*.
    prefixes = ("model.encoder.", "encoder.")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                for prefix in prefixes:
                    if key.startswith(prefix):
                        state[key[len(prefix):]] = f.get_tensor(key)
                        break
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ValueError(f"the Whisper checkpoint in {path} lacks encoder weights {missing[:5]}"
                         f"{' ...' if len(missing) > 5 else ''} (looked for keys under {prefixes})")
    for key, tensor in sorted(state.items()):
        want = expected.get(key)
        if want is not None and want.shape != tensor.shape:
            raise ValueError(f"the Whisper checkpoint in {path} has {key} of shape {tuple(tensor.shape)}, "
                             f"but whisper_config expects {tuple(want.shape)}")
    return state
