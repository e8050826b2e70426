"""Plain documents become language-modelling windows with loss on every token."""

from __future__ import annotations

from moezoo.processing.documents import TokenizerAdapter, encode_document


def test_documents_are_windowed_with_full_loss(tokenizer):
    tok = TokenizerAdapter(tokenizer)
    windows = encode_document("def f():\n    return 1\n" * 20, tok, max_length=16)
    assert all(len(w.input_ids) <= 16 and w.labels == w.input_ids for w in windows)
    flat = sum((w.input_ids for w in windows), [])
    assert flat[0] == tok.bos_id and flat[-1] == tok.eos_id
    assert tok.decode(flat[1:-1]) == "def f():\n    return 1\n" * 20
