"""Issue G's acceptance: a training example is the prompt inference sends, answered.

For a tiny llava-hf checkpoint (its own Jinja template) and a zoo model (the zoo template), single- and
multi-turn: ``encode_example``'s ids are the processor's ids of ``apply_chat_template(conversation,
add_generation_prompt=False)`` (and transformers' own, for the LLaVA), each ``apply_chat_template(turns
before an answer, add_generation_prompt=True)`` is a prefix of them, and the labels are exactly the
assistant spans, found here from the tokens with no help from the code under test.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import moezoo
from moezoo.convert.llava_testing import tiny_llava_checkpoint
from moezoo.processing.chat import IGNORE_INDEX

RED, BLUE = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 40), "blue")
# The tiny LLaVA's word-level vocabulary: w0, w1, ... plus USER:, ASSISTANT:, <image>.
LLAVA_CONVERSATIONS = {
    "one turn": [{"role": "user", "content": [{"type": "image", "image": RED}, {"type": "text", "text": "w5 w6"}]},
                 {"role": "assistant", "content": [{"type": "text", "text": "w10"}]}],
    "multi-turn": [{"role": "user", "content": [{"type": "image", "image": RED}, {"type": "text", "text": "w5"}]},
                   {"role": "assistant", "content": [{"type": "text", "text": "w10 w11"}]},
                   {"role": "user", "content": [{"type": "image", "image": BLUE}, {"type": "text", "text": "w7"}]},
                   {"role": "assistant", "content": "w12"}],
}
ZOO_CONVERSATIONS = {  # name -> (conversation, its images)
    "one turn": ([{"role": "user", "content": "<image>\nWhat colour is the circle?"},
                  {"role": "assistant", "content": "red"}], [RED]),
    "multi-turn": ([{"role": "system", "content": "Answer briefly."},
                    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "\nWhat colour?"}]},
                    {"role": "assistant", "content": "red"},
                    {"role": "user", "content": "And this one? <image>"},
                    {"role": "assistant", "content": "a blue square"}], [RED, BLUE]),
}


def _images(conversation):
    return [p["image"] for m in conversation if isinstance(m["content"], list) for p in m["content"]
            if p["type"] == "image" and "image" in p]


def _spans(ids: list[int], opener: list[int], closer: int) -> list[tuple[int, int]]:
    """[start, end) of each run that follows the token sequence ``opener`` up to and including ``closer``."""
    spans = []
    for at in range(len(ids) - len(opener) + 1):
        if ids[at: at + len(opener)] == opener:
            start = at + len(opener)
            spans.append((start, ids.index(closer, start) + 1))
    return spans


def _check(processor, conversation, images, expected_spans):
    """Run the acceptance checks; ``images`` are the conversation's, which its parts may carry themselves."""
    example = processor.encode_example(conversation, images=None if _images(conversation) else images)
    ids, labels = example["input_ids"][0].tolist(), example["labels"][0].tolist()
    rendered = processor.apply_chat_template(conversation, add_generation_prompt=False)
    direct = processor(text=rendered, images=images)
    assert ids == direct["input_ids"][0].tolist()
    torch.testing.assert_close(example["pixel_values"], direct["pixel_values"], rtol=0, atol=0)
    answers = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
    for i in answers:  # the prompt before every answer is where inference starts
        text = processor.apply_chat_template(conversation[:i], add_generation_prompt=True)
        shown = images[: text.count(processor.placeholders["image"])] or None
        prompt = processor(text=text, images=shown)["input_ids"][0].tolist()
        assert ids[:len(prompt)] == prompt
        carried = _images(conversation[:i])
        assert processor.encode_prompt(conversation[:i], images=None if carried else shown)[
            "input_ids"][0].tolist() == prompt
    spans = expected_spans(ids)
    assert len(spans) == len(answers)
    want = [IGNORE_INDEX] * len(ids)
    for start, end in spans:
        want[start:end] = ids[start:end]
    assert labels == want
    return example


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llava")
    tiny_llava_checkpoint(path, "clip", "llama")
    return path, moezoo.load(path)


@pytest.mark.parametrize("name", LLAVA_CONVERSATIONS)
def test_llava_checkpoint_trains_on_its_own_template(llava, name):
    from transformers import AutoProcessor

    path, model = llava
    conversation = LLAVA_CONVERSATIONS[name]
    tok = model.processor.tokenizer
    opener, closer = [tok.convert_tokens_to_ids("ASSISTANT:")], tok.eos_token_id  # "ASSISTANT: answer </s>"
    example = _check(model.processor, conversation, _images(conversation), lambda ids: _spans(ids, opener, closer))
    labels = example["labels"][0]
    assert tok.decode(labels[labels != IGNORE_INDEX]) == " ".join(
        f"{m['content'] if isinstance(m['content'], str) else m['content'][0]['text']} </s>"
        for m in conversation if m["role"] == "assistant")
    # transformers' own processor, reading the images from the parts, gives the same ids and pixels.
    theirs = AutoProcessor.from_pretrained(str(path)).apply_chat_template(
        conversation, add_generation_prompt=False, tokenize=True, return_dict=True, return_tensors="pt")
    assert torch.equal(example["input_ids"], theirs["input_ids"])
    torch.testing.assert_close(example["pixel_values"], theirs["pixel_values"], rtol=0, atol=0)
    assert torch.isfinite(model(**example).loss)


@pytest.mark.parametrize("name", ZOO_CONVERSATIONS)
def test_zoo_model_trains_on_its_own_template(name):
    model = moezoo.create_model("mm_tiny_clip")
    tok = model.processor.tokenizer
    conversation, images = ZOO_CONVERSATIONS[name]
    # "<|assistant|>\n" opens an answer, "<|end|>" closes it; the "\n" after it separates turns.
    opener = [tok.convert_tokens_to_ids("<|assistant|>"), *tok.encode("\n", add_special_tokens=False)]
    example = _check(model.processor, conversation, images,
                     lambda ids: _spans(ids, opener, tok.convert_tokens_to_ids("<|end|>")))
    labels = example["labels"][0]
    assert tok.decode(labels[labels != IGNORE_INDEX]) == "".join(
        f"{m['content']}<|end|>" for m in conversation if m["role"] == "assistant")
    assert torch.isfinite(model(**example).loss)


@pytest.mark.parametrize("which", ["llava", "zoo"])
def test_evaluation_and_chat_send_the_prompt_training_sees(llava, which):
    """The answer generator, the scorer's requests and ``moezoo chat`` tokenise a one-turn prompt as the
    training example of that turn begins: with the BOS exactly once, whether the template writes it
    (zoo) or the tokenizer adds it (llava-1.5's template does not write it)."""
    from moezoo.eval.chat import build_inputs
    from moezoo.eval.prompts import continuation_requests, encode_prompts, render_prompts

    model = llava[1] if which == "llava" else moezoo.create_model("mm_tiny_clip")
    proc = model.processor
    question = "w5 w6" if which == "llava" else "What colour is the circle?"
    placeholder = proc.placeholders["image"]
    answer = "w10" if which == "llava" else "red"
    conversation = [{"role": "user", "content": [{"type": "image", "image": RED}, {"type": "text", "text": question}]},
                    {"role": "assistant", "content": [{"type": "text", "text": answer}]}] if which == "llava" else [
        {"role": "user", "content": f"{placeholder}\n{question}"}, {"role": "assistant", "content": answer}]
    trained = proc.encode_example(conversation, images=None if which == "llava" else [RED])["input_ids"][0].tolist()
    prompt = f"{placeholder}\n{question}" if which == "zoo" else f"{placeholder}{question}"
    texts, rendered = render_prompts(model, [prompt])
    generated = encode_prompts(model, texts, rendered)[0]
    assert rendered and generated == trained[:len(generated)] and len(generated) < len(trained)
    assert generated.count(proc.tokenizer.bos_token_id) == 1 and generated[0] == proc.tokenizer.bos_token_id
    request = continuation_requests(model, [prompt], [" " + answer if which == "llava" else answer], images=[[RED]])[0]
    assert list(request.context) == generated
    image_file = Path(llava[0]) / "red.png"
    RED.save(image_file)
    chat = build_inputs(model, question, [str(image_file)], [], [])["input_ids"][0].tolist()
    assert chat[0] == proc.tokenizer.bos_token_id and chat.count(proc.tokenizer.bos_token_id) == 1
