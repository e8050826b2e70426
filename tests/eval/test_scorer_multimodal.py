"""The one scorer on multimodal requests: batched scores equal each request scored alone by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import moezoo
from moezoo.eval.prompts import continuation_requests
from moezoo.eval.scoring import Request, loglikelihoods


def _image(colour: str, size: tuple[int, int] = (64, 64)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse((8, 8, size[0] - 8, size[1] - 8), fill=colour)
    return image


def _tone(hz: float, seconds: float = 0.5, rate: int = 16000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate


RED, BLUE = _image("red"), _image("blue", (48, 64))


def _model(arch: str):
    """The architecture with random weights; FiLM layers, which start as the identity (zero-initialised),
    get random weights too, so that what the encoder reads of the prompt changes the scores."""
    torch.manual_seed(0)
    model = moezoo.create_model(arch).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if ".film." in name or "condition_pool.score." in name:
                param.normal_(0.0, 0.3)
    return model


def reference(model, prompt: str, continuation: str, images=(), audios=()) -> tuple[float, bool]:
    """One request alone, without the scorer: the processor's own inputs for the rendered prompt,
    the continuation's tokens after them, one forward (no padding, no batch), a float64
    log-softmax gathered at the continuation. The labels mask the prompt, so instruction-aware
    parts read the prompt and not the continuation, as in training."""
    proc = model.processor
    text = proc.apply_chat_template([{"role": "user", "content": prompt}])
    context = proc(text=text, images=list(images) or None, audios=list(audios) or None, add_special_tokens=False)
    cont = proc.tokenizer(continuation, add_special_tokens=False)["input_ids"]
    ids = torch.cat([context["input_ids"], torch.tensor([cont])], dim=1)
    labels = torch.cat([torch.full_like(context["input_ids"], -100), torch.tensor([cont])], dim=1)
    media = {k: v for k, v in context.items() if k not in ("input_ids", "attention_mask")}
    with torch.no_grad():
        logits = model(input_ids=ids, labels=labels, **media).logits[0].double()
    logp = logits[-len(cont) - 1:-1].log_softmax(-1)  # position t predicts token t + 1
    target = torch.tensor(cont)
    return float(logp.gather(-1, target[:, None]).sum()), bool((logp.argmax(-1) == target).all())


# (prompt, continuation, images, audios): images and text, two requests sharing their tokens but not
# their image, choices that differ in their last token only (one forward for both), a text-only request.
ITEMS = [
    ("<image>\nWhat colour is the circle?", "red", [RED], []),
    ("<image>\nWhat colour is the circle?", "red", [BLUE], []),
    ("<image>\nWhat colour is the circle?", "blue circle", [RED], []),
    ("<image>\nWhat colour is the circle?", "blue square", [RED], []),
    ("Say hi.", "hi there, how are you", [], []),
    ("<image>\nShape?", "a circle", [BLUE], []),
]
AUDIO_ITEMS = [
    ("<audio>\nHow many beeps?", "two", [], [_tone(440)]),
    ("<image>\n<audio>\nIs the circle red and the beep high?", "yes it is", [RED], [_tone(880, 0.3)]),
    ("<audio>\nHow many beeps?", "two", [], [_tone(220)]),
]


@pytest.mark.parametrize("arch", ["mm_tiny_cnn", "film_cnn_moe_small", "uni_moe_tiny_image_audio"])
def test_batched_multimodal_scores_equal_each_request_alone(arch):
    model = _model(arch)
    items = ITEMS + (AUDIO_ITEMS if "audio" in model.processor.modalities else [])
    prompts, continuations, images, audios = (list(column) for column in zip(*items))
    requests = continuation_requests(model, prompts, continuations, images=images,
                                     audios=audios if any(audios) else None)
    want = [reference(model, *item) for item in items]
    for batch_size in (1, 3, len(items)):
        got = loglikelihoods(model, requests, batch_size=batch_size)
        assert [ll for ll, _ in got] == pytest.approx([ll for ll, _ in want], abs=1e-4)
        assert [g for _, g in got] == [g for _, g in want]
    assert len({round(ll, 3) for ll, _ in want}) == len(items)  # every request scores differently: nothing swapped

    # A continuation that is the model's own next token is greedy; one token more likely than it is not.
    first = requests[0]
    alone = Request(first.context, first.continuation[:1], first.media)
    proc = model.processor
    inputs = proc(text=proc.apply_chat_template([{"role": "user", "content": ITEMS[0][0]}]), images=[RED],
                  add_special_tokens=False)
    with torch.no_grad():
        top2 = model(**inputs).logits[0, -1].topk(2).indices.tolist()
    (ll_top, greedy_top), (ll_second, greedy_second) = loglikelihoods(
        model, [alone._replace(continuation=[top2[0]]), alone._replace(continuation=[top2[1]])])
    assert greedy_top and not greedy_second and ll_top > ll_second


def test_the_continuation_is_not_read_by_an_instruction_aware_encoder():
    """FiLM conditions the image features on the prompt: the continuation must not leak into them, so
    scoring it after the context alone equals scoring it inside a longer prompt-masked sequence."""
    model = _model("film_cnn_moe_small")
    [request] = continuation_requests(model, ["<image>\nWhat colour?"], ["red and round"], images=[[RED]])
    ll, _ = loglikelihoods(model, [request])[0]
    ids = torch.tensor([list(request.context) + list(request.continuation)])
    pixels = model.processor.image_processor([RED])
    with torch.no_grad():  # the encoder reads the whole sequence, continuation included: a different score
        leaked = model(input_ids=ids, pixel_values=pixels).logits[0, :-1].double().log_softmax(-1)
    n = len(request.continuation)
    leaked_ll = float(leaked[-n:].gather(-1, ids[0, -n:, None]).sum())
    assert ll == pytest.approx(reference(model, "<image>\nWhat colour?", "red and round", [RED])[0], abs=1e-4)
    assert abs(ll - leaked_ll) > 1e-3


def test_bad_multimodal_requests():
    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_cnn").eval()
    [request] = continuation_requests(model, ["<image>\nWhat colour?"], ["red"], images=[[RED]])
    n = model.processor.num_tokens["image"]
    with pytest.raises(ValueError, match=rf"request 0: the context holds {n} image placeholder tokens but 2 image"):
        loglikelihoods(model, [request._replace(media={"image": [RED, BLUE]})])
    with pytest.raises(ValueError, match="would cut one of its image placeholders"):
        loglikelihoods(model, [request], max_length=len(request.continuation) + 2)
    with pytest.raises(ValueError, match=r"model MultimodalMoEForCausalLM takes no \['picture'\] input; its mod"):
        loglikelihoods(model, [request._replace(media={"picture": [RED]})])
    text_model = moezoo.create_model("moe_lm_tiny")
    with pytest.raises(ValueError, match=r"takes no \['image'\] input; its modalities are \['text'\]"):
        loglikelihoods(text_model, [request])
    with pytest.raises(ValueError, match=r"takes no images; its modalities are \['text'\]"):
        continuation_requests(text_model, ["<image>\nWhat colour?"], ["red"], images=[[RED]])
    with pytest.raises(ValueError, match="non-empty context and continuation"):
        loglikelihoods(model, continuation_requests(model, ["<image>\nWhat colour?"], [""], images=[[RED]]))


def test_training_flag_restored_after_multimodal_scoring():
    model = moezoo.create_model("mm_tiny_cnn").train()
    loglikelihoods(model, continuation_requests(model, ["<image>\nColour?"], ["red"], images=[[RED]]))
    assert model.training
