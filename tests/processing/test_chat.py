"""Training examples from conversations: the model's own chat template, loss only on the assistant's answers.

Expected spans are worked out here from the rendered text or the tokens, never with the label code itself.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moezoo.convert.llava_testing import tiny_llava_tokenizer
from moezoo.convert.testing import tiny_tokenizer
from moezoo.processing.chat import (IGNORE_INDEX, ConversationError, assistant_spans, span_labels, to_message,
                                    token_spans_by_prefix)
from moezoo.processing.processor import Processor

SPEC = {"kind": "simple", "size": [8, 8], "mean": [0.5] * 3, "std": [0.5] * 3}
CONV = [
    {"from": "human", "value": "<image>\nWhat colour is the circle?"},
    {"from": "gpt", "value": "red"},
    {"from": "human", "value": "And how many objects are there?"},
    {"from": "gpt", "value": "3"},
]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
# An eos only after the conversation's last message, as some base-model templates do.
EOS_AT_END = ("{% for m in messages %}{{ m['role'] | upper }}: {{ m['content'] }}"
              "{% if loop.last and m['role'] == 'assistant' %}<eos>{% endif %}\n{% endfor %}"
              "{% if add_generation_prompt %}ASSISTANT:{% endif %}")
# llava-hf's LLaVA-1.5 template: it reads parts only (a string content renders as nothing).
LLAVA_HF = ("{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper() + ': '}}"
            "{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
            "{{ '<image>\n' }}{% endfor %}{% if message['role'] != 'assistant' %}"
            "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
            "{{ content['text'] + ' '}}{% endfor %}{% else %}"
            "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
            "{% generation %}{{ content['text'] + ' '}}{% endgeneration %}{% endfor %}{% endif %}{% endfor %}"
            "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}")


def _trained(proc, enc) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    ids, labels = enc["input_ids"][0].tolist(), enc["labels"][0].tolist()
    runs, run = [], []
    for i, label in zip(ids, labels):
        if label != IGNORE_INDEX:
            assert label == i  # labels are the ids, unshifted
            run.append(i)
        elif run:
            runs.append(run)
            run = []
    return [proc.tokenizer.decode(r) for r in runs + ([run] if run else [])]


def _image(n=1):
    return [Image.new("RGB", (10, 10), "red")] * n


def test_zoo_template_trains_every_answer_with_its_end_marker(tokenizer):
    proc = Processor(tokenizer, {"image": 4}, image=SPEC)
    enc = proc.encode_example([{"role": "system", "content": "Answer briefly."}, *CONV], images=_image())
    ids, labels = enc["input_ids"][0], enc["labels"][0]
    text = tokenizer.decode(ids)
    assert text == ("<bos><|system|>\nAnswer briefly.<|end|>\n<|user|>\n<image><image><image><image>\nWhat colour is"
                    " the circle?<|end|>\n<|assistant|>\nred<|end|>\n<|user|>\nAnd how many objects are there?<|end|>"
                    "\n<|assistant|>\n3<|end|>\n")
    assert _trained(proc, enc) == ["red<|end|>", "3<|end|>"]
    vocab = tokenizer.get_vocab()
    for marker in ("<image>", "<|user|>", "<|assistant|>", "<|system|>", "<bos>"):  # never trained on
        assert (labels[ids == vocab[marker]] == IGNORE_INDEX).all()
    assert enc["pixel_values"].shape == (1, 3, 8, 8) and enc["attention_mask"].sum() == ids.numel()


def test_placeholder_in_an_answer_is_masked(tokenizer):
    proc = Processor(tokenizer, {"image": 1}, image=SPEC)
    enc = proc.encode_example([{"role": "user", "content": "Draw"}, {"role": "assistant", "content": "<image> done"}],
                              images=_image())
    ids, labels = enc["input_ids"][0].tolist(), enc["labels"][0].tolist()
    at = ids.index(tokenizer.convert_tokens_to_ids("<image>"))
    assert labels[at] == IGNORE_INDEX and labels[at + 1] != IGNORE_INDEX
    assert _trained(proc, enc) == [" done<|end|>"]


def test_the_inference_prompt_starts_the_training_example(tokenizer):
    proc = Processor(tokenizer, {"image": 2}, image=SPEC)
    full = proc.encode_example(CONV[:2], images=_image())["input_ids"][0].tolist()
    prompt = proc.encode_prompt(CONV[:1], images=_image())
    assert full[: prompt["input_ids"].shape[1]] == prompt["input_ids"][0].tolist()
    assert tokenizer.decode(full[prompt["input_ids"].shape[1]:]) == "red<|end|>\n"
    assert tokenizer.apply_chat_template([{"role": "user", "content": CONV[0]["value"]}], tokenize=False,
                                         add_generation_prompt=True) == proc.apply_chat_template(CONV[:1])


@pytest.mark.parametrize("template, answers", [
    (CHATML, ["red<|im_end|>", "3<|im_end|>"]),  # the "\n" after <|im_end|> separates turns: no loss
    (EOS_AT_END, [" red", " 3<eos>"]),  # the first answer has no eos in the whole conversation
])
def test_any_template_whose_generation_prompt_starts_the_answer(tokenizer, template, answers):
    proc = Processor(tokenizer, {"image": 1}, image=SPEC, chat_template=template)
    enc = proc.encode_example(CONV, images=_image())
    assert _trained(proc, enc) == answers
    rendered = proc.apply_chat_template(CONV, add_generation_prompt=False)
    assert enc["input_ids"][0].tolist() == proc(text=rendered, images=_image())["input_ids"][0].tolist()


def test_parts_and_strings_and_the_llava_hf_template(tokenizer):
    proc = Processor(tokenizer, {"image": 1}, image=SPEC, chat_template=LLAVA_HF)
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What colour?"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    enc = proc.encode_example(parts, images=_image())
    assert tokenizer.decode(enc["input_ids"][0]) == "USER: <image>\nWhat colour? ASSISTANT: red "
    assert _trained(proc, enc) == [" red"]  # the template writes no end marker; its trailing " " is a separator
    with pytest.raises(ConversationError, match="renders as '' after its generation prompt.*list of"):
        proc.encode_example([{"role": "user", "content": "<image>\nWhat colour?"},  # strings: the text is lost
                             {"role": "assistant", "content": "red"}], images=_image())


def test_media_may_ride_in_the_parts(tokenizer, tmp_path):
    proc = Processor(tokenizer, {"image": 2}, image=SPEC)
    Image.new("RGB", (10, 10), "blue").save(tmp_path / "blue.png")
    conv = [{"role": "user", "content": [{"type": "image", "path": str(tmp_path / "blue.png")},
                                         {"type": "image", "image": Image.new("RGB", (10, 10), "red")},
                                         {"type": "text", "text": "Same?"}]},
            {"role": "assistant", "content": "no"}]
    given = proc.encode_example([{"role": "user", "content": "<image><image>Same?"}, conv[1]],
                                images=[Image.new("RGB", (10, 10), "blue"), Image.new("RGB", (10, 10), "red")])
    carried = proc.encode_example(conv)
    for key in ("input_ids", "labels", "pixel_values"):
        assert torch.equal(carried[key], given[key]), key
    with pytest.raises(ValueError, match="parts carry 2 image.*give the images one way"):
        proc.encode_example(conv, images=_image(2))


def test_bos_is_never_doubled():
    tok = tiny_llava_tokenizer(40)  # adds <s> itself, as Llama tokenizers do
    conv = [{"role": "user", "content": "w5"}, {"role": "assistant", "content": "w6"}]
    for template in ("{{ bos_token }}" + EOS_AT_END.replace("<eos>", "</s>"), EOS_AT_END.replace("<eos>", "</s>")):
        proc = Processor(tok, {}, chat_template=template)
        ids = proc.encode_example(conv)["input_ids"][0].tolist()
        assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
        assert proc.encode_prompt(conv[:1])["input_ids"][0].tolist() == ids[:4]  # <s> USER: w5 ASSISTANT:
        assert tok.convert_ids_to_tokens(ids) == ["<s>", "USER:", "w5", "ASSISTANT:", "w6", "</s>"]


def test_bad_conversations_say_what_is_wrong(tokenizer):
    proc = Processor(tokenizer, {})
    with pytest.raises(ConversationError, match="no assistant turn"):
        proc.encode_example([{"from": "human", "value": "hi"}])
    with pytest.raises(ConversationError, match="turn 0 must be"):
        proc.encode_example([{"from": "robot", "value": "hi"}])
    with pytest.raises(ConversationError, match="non-empty list"):
        proc.encode_example([])
    bot = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}" \
          "BOT:{% endif %}"  # the prompt says BOT:, the answered turn assistant:
    with pytest.raises(ConversationError, match="generation prompt is not the start of the answered turn 1"):
        Processor(tokenizer, {}, chat_template=bot).encode_example(CONV[2:])


def test_a_tokenizer_without_the_placeholder_is_a_clear_error():
    proc = Processor(tiny_tokenizer(), {"image": 1}, image=SPEC, chat_template=CHATML)
    with pytest.raises(ValueError, match="where 1 were expected; the tokenizer splits or merges the placeholder"):
        proc.encode_example(CONV[:2], images=_image())


@pytest.mark.parametrize("template", [None, CHATML, EOS_AT_END])
def test_tokenizers_without_offsets_get_the_same_labels(tokenizer, template):
    """The fallback for tokenizers without offsets (the ids of the text up to each boundary) agrees."""
    proc = Processor(tokenizer, {"image": 4}, image=SPEC, chat_template=template)
    example = proc.encode_example(CONV, images=_image())
    messages = [to_message(m, i, proc.placeholders, keep_parts=False) for i, m in enumerate(CONV)]
    text = proc.apply_chat_template(messages, add_generation_prompt=False)
    spans = assistant_spans(messages, lambda m, prompt: proc.apply_chat_template(m, prompt), text, ["<image>"])

    def ids_of(rendered):
        return proc(text=rendered, add_special_tokens=proc.adds_special_tokens(rendered),
                    images=_image() if "<image>" in rendered else None)["input_ids"][0].tolist()

    input_ids = example["input_ids"][0].tolist()
    by_prefix = span_labels(input_ids, token_spans_by_prefix(ids_of, text, input_ids, spans),
                            frozenset(proc.placeholder_ids().values()))
    assert by_prefix == example["labels"][0].tolist()


def test_lists_for_the_pipeline_equal_the_tensors(tokenizer):
    proc = Processor(tokenizer, {"image": 4}, image=SPEC)
    tensors, lists = (proc.encode_example(CONV, images=_image(), return_tensors=rt) for rt in ("pt", None))
    for key in ("input_ids", "attention_mask", "labels"):
        assert lists[key] == tensors[key][0].tolist()
    assert torch.equal(lists["pixel_values"], tensors["pixel_values"])
    with pytest.raises(ValueError, match="return_tensors='np'"):
        proc.encode_example(CONV, images=_image(), return_tensors="np")


def test_truncation_set_on_the_tokenizer_never_truncates_an_example(tokenizer):
    """The fast path asks the tokenizer's backend directly; truncation left on it must not cut an example."""
    proc = Processor(tokenizer, {"image": 4}, image=SPEC)
    want = proc.encode_example(CONV, images=_image())["input_ids"][0].tolist()
    tokenizer._tokenizer.enable_truncation(max_length=5)
    try:
        assert proc.encode_example(CONV, images=_image())["input_ids"][0].tolist() == want
    finally:
        tokenizer._tokenizer.no_truncation()
