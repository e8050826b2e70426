"""generate_answers: batched answers equal the model's own one-prompt-at-a-time generate."""

from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

import moezoo
from moezoo.eval.generation import blank_like, generate_answers

PROMPTS = ["<image>\nWhat colour is the circle?",
           "How many shapes are there in this picture, roughly speaking?",
           "<image>\nShape?",
           "hi",
           "<image>\nIs there a red square to the left of the blue triangle in the image?",
           "<image>\nWhat is it?"]


def _image(colour: str, size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), fill=colour)
    return image


IMAGES = [[_image("red")], [], [_image("blue", (48, 64))], [], [_image("green")], [_image("yellow", (40, 40))]]


def _eos(model) -> list[int]:
    eos = model.language_model.config.eos_token_id
    return eos if isinstance(eos, list) else [eos]


def _decode(tokenizer, new_ids: list[int], stops: list[int]) -> str:
    end = next((j for j, t in enumerate(new_ids) if t in stops), len(new_ids))
    return tokenizer.decode(new_ids[:end], skip_special_tokens=True).strip()


def _one_at_a_time(model, prompts, images, max_new_tokens: int) -> list[str]:
    """The reference: each prompt rendered, processed and generated alone (no padding, no sorting)."""
    proc, out = model.processor, []
    for prompt, imgs in zip(prompts, images):
        text = proc.apply_chat_template([{"role": "user", "content": prompt}])
        inputs = proc(text=text, images=imgs or None, add_special_tokens=False)
        ids = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        out.append(_decode(proc.tokenizer, ids[0, inputs["input_ids"].shape[1]:].tolist(), _eos(model)))
    return out


@pytest.fixture(scope="module")
def mm_model():
    torch.manual_seed(0)
    return moezoo.create_model("mm_tiny_cnn").eval()


@pytest.mark.parametrize("arch", ["mm_tiny_cnn", "film_cnn_moe_small"])
def test_batched_equals_one_at_a_time(arch):
    torch.manual_seed(0)
    model = moezoo.create_model(arch).eval()
    batched = generate_answers(model, PROMPTS, IMAGES, batch_size=4, max_new_tokens=6)
    assert batched == _one_at_a_time(model, PROMPTS, IMAGES, 6)
    assert len(set(batched)) > 1  # random weights, but the answers differ: the comparison can fail
    # Each image reaches its own prompt: changing one image changes that answer only.
    swapped = [list(i) for i in IMAGES]
    swapped[0] = [_image("blue")]
    again = generate_answers(model, PROMPTS, swapped, batch_size=4, max_new_tokens=6)
    assert again[1:] == batched[1:] and again[0] == _one_at_a_time(model, PROMPTS[:1], swapped[:1], 6)[0]


def test_until_cuts_at_the_earliest_stop(mm_model):
    full = generate_answers(mm_model, PROMPTS, IMAGES, max_new_tokens=8)
    k, text = max(enumerate(full), key=lambda kv: len(kv[1]))
    assert len(text) >= 6
    late, early = text[-2:], text[2:4]
    cut = generate_answers(mm_model, PROMPTS, IMAGES, max_new_tokens=8, until=[late, early, "\x00never"])
    assert cut[k] == text[:text.index(early)].strip()
    assert [a for i, a in enumerate(cut) if i != k] == [a.split(late)[0].split(early)[0].strip()
                                                         for i, a in enumerate(full) if i != k]


def test_text_only_model_batched_and_raw():
    torch.manual_seed(0)
    model = moezoo.create_model("moe_lm_tiny").eval()
    tok = model.tokenizer
    prompts = [p.replace("<image>\n", "") for p in PROMPTS]
    for chat in (True, False):
        batched = generate_answers(model, prompts, batch_size=4, max_new_tokens=6, chat=chat)
        reference = []
        for prompt in prompts:
            if chat:
                text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                               add_generation_prompt=True)
                ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
            else:
                ids = tok(prompt, return_tensors="pt")["input_ids"]
            new = model.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:].tolist()
            reference.append(_decode(tok, new, _eos(model)))
        assert batched == reference
        assert len(set(batched)) > 1


def test_images_to_a_model_without_an_image_encoder():
    model = moezoo.create_model("moe_lm_tiny")
    with pytest.raises(ValueError, match=r"takes no images; its modalities are \['text'\]"):
        generate_answers(model, ["<image>\nWhat colour?"], [[_image("red")]])


def test_bad_image_lists(mm_model):
    with pytest.raises(ValueError, match="1 image lists for 2 prompts"):
        generate_answers(mm_model, PROMPTS[:2], [[_image("red")]])
    with pytest.raises(ValueError, match="placeholder"):  # the processor's own check
        generate_answers(mm_model, ["What colour?"], [[_image("red")]])


def test_blank_images_and_mode_restored(mm_model, capsys):
    mm_model.train()
    blank = generate_answers(mm_model, PROMPTS, IMAGES, max_new_tokens=6, blank_images=True, progress=True)
    assert mm_model.training  # the caller's mode comes back
    mm_model.eval()
    by_hand = [[blank_like(i) for i in imgs] for imgs in IMAGES]
    assert blank == generate_answers(mm_model, PROMPTS, by_hand, max_new_tokens=6)
    assert blank != generate_answers(mm_model, PROMPTS, IMAGES, max_new_tokens=6)  # the images matter
    assert "generating" in capsys.readouterr().err
    assert blank_like(Image.new("RGBA", (5, 7))).getpixel((2, 2)) == (128, 128, 128, 255)


def test_fixed_steps_decodes_every_step_and_gives_the_same_answers():
    """What sharded evaluation relies on: no early exit, and the answers are unchanged."""
    import moezoo
    from PIL import Image

    model = moezoo.create_model("mm_tiny_cnn").eval()
    calls = []
    hook = model.llm.register_forward_hook(lambda *_: calls.append(1))
    prompts = ["<image>\nWhat colour?", "<image>\nHow many shapes are there?"]
    images = [[Image.new("RGB", (64, 64), "red")], [Image.new("RGB", (64, 64), "blue")]]
    free = generate_answers(model, prompts, images, max_new_tokens=6)
    calls.clear()
    fixed = generate_answers(model, prompts, images, max_new_tokens=6, fixed_steps=True)
    hook.remove()
    assert fixed == free
    assert len(calls) == 6  # prefill + 5 decoding steps, whatever the rows emitted
