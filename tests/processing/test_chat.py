"""Label masks: loss only on assistant answers, never on prompts, role markers or placeholders."""

from __future__ import annotations

import pytest

from moezoo.processing.chat import IGNORE_INDEX, ChatTemplate, TokenizerAdapter, encode_document

CONV = [
    {"from": "human", "value": "<image>\nWhat colour is the circle?"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "And how many objects are there?"},
    {"from": "gpt", "value": "3"},
]


@pytest.fixture()
def tok(tokenizer):
    return TokenizerAdapter(tokenizer)


def test_only_answers_carry_loss(tok):
    enc = ChatTemplate(system="Answer briefly.", image_tokens=4).encode(CONV, tok)
    ids, labels = enc.input_ids, enc.labels
    assert len(ids) == len(labels)
    image_id = tok.vocab["<image>"]
    assert ids.count(image_id) == 4 and enc.placeholders == {"<image>": 1}
    trained = [i for i, l in zip(ids, labels) if l != IGNORE_INDEX]
    assert all(l in (IGNORE_INDEX, i) for i, l in zip(ids, labels))  # labels are the ids, unshifted
    assert tok.decode(trained) == "red<|end|>3<|end|>"
    for pos, i in enumerate(ids):  # no loss on any placeholder, role marker, bos or system/user text
        if i in {image_id, tok.vocab["<|user|>"], tok.vocab["<|assistant|>"], tok.vocab["<|system|>"], tok.bos_id}:
            assert labels[pos] == IGNORE_INDEX
    prompt_end = ids.index(tok.vocab["<|assistant|>"])
    assert set(labels[:prompt_end]) == {IGNORE_INDEX}
    text = tok.decode(ids)
    assert text.startswith("<bos><|system|>\nAnswer briefly.<|end|>\n<|user|>\n<image><image><image><image>\nWhat")


def test_placeholder_in_answer_is_masked(tok):
    enc = ChatTemplate().encode([{"from": "human", "value": "Draw"}, {"from": "gpt", "value": "<image> done"}], tok)
    image_at = enc.input_ids.index(tok.vocab["<image>"])
    assert enc.labels[image_at] == IGNORE_INDEX and enc.labels[image_at + 1] != IGNORE_INDEX


def test_prompt_is_a_prefix_of_the_training_sequence(tok):
    template = ChatTemplate(image_tokens=2)
    full = template.encode(CONV[:2], tok).input_ids
    prompt = template.encode_prompt(CONV[:2], tok)
    assert full[: len(prompt)] == prompt
    assert tok.decode(full[len(prompt):]) == "red<|end|>\n"
    assert template.encode_prompt("<image>\nWhat colour is the circle?", tok) == prompt


def test_bad_conversations(tok):
    with pytest.raises(ValueError, match="no assistant"):
        ChatTemplate().encode([{"from": "human", "value": "hi"}], tok)
    with pytest.raises(ValueError, match="turn 0"):
        ChatTemplate().encode([{"from": "robot", "value": "hi"}], tok)
    with pytest.raises(ValueError, match="image_tokens"):
        ChatTemplate(image_tokens=0)


def test_hf_tokenizer_without_placeholder_is_a_clear_error(tok):
    class Plain:  # a tokenizer with no <image> token, like an imported text-only HF model's
        def get_vocab(self):
            return {"a": 0}

        def encode(self, text, add_special_tokens=False):
            return [0] * len(text)

    with pytest.raises(ValueError, match="no '<image>' token"):
        ChatTemplate().encode(CONV[:2], TokenizerAdapter(Plain()))


def test_documents_are_windowed_with_full_loss(tok):
    windows = encode_document("def f():\n    return 1\n" * 20, tok, max_length=16)
    assert all(len(w.input_ids) <= 16 and w.labels == w.input_ids for w in windows)
    flat = sum((w.input_ids for w in windows), [])
    assert flat[0] == tok.bos_id and flat[-1] == tok.eos_id
    assert tok.decode(flat[1:-1]) == "def f():\n    return 1\n" * 20


def test_matches_the_saved_hf_chat_template(tok, tokenizer):
    messages = [{"role": "system", "content": "Be brief."}] + [
        {"role": "user" if t["from"] == "human" else "assistant", "content": t["value"]} for t in CONV
    ]
    template = ChatTemplate(system="Be brief.")
    ours = tok.decode(template.encode(CONV, tok).input_ids)
    assert tokenizer.apply_chat_template(messages, tokenize=False) == ours
    prompt = tokenizer.apply_chat_template(messages[:2], tokenize=False, add_generation_prompt=True)
    assert prompt == tok.decode(template.encode_prompt(CONV[:1], tok))
