"""The Whisper audio encoder against transformers' Whisper, on tiny checkpoints made here."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperModel

from moezoo.models.encoders.base import ENCODERS, build_encoder
from moezoo.models.encoders.whisper import WhisperAudioEncoder, WhisperEncoderConfig
from moezoo.processing.audio import build_audio_processor

MEL, POSITIONS, WIDTH, LAYERS = 16, 50, 32, 2


def tiny_whisper_config(**changes) -> WhisperConfig:
    fields = dict(num_mel_bins=MEL, d_model=WIDTH, encoder_layers=LAYERS, encoder_attention_heads=2,
                  encoder_ffn_dim=64, decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=64,
                  max_source_positions=POSITIONS, max_target_positions=16, vocab_size=64, pad_token_id=0,
                  bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return WhisperConfig(**{**fields, **changes})


@pytest.fixture(scope="module", params=[WhisperForConditionalGeneration, WhisperModel])
def checkpoint(request, tmp_path_factory):
    """(dir, transformers model) of a tiny random Whisper saved with save_pretrained (both key layouts)."""
    torch.manual_seed(0)
    model = request.param(tiny_whisper_config()).eval()
    path = tmp_path_factory.mktemp(request.param.__name__)
    model.save_pretrained(path)
    return path, model


def _features(batch=2, seed=0):
    return torch.randn(batch, MEL, 2 * POSITIONS, generator=torch.Generator().manual_seed(seed))


def test_pretrained_matches_transformers_encoder(checkpoint):
    path, hf = checkpoint
    encoder = build_encoder(WhisperEncoderConfig.from_pretrained(path)).eval()
    x = _features()
    with torch.no_grad():
        out, ref = encoder(x), hf.get_encoder()(x).last_hidden_state
    assert out.shape == (2, POSITIONS, WIDTH) == (2, encoder.num_tokens, encoder.out_dim)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    # The weights are the checkpoint's encoder weights under a plain prefix.
    hf_state = hf.get_encoder().state_dict()
    assert {f"encoder.{k}" for k in hf_state} == set(encoder.state_dict())
    torch.testing.assert_close(encoder.encoder.layers[1].fc2.weight, hf.get_encoder().layers[1].fc2.weight)


@pytest.mark.parametrize("feature_layer", [0, 1, 2, -2, -3])
def test_feature_layer_picks_the_hidden_state(checkpoint, feature_layer):
    path, hf = checkpoint
    encoder = build_encoder(WhisperEncoderConfig.from_pretrained(path, feature_layer=feature_layer)).eval()
    hf_encoder = hf.get_encoder()
    x = _features(seed=1)
    with torch.no_grad():
        out = encoder(x)
        # Independent of transformers' hidden-state bookkeeping: rebuild the states from its parts.
        states = [F.gelu(hf_encoder.conv2(F.gelu(hf_encoder.conv1(x)))).transpose(1, 2)
                  + hf_encoder.embed_positions.weight]
        for layer in hf_encoder.layers:
            states.append(layer(states[-1], None))
        states[-1] = hf_encoder.layer_norm(states[-1])  # the last state is the encoder's output
    torch.testing.assert_close(out, states[feature_layer], atol=1e-5, rtol=0)
    if feature_layer == LAYERS:  # the last state is the default output
        torch.testing.assert_close(out, hf_encoder(x).last_hidden_state, atol=1e-6, rtol=0)


def test_random_init_equals_transformers_with_the_same_weights():
    cfg = tiny_whisper_config()
    encoder = WhisperAudioEncoder(WhisperEncoderConfig(cfg.to_dict())).eval()
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    ref = WhisperEncoder(cfg).eval()
    ref.load_state_dict({k.removeprefix("encoder."): v for k, v in encoder.state_dict().items()})
    x = _features(batch=3)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x), ref(x).last_hidden_state, atol=1e-6, rtol=0)
    # Whisper's positions are fixed sinusoids, not random: the init must have run.
    assert encoder.encoder.embed_positions.weight[0, WIDTH // 2:].eq(1).all()


def test_wrong_input_shape_names_expected_and_got():
    encoder = WhisperAudioEncoder(WhisperEncoderConfig(tiny_whisper_config().to_dict()))
    with pytest.raises(ValueError, match=r"expected input_features of shape \(N, 16, 100\).*got \(2, 80, 100\)"):
        encoder(torch.zeros(2, 80, 100))
    with pytest.raises(ValueError, match=r"\(N, 16, 100\).*got \(2, 16, 3000\)"):
        encoder(torch.zeros(2, 16, 3000))
    with pytest.raises(ValueError, match=r"got \(16, 100\)"):
        encoder(torch.zeros(16, 100))


def test_spec_gives_the_frames_the_encoder_needs_and_matches_the_feature_extractor():
    encoder = WhisperAudioEncoder(WhisperEncoderConfig(tiny_whisper_config().to_dict())).eval()
    spec = encoder.preprocess_spec()
    assert spec == {"kind": "whisper", "feature_size": MEL, "sampling_rate": 16000, "hop_length": 160,
                    "chunk_length": 1, "n_fft": 400}
    assert spec["chunk_length"] * spec["sampling_rate"] // spec["hop_length"] == 2 * POSITIONS
    t = np.arange(12000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    features = build_audio_processor(spec)([wave])
    ref = WhisperFeatureExtractor(**{k: v for k, v in spec.items() if k != "kind"})(
        wave, sampling_rate=16000, return_tensors="np")["input_features"]
    np.testing.assert_array_equal(features.numpy(), ref)
    with torch.no_grad():
        assert encoder(features).shape == (1, POSITIONS, WIDTH)
    # The real Whisper geometry: 1500 positions <-> 30 s of 3000 frames.
    big = {"num_mel_bins": 80, "max_source_positions": 1500, "d_model": 8, "encoder_layers": 1,
           "encoder_attention_heads": 1, "encoder_ffn_dim": 8}
    assert WhisperAudioEncoder(WhisperEncoderConfig(big)).preprocess_spec()["chunk_length"] == 30


def test_config_round_trip_and_checks():
    cfg = WhisperEncoderConfig(tiny_whisper_config().to_dict(), feature_layer=-2)
    again = ENCODERS.config_from_dict(cfg.to_dict())
    assert again == cfg and again.to_dict()["kind"] == "whisper"
    with pytest.raises(ValueError, match=r"feature_layer=3 must index the 3 hidden states.*\[-3, 2\]"):
        cfg.replace(feature_layer=3)
    with pytest.raises(ValueError, match=r"misses keys \['encoder_layers'\]"):
        WhisperEncoderConfig({"num_mel_bins": 8, "max_source_positions": 50, "d_model": 8})
    with pytest.raises(ValueError, match="max_source_positions=75 must be a multiple of 50"):
        WhisperEncoderConfig(tiny_whisper_config(max_source_positions=75).to_dict())


def test_backward_reaches_every_weight():
    encoder = WhisperAudioEncoder(WhisperEncoderConfig(tiny_whisper_config().to_dict()))
    encoder(_features()).square().mean().backward()
    no_grad = [n for n, p in encoder.named_parameters() if p.requires_grad and p.grad is None]
    assert no_grad == []
    assert not encoder.encoder.embed_positions.weight.requires_grad  # fixed sinusoids, as in Whisper


def test_pretrained_errors_name_the_problem(tmp_path):
    cfg = tiny_whisper_config()
    with pytest.raises(ValueError, match="no \\*.safetensors file"):
        WhisperAudioEncoder(WhisperEncoderConfig(cfg.to_dict(), pretrained=str(tmp_path)))
    save_file({"model.decoder.embed_tokens.weight": torch.zeros(64, WIDTH)}, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match="lacks encoder weights"):
        WhisperAudioEncoder(WhisperEncoderConfig(cfg.to_dict(), pretrained=str(tmp_path)))
    wide = WhisperModel(tiny_whisper_config(d_model=48, encoder_attention_heads=2))
    wide.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"has conv1.bias of shape \(48,\), but whisper_config expects \(32,\)"):
        WhisperAudioEncoder(WhisperEncoderConfig(cfg.to_dict(), pretrained=str(tmp_path)))
