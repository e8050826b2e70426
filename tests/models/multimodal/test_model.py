"""The multimodal model on every tiny architecture: forward, backward, generate, and what
users rely on: the features land exactly on the placeholders, the inputs change the
output, batches equal single prompts, the prompt conditions but never the answer."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import moezoo
from moezoo.models.multimodal import MultimodalOutput

TINY = moezoo.list_models("mm_tiny_*")
IMAGE_ARCHS = ["mm_tiny_cnn", "mm_tiny_timm", "mm_tiny_open_clip", "mm_tiny_clip", "mm_tiny_siglip", "mm_tiny_video"]


def picture(color: str, size=(48, 40)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).ellipse([8, 6, 36, 30], fill=color)
    return image


def tone(freq: float, seconds: float = 0.5, rate: int = 16000) -> tuple[np.ndarray, int]:
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), rate


def video(colors: list[str]) -> list[Image.Image]:
    return [picture(c) for c in colors]


def inputs_for(model, variant: int = 0, text: str = "What is it?"):
    """A one-prompt batch for ``model``'s first modality; ``variant`` changes the media only."""
    modality = model.processor.modalities[0]
    placeholder = model.processor.placeholders[modality]
    media = {"image": {"images": [picture(["red", "blue"][variant])]},
             "audio": {"audios": [tone([440.0, 1800.0][variant])]},
             "video": {"videos": [video([["red", "green"], ["blue", "yellow"]][variant] * 2)]}}[modality]
    return model.processor(text=model.processor.apply_chat_template(
        [{"role": "user", "content": f"{placeholder}\n{text}"}]), **media)


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    return {name: moezoo.create_model(name).eval() for name in TINY}


@pytest.mark.parametrize("name", TINY)
def test_forward_backward_generate(models, name):
    model = models[name]
    batch = inputs_for(model)
    labels = batch["input_ids"].clone()
    model.train()
    try:
        out = model(**batch, labels=labels)
        out.loss.backward()
    finally:
        model.eval()
    assert isinstance(out, MultimodalOutput) and out.logits.shape[:2] == batch["input_ids"].shape
    assert torch.isfinite(out.loss) and out.aux_loss is not None
    encoder = model.vision if model.vision is not None else model.audio
    for part in (encoder, model.connectors, model.llm):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert grads and any(g is not None and g.abs().sum() > 0 for g in grads), f"{name}: no gradient reached {part}"
    model.zero_grad(set_to_none=True)
    ids = model.generate(**batch, max_new_tokens=5, do_sample=False, eos_token_id=[])
    assert ids.shape == (1, batch["input_ids"].shape[1] + 5)
    assert torch.equal(ids[:, : batch["input_ids"].shape[1]], batch["input_ids"])


@pytest.mark.parametrize("name", TINY)
def test_output_depends_on_the_media(models, name):
    model = models[name]
    with torch.no_grad():
        a, b = model(**inputs_for(model, 0)).logits, model(**inputs_for(model, 1)).logits
    assert (a[0, -1] - b[0, -1]).abs().max() > 1e-4


@pytest.mark.parametrize("name", ["mm_tiny_clip", "mm_tiny_whisper", "mm_tiny_video"])
def test_features_sit_exactly_on_the_placeholders(models, name):
    model = models[name]
    batch = inputs_for(model)
    modality = model.processor.modalities[0]
    key = {"image": "pixel_values", "audio": "input_features", "video": "pixel_values_videos"}[modality]
    with torch.no_grad():
        embeds, _, modality_ids = model.embed_inputs(batch["input_ids"], batch["attention_mask"],
                                                     **{key: batch[key]})
        encoder = model.encoder_for(modality)
        features = model.connector_for(modality)(encoder(batch[key]))
        text = model.llm.embed_tokens(batch["input_ids"])
    slots = batch["input_ids"] == model.token_id(modality)
    assert int(slots.sum()) == model.num_tokens[modality]
    torch.testing.assert_close(embeds[slots], features.reshape(-1, features.shape[-1]), rtol=0, atol=0)
    torch.testing.assert_close(embeds[~slots], text[~slots], rtol=0, atol=0)
    assert (modality_ids[slots] > 0).all() and (modality_ids[~slots] == 0).all()


def test_generate_runs_the_encoder_once_and_matches_full_recompute(models):
    model = models["mm_tiny_clip"]
    batch = inputs_for(model)
    calls = []
    handle = model.vision.register_forward_hook(lambda *args: calls.append(1))
    try:
        ids = model.generate(**batch, max_new_tokens=6, do_sample=False, eos_token_id=[])
    finally:
        handle.remove()
    assert len(calls) == 1
    # Greedy decoding with the KV cache equals recomputing the whole sequence at every step.
    seq = batch["input_ids"]
    for _ in range(6):
        with torch.no_grad():
            logits = model(input_ids=seq, pixel_values=batch["pixel_values"]).logits
        seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(ids, seq)


def test_batch_with_different_image_counts_equals_single_prompts(models):
    model = models["mm_tiny_cnn"]
    proc = model.processor
    prompts = [proc.apply_chat_template([{"role": "user", "content": c}]) for c in
               ("<image> and <image>: the same colour?", "No image here, just a longer question?", "<image> colour?")]
    images = [[picture("red"), picture("blue")], [], [picture("green")]]
    batch = proc(text=prompts, images=images)
    assert batch["pixel_values"].shape[0] == 3 and (batch["attention_mask"][:, 0] == 0).any()  # left-padded
    with torch.no_grad():
        together = model(**batch).logits
        ids = model.generate(**batch, max_new_tokens=4, do_sample=False, eos_token_id=[])
        for i, (prompt, imgs) in enumerate(zip(prompts, images)):
            alone = proc(text=prompt, images=imgs)
            n = alone["input_ids"].shape[1]
            torch.testing.assert_close(together[i, -n:], model(**alone).logits[0], atol=1e-4, rtol=0)
            single = model.generate(**alone, max_new_tokens=4, do_sample=False, eos_token_id=[])
            assert torch.equal(ids[i, -(n + 4):], single[0])


def test_prompt_conditions_the_image_features_but_never_the_answer(models):
    model = moezoo.create_model("mm_tiny_cnn").eval()  # its CNN is FiLM-conditioned on the prompt
    assert model.vision.conditioned
    with torch.no_grad():  # FiLM starts at zero (the plain CNN): give it weights, as training would
        for name, p in model.vision.named_parameters():
            if "film" in name:
                p.normal_(0.0, 0.5)
    proc = model.processor
    prompt = proc.apply_chat_template([{"role": "user", "content": "<image>\nWhat colour?"}])
    base = proc(text=prompt + "red", images=[picture("red")])
    ids = base["input_ids"]
    slots = ids == model.token_id("image")
    answer = torch.zeros_like(ids, dtype=torch.bool)
    answer[0, -1] = True
    labels = torch.where(answer, ids, -100)

    def image_features(input_ids, labels=None):
        with torch.no_grad():
            return model.embed_inputs(input_ids, labels=labels, pixel_values=base["pixel_values"])[0][slots]

    other_answer = ids.clone()
    other_answer[answer] = proc.tokenizer.convert_tokens_to_ids("<|user|>")
    torch.testing.assert_close(image_features(ids, labels), image_features(other_answer, labels), rtol=0, atol=0)
    question = proc(text=prompt.replace("colour", "shape") + "red", images=[picture("red")])["input_ids"]
    assert (image_features(ids, labels) - image_features(question, labels)).abs().max() > 0
    # training reads what generation reads: the prompt alone, not the newline after the answer either
    newline = proc.tokenizer.encode("\n", add_special_tokens=False)
    after = torch.cat([ids, torch.tensor([newline])], 1)
    after_labels = torch.cat([labels, torch.full((1, len(newline)), -100)], 1)
    with torch.no_grad():
        trained = model.embed_inputs(after, labels=after_labels, pixel_values=base["pixel_values"])[0]
        alone = proc(text=prompt, images=[picture("red")])["input_ids"]
        generated = model.embed_inputs(alone, pixel_values=base["pixel_values"])[0]
    torch.testing.assert_close(trained[0, :alone.shape[1]][slots[0, :alone.shape[1]]], generated[alone == model.token_id("image")],
                               rtol=0, atol=0)


def test_bidirectional_attention_over_each_image(models):
    causal = models["mm_tiny_clip"]
    bidirectional = type(causal)(causal.config.replace(modality_attention="bidirectional")).eval()
    bidirectional.load_state_dict(causal.state_dict())
    batch = inputs_for(causal)
    slots = (batch["input_ids"][0] == causal.token_id("image")).nonzero()[:, 0]
    with torch.no_grad():
        assert causal.embed_inputs(batch["input_ids"], pixel_values=batch["pixel_values"])[1] is None
        embeds, spans, _ = bidirectional.embed_inputs(batch["input_ids"], pixel_values=batch["pixel_values"])
        assert spans[0, slots].eq(1).all() and spans[0].eq(1).sum() == len(slots)  # one span: the image
        changed = embeds.clone()
        changed[0, slots[-1]] += 1.0  # only the last image token changes

        def first_slot(x, spans):
            return bidirectional.llm(inputs_embeds=x, spans=spans).logits[0, slots[0]]

        assert torch.equal(first_slot(embeds, None), first_slot(changed, None))  # causal: the future is unseen
        assert (first_slot(embeds, spans) - first_slot(changed, spans)).abs().max() > 1e-5
        before = slots[0] - 1  # text before the image never sees it, either way
        assert torch.equal(bidirectional.llm(inputs_embeds=embeds, spans=spans).logits[0, before],
                           bidirectional.llm(inputs_embeds=changed, spans=spans).logits[0, before])


def test_routing_counts_by_modality(models):
    model = models["mm_tiny_clip"]
    batch = inputs_for(model)
    with torch.no_grad():
        out = model(**batch)
    k = model.config.llm.moe.top_k
    slots = int((batch["input_ids"] == model.token_id("image")).sum())
    text = batch["input_ids"].numel() - slots
    counts = out.modality_tokens_per_expert
    assert len(counts) == len(model.config.llm.sparse_layers())
    for layer in counts:
        assert layer.shape == (4, model.config.llm.moe.num_experts)
        assert layer[0].sum() == text * k and layer[1].sum() == slots * k and layer[2:].sum() == 0


def test_save_and_load_round_trip_exactly(models, tmp_path):
    for name in ("mm_tiny_siglip", "mm_tiny_whisper", "mm_tiny_video"):
        model = models[name]
        path = model.save_pretrained(tmp_path / name)
        loaded = moezoo.load(path)
        assert type(loaded) is type(model) and loaded.config == model.config
        batch, again = inputs_for(model), inputs_for(loaded)
        for key in batch:
            assert torch.equal(batch[key], again[key]), f"{name}: processor output {key} changed"
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, loaded(**again).logits)


class TestErrors:
    def test_placeholder_and_image_counts_must_agree(self, models):
        model = models["mm_tiny_cnn"]
        with pytest.raises(ValueError, match="2 <image> placeholder.*1 image"):
            model.processor(text="<image> <image> Same?", images=[picture("red")])
        batch = model.processor(text="<image> Same?", images=[picture("red")])
        with pytest.raises(ValueError, match="hold 4 image placeholder tokens but 2 image"):
            model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"].repeat(2, 1, 1, 1))

    def test_wrong_image_channels_or_size(self, models):
        model = models["mm_tiny_clip"]
        batch = model.processor(text="<image> ?", images=[picture("red")])
        with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
            model(input_ids=batch["input_ids"], pixel_values=batch["pixel_values"][:, :2])
        with pytest.raises(ValueError, match=r"\(N, 3, 32, 32\)"):
            model(input_ids=batch["input_ids"], pixel_values=torch.zeros(1, 3, 48, 48))
        with pytest.raises(ValueError, match="image 0"):
            model.processor(text="<image> ?", images=[np.zeros((8, 8, 2), dtype=np.uint8)])

    def test_audio_too_long(self, models):
        model = models["mm_tiny_whisper"]
        with pytest.raises(ValueError, match=r"audio 0 lasts 1\.50 s"):
            model.processor(text="<audio> ?", audios=[tone(440.0, seconds=1.5)])

    def test_prompt_longer_than_the_context(self, models):
        model = models["mm_tiny_cnn"]
        ids = torch.ones(1, model.config.llm.max_position_embeddings + 1, dtype=torch.long)
        with pytest.raises(ValueError, match="more than the model's context of 512"):
            model(input_ids=ids)

    def test_a_modality_the_model_does_not_take(self, models):
        with pytest.raises(ValueError, match="takes no audio"):
            models["mm_tiny_cnn"].processor(text="<audio> ?", audios=[tone(440.0)])

    def test_unknown_architecture_lists_the_closest(self):
        with pytest.raises(ValueError, match=r"Did you mean \['mm_tiny_clip'"):
            moezoo.create_model("mm_tiny_clap")


@pytest.mark.parametrize("connector", [
    {"kind": "linear"}, {"kind": "mlp2x_gelu"}, {"kind": "film"}, {"kind": "moe", "num_experts": 4},
    {"kind": "resampler", "num_queries": 6, "num_layers": 1, "num_heads": 4},
    {"kind": "instruct", "num_queries": 6, "num_layers": 1, "num_heads": 4},
])
def test_every_connector_kind_trains_and_generates(connector):
    model = moezoo.create_model("mm_tiny_cnn", image_connector=connector)
    expected = connector.get("num_queries", 4)  # a resampler's queries, else the CNN's 2x2 map
    assert model.num_tokens["image"] == model.processor.num_tokens["image"] == expected
    batch = inputs_for(model)
    model.train()
    out = model(**batch, labels=batch["input_ids"])
    out.loss.backward()
    assert all(p.grad is not None for p in model.connectors.parameters())
    model.eval()
    ids = model.generate(**batch, max_new_tokens=3, do_sample=False, eos_token_id=[])
    assert ids.shape[1] == batch["input_ids"].shape[1] + 3


def test_prefix_attention_lets_image_tokens_read_the_question_and_keeps_the_answer_causal(models):
    base = models["mm_tiny_clip"]
    prefix = type(base)(base.config.replace(modality_attention="prefix")).eval()
    prefix.load_state_dict(base.state_dict())
    proc = base.processor
    chat = [{"role": "user", "content": f"{proc.placeholders['image']}\nWhat colour is it?"},
            {"role": "assistant", "content": "red square"}]
    enc = proc.encode_example(chat, images=[picture("red")])
    ids, labels, pixels = enc["input_ids"], enc["labels"], enc["pixel_values"]
    slots = (ids[0] == base.token_id("image")).nonzero()[:, 0]
    first_answer = int((labels[0] != -100).nonzero()[0, 0])
    with torch.no_grad():
        _, spans, _ = prefix.embed_inputs(ids, labels=labels, pixel_values=pixels)
        # One span: every token before the first answer token, image and text; the answer is causal.
        assert spans[0, :first_answer].eq(1).all() and spans[0, first_answer:].eq(0).all()

        def logits(model, input_ids):
            return model(input_ids=input_ids, labels=labels, pixel_values=pixels).logits[0]

        question = first_answer - 3  # a prompt token after the image
        other = ids.clone()
        other[0, question] = (other[0, question] + 1) % base.config.llm.vocab_size
        # The image tokens read the question that follows them (prefix), never under the causal mask.
        assert (logits(prefix, ids)[slots] - logits(prefix, other)[slots]).abs().max() > 1e-5
        assert torch.equal(logits(base, ids)[slots], logits(base, other)[slots])
        # An answer token never sees the ones after it.
        later = ids.clone()
        later[0, first_answer + 1] = (later[0, first_answer + 1] + 1) % base.config.llm.vocab_size
        torch.testing.assert_close(logits(prefix, ids)[: first_answer + 1], logits(prefix, later)[: first_answer + 1],
                                   rtol=0, atol=0)
        # Generation reads the prompt the same way: the prefill's next-token logits are training's.
        prompt = proc(text=proc.apply_chat_template(chat[:1], add_generation_prompt=True), images=[picture("red")])
        assert torch.equal(prompt["input_ids"][0], ids[0, :first_answer])
        alone = prefix(input_ids=prompt["input_ids"], pixel_values=prompt["pixel_values"]).logits[0, -1]
        torch.testing.assert_close(alone, logits(prefix, ids)[first_answer - 1], rtol=1e-5, atol=1e-5)
        out = prefix.generate(**prompt, max_new_tokens=3, do_sample=False)
        assert out.shape[1] >= prompt["input_ids"].shape[1] + 1
