"""The BPE tokenizer: special tokens, HF loading, lossless round trip, reproducible training."""

from __future__ import annotations

import pytest
from transformers import PreTrainedTokenizerFast

from moezoo.data.tokenizer import TokenizerConfig, build_tokenizer
from moezoo.processing.tokenizer import load_tokenizer
from moezoo.processing.tokens import SPECIAL_TOKENS


def test_loads_with_transformers(tokenizer_dir, tokenizer):
    hf = PreTrainedTokenizerFast.from_pretrained(str(tokenizer_dir))
    assert len(hf) == 600
    assert [hf.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))
    assert (hf.pad_token, hf.bos_token, hf.eos_token) == ("<pad>", "<bos>", "<eos>")
    text = "What colour is the circle? Ünïcode ✓ and tabs\t\n"
    assert hf.decode(hf.encode(text, add_special_tokens=False)) == text  # byte-level: nothing is unknown
    ids = hf.encode("<image>\nIs there a red square?<|end|>", add_special_tokens=False)
    assert ids[0] == hf.convert_tokens_to_ids("<image>") and ids[-1] == hf.convert_tokens_to_ids("<|end|>")
    assert len(hf.encode("What colour is the circle?", add_special_tokens=False)) <= 8  # the QA words merged


def test_training_is_reproducible(tmp_path, shapes_dir, tokenizer_dir):
    build_tokenizer([shapes_dir], tmp_path / "a", TokenizerConfig(vocab_size=400))
    build_tokenizer([shapes_dir], tmp_path / "b", TokenizerConfig(vocab_size=400))
    assert (tmp_path / "a/tokenizer.json").read_bytes() == (tmp_path / "b/tokenizer.json").read_bytes()


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .tar"):
        build_tokenizer([tmp_path], tmp_path / "out")
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
