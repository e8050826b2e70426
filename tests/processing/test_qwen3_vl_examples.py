"""Qwen3-VL's training examples (``Qwen3VLProcessor.encode_example``): transformers' ids and pixels for the
answered conversation, loss on every assistant answer and its ``<|im_end|>``.

The labels are checked against transformers' own assistant mask (``apply_chat_template(...,
return_assistant_tokens_mask=True)`` over a template whose ``{% generation %}`` blocks mark each answer with its
end of turn), never against the label code itself.
"""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from moezoo.convert.qwen3_vl_testing import (
    CHAT_TEMPLATE,
    IMAGE_SETTINGS,
    VIDEO_SETTINGS,
    tiny_qwen3_vl_tokenizer,
)
from moezoo.processing.chat import IGNORE_INDEX, ConversationError
from moezoo.processing.qwen3_vl import Qwen3VLProcessor

# The tiny checkpoints' template (CHAT_TEMPLATE) with each assistant answer and its <|im_end|> in a generation
# block; it renders the same text (checked below).
MARKED = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}"
    "{% else %}{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% else %}{{ part['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
RED, BLUE = Image.new("RGB", (32, 48), "red"), Image.new("RGB", (40, 32), "blue")


@pytest.fixture(scope="module")
def proc():
    return Qwen3VLProcessor(tiny_qwen3_vl_tokenizer(), IMAGE_SETTINGS, VIDEO_SETTINGS)


def _parts(*images):
    return [{"type": "image", "image": im} for im in images]


def _conversation(first, second):
    return [{"role": "system", "content": "w1 w2"},
            {"role": "user", "content": [*_parts(first), {"type": "text", "text": "w4 w5"}]},
            {"role": "assistant", "content": "w7"},
            {"role": "user", "content": [*_parts(second), {"type": "text", "text": "w8"}]},
            {"role": "assistant", "content": "w9 w10"}]


def test_ids_and_pixels_are_transformers_and_labels_its_assistant_mask(proc):
    conversation = _conversation(RED, BLUE)
    enc = proc.encode_example(conversation)
    reference = proc.to_transformers()
    assert reference.apply_chat_template(conversation, tokenize=False, chat_template=MARKED) == \
        reference.apply_chat_template(conversation, tokenize=False, chat_template=CHAT_TEMPLATE)
    expected = reference.apply_chat_template(conversation, tokenize=True, return_dict=True, return_tensors="pt",
                                             add_generation_prompt=False, chat_template=MARKED,
                                             return_assistant_tokens_mask=True)
    for key in ("input_ids", "attention_mask", "pixel_values", "image_grid_thw", "mm_token_type_ids"):
        torch.testing.assert_close(enc[key], expected[key], rtol=0, atol=0)
    mask = torch.as_tensor(expected["assistant_masks"]).bool()
    assert mask.sum() == 5  # "w7 <|im_end|>" and "w9 w10 <|im_end|>"
    torch.testing.assert_close(enc["labels"], enc["input_ids"].masked_fill(~mask, IGNORE_INDEX), rtol=0, atol=0)
    runs = proc.tokenizer.decode(enc["labels"][0][enc["labels"][0] != IGNORE_INDEX])
    assert runs == "w7 <|im_end|> w9 w10 <|im_end|>"


def test_ids_are_the_processors_ids_of_the_rendered_conversation_and_the_prompt_their_start(proc):
    conversation = _conversation(RED, BLUE)
    enc = proc.encode_example(conversation)
    rendered = proc.apply_chat_template(conversation, add_generation_prompt=False)
    called = proc(rendered, images=[RED, BLUE])
    for key in ("input_ids", "pixel_values", "image_grid_thw", "mm_token_type_ids"):
        torch.testing.assert_close(enc[key], called[key], rtol=0, atol=0)
    for turns, images in ((2, [RED]), (4, [RED, BLUE])):  # the prompt before each answer: the example's start
        prompt = proc.encode_prompt(conversation[:turns], images=images)["input_ids"][0]
        assert enc["input_ids"][0, : len(prompt)].tolist() == prompt.tolist()
        assert (enc["labels"][0, len(prompt) - 3: len(prompt)] == IGNORE_INDEX).all()  # "<|im_start|>assistant\n"
        assert enc["labels"][0, len(prompt)] != IGNORE_INDEX  # the answer's first token


def test_the_training_datas_placeholders_become_image_parts(proc):
    """LLaVA's turns with the data's placeholder (what the pipeline renames <image> to) encode as the parts do."""
    parts = proc.encode_example([{"role": "user", "content": [*_parts(RED), {"type": "text", "text": "\nw4"}]},
                                 {"role": "assistant", "content": "w7"}])
    for text in ("<|image_pad|>\nw4", "<|vision_start|><|image_pad|><|vision_end|>\nw4"):
        llava = proc.encode_example([{"from": "human", "value": text}, {"from": "gpt", "value": "w7"}], images=[RED])
        for key in ("input_ids", "labels", "pixel_values"):
            torch.testing.assert_close(llava[key], parts[key], rtol=0, atol=0)
    lists = proc.encode_example([{"from": "human", "value": "<|image_pad|>\nw4"}, {"from": "gpt", "value": "w7"}],
                                images=[RED], return_tensors=None)
    assert lists["input_ids"] == parts["input_ids"][0].tolist() and lists["labels"] == parts["labels"][0].tolist()


def test_bad_examples_are_refused(proc):
    with pytest.raises(ConversationError, match="no assistant turn"):
        proc.encode_example([{"role": "user", "content": "w4"}])
    with pytest.raises(ValueError, match="1 <\\|image_pad\\|> placeholders but 0 images"):
        proc.encode_example([{"role": "user", "content": "<|image_pad|>w4"}, {"role": "assistant", "content": "w7"}])
    with pytest.raises(ValueError, match="return_tensors"):
        proc.encode_example(_conversation(RED, BLUE), return_tensors="np")


def test_the_prompt_takes_its_media_from_the_parts_as_the_example_does(proc):
    """encode_prompt reads the images a conversation's parts carry, as encode_example does."""
    conversation = _conversation(RED, BLUE)[:4]  # ends with the second user turn
    got = proc.encode_prompt(conversation)
    want = proc(proc.apply_chat_template(conversation, add_generation_prompt=True), [RED, BLUE])
    assert all(torch.equal(got[k], want[k]) for k in want)
