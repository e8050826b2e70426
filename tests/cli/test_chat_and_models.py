"""``moezoo chat``, ``moezoo list`` and ``moezoo info`` as a user runs them."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
from PIL import Image

import moezoo
from moezoo.cli import main
from moezoo.eval.chat import build_inputs


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """name -> (model, its saved dir) for an image, an audio and a text model."""
    out = {}
    for name in ("mm_tiny_cnn", "mm_tiny_whisper", "moe_lm_tiny"):
        model = moezoo.create_model(name).eval()
        out[name] = (model, model.save_pretrained(tmp_path_factory.mktemp(name)))
    return out


def test_chat_with_an_image_prints_the_greedy_answer(saved, tmp_path, capsys):
    model, path = saved["mm_tiny_cnn"]
    image = tmp_path / "red.png"
    Image.new("RGB", (50, 40), "red").save(image)
    assert main(["chat", str(path), "--image", str(image), "--max-new-tokens", "6", "What colour?"]) == 0
    printed = capsys.readouterr().out.strip()
    inputs = build_inputs(model, "What colour?", [str(image)], [], [])
    assert int((inputs["input_ids"] == model.token_id("image")).sum()) == model.num_tokens["image"]
    ids = model.generate(**inputs, max_new_tokens=6)
    assert printed == model.tokenizer.decode(ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()


def test_chat_with_audio_and_with_text(saved, tmp_path, capsys):
    clip = tmp_path / "tone.wav"
    soundfile.write(clip, (0.2 * np.sin(np.arange(8000) / 5.0)).astype(np.float32), 16000)
    assert main(["chat", str(saved["mm_tiny_whisper"][1]), "--audio", str(clip), "--max-new-tokens", "3", "Hi"]) == 0
    assert main(["chat", str(saved["moe_lm_tiny"][1]), "--max-new-tokens", "3", "Hello"]) == 0
    model = saved["moe_lm_tiny"][0]
    ids = build_inputs(model, "Hello", [], [], [])["input_ids"][0].tolist()
    assert model.tokenizer.decode(ids) == "<bos><|user|>\nHello<|end|>\n<|assistant|>\n"


def test_chat_errors_are_one_clear_line(saved, tmp_path, capsys):
    assert main(["chat", str(saved["mm_tiny_cnn"][1]), "--image", str(tmp_path / "missing.png"), "Hi"]) == 2
    assert "no such file" in capsys.readouterr().err
    clip = tmp_path / "tone.wav"
    soundfile.write(clip, np.zeros(1600, dtype=np.float32), 16000)
    assert main(["chat", str(saved["mm_tiny_cnn"][1]), "--audio", str(clip), "Hi"]) == 2
    assert "takes no audio" in capsys.readouterr().err
    assert main(["chat", "mm_tiny_cnm", "Hi"]) == 2
    assert "no pretrained model named 'mm_tiny_cnm'" in capsys.readouterr().err


def test_list_and_info(capsys):
    assert main(["list", "mm_tiny_*"]) == 0
    assert capsys.readouterr().out.split() == moezoo.list_models("mm_tiny_*")
    assert main(["info", "llava_1_5_7b"]) == 0
    out = capsys.readouterr().out
    assert "7,063,427,072" in out and "{'image': 576}" in out  # LLaVA-1.5-7B: 7.06 B parameters, 24x24 tokens
    assert main(["info", "llava_1_5_7c"]) == 2
    assert "Did you mean ['llava_1_5_7b'" in capsys.readouterr().err  # the closest name first
