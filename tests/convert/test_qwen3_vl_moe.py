"""Qwen3-VL-MoE against transformers' ``Qwen3VLMoeForConditionalGeneration`` on a tiny random checkpoint built
here in the hub key layout (fused experts stored transposed): image, video and text-only prompts, the loss,
greedy decoding, left-padded batches, the processor's ids and pixels, and the export back."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

import moezoo
from moezoo.convert.qwen3_vl_testing import tiny_qwen3_vl_checkpoint
from moezoo.models.lm.rope import RotaryEmbedding

TOL = 1e-4


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    path = tmp_path_factory.mktemp("qwen3_vl_moe")
    reference = tiny_qwen3_vl_checkpoint(path)
    reference.generation_config.eos_token_id = None  # decode all 16 steps on both sides
    return reference, transformers.AutoProcessor.from_pretrained(path), moezoo.load(path), path


def _image(seed: int, size: tuple[int, int] = (32, 40)) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8))


def _video(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (8, 32, 32, 3), dtype=np.uint8)


def _prompt(processor, kind: str, text: str = "w5 w6 w7") -> str:
    content = ([{"type": kind}] if kind != "text" else []) + [{"type": "text", "text": text}]
    return processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)


def _inputs(pair, kind: str):
    reference_processor, ours = pair[1], pair[2]
    text = _prompt(ours.processor, kind)
    if kind == "image":
        ref = reference_processor(text=[text], images=[_image(0)], return_tensors="pt")
        mine = ours.processor(text, images=[_image(0)])
    elif kind == "video":
        metadata = [{"total_num_frames": 8, "fps": 4.0, "frames_indices": list(range(8))}]
        ref = reference_processor(text=[text], videos=[_video(0)], video_metadata=metadata, return_tensors="pt")
        mine = ours.processor(text, videos=[_video(0)], fps=[4.0])
    else:
        ref = reference_processor(text=[text], return_tensors="pt")
        mine = ours.processor(text)
    return ref, mine


@pytest.mark.parametrize("kind", ["image", "video", "text"])
def test_processor_gives_transformers_inputs(pair, kind):
    ref, mine = _inputs(pair, kind)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "pixel_values", "image_grid_thw",
                "pixel_values_videos", "video_grid_thw"):
        assert (key in ref) == (key in mine), key
        if key in ref:
            assert torch.equal(torch.as_tensor(ref[key]), mine[key]), key


@pytest.mark.parametrize("kind", ["image", "video", "text"])
def test_logits_and_loss_match_transformers(pair, kind):
    reference, _, ours, _ = pair
    ref_inputs, _ = _inputs(pair, kind)
    inputs = {k: v for k, v in ref_inputs.items() if k != "video_metadata"}
    labels = inputs["input_ids"].clone()
    labels[:, :3] = -100
    with torch.no_grad():
        expected = reference(**inputs, labels=labels)
        got = ours(**inputs, labels=labels)
    assert torch.allclose(got.logits, expected.logits, atol=TOL, rtol=0)
    assert torch.allclose(got.loss, expected.loss, atol=TOL, rtol=0)


def test_image_and_video_together_left_padded_batch(pair):
    reference, reference_processor, ours, _ = pair
    texts = [_prompt(ours.processor, "image", "w5"), _prompt(ours.processor, "video", "w6 w7 w8 w9 w10 w11 w12")]
    texts[0] = texts[0].replace("w5", "<|vision_start|><|video_pad|><|vision_end|> w5")  # an image and a video
    metadata = [{"total_num_frames": 8, "fps": 4.0, "frames_indices": list(range(8)),}] * 2
    inputs = reference_processor(text=texts, images=[_image(1)], videos=[_video(1), _video(2)],
                                 video_metadata=metadata, padding=True, padding_side="left", return_tensors="pt")
    inputs = {k: v for k, v in inputs.items() if k != "video_metadata"}
    assert not bool(inputs["attention_mask"].all())  # the test needs left padding
    with torch.no_grad():
        expected = reference(**inputs).logits
        got = ours(**inputs).logits
    real = inputs["attention_mask"].bool()
    assert torch.allclose(got[real], expected[real], atol=TOL, rtol=0)
    expected_ids = reference.generate(**inputs, max_new_tokens=16, do_sample=False)
    got_ids = ours.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=[])
    assert torch.equal(got_ids, expected_ids)


@pytest.mark.parametrize("kind", ["image", "video", "text"])
def test_greedy_ids_match_transformers(pair, kind):
    reference, _, ours, _ = pair
    ref_inputs, _ = _inputs(pair, kind)
    inputs = {k: v for k, v in ref_inputs.items() if k != "video_metadata"}
    expected = reference.generate(**inputs, max_new_tokens=16, do_sample=False)
    got = ours.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=[])
    assert got.shape[1] == inputs["input_ids"].shape[1] + 16
    assert torch.equal(got, expected)


def test_export_loads_in_transformers_with_the_same_logits(pair, tmp_path):
    reference, _, ours, source = pair
    ours.save_pretrained(tmp_path, format="hf")
    exported = transformers.Qwen3VLMoeForConditionalGeneration.from_pretrained(tmp_path).eval()
    for (name, a), (_, b) in zip(reference.state_dict().items(), exported.state_dict().items()):
        assert torch.equal(a, b), name
    ref_inputs, _ = _inputs(pair, "image")
    inputs = {k: v for k, v in ref_inputs.items() if k != "video_metadata"}
    with torch.no_grad():
        assert torch.allclose(exported(**inputs).logits, ours(**inputs).logits, atol=TOL, rtol=0)
    # the hub layout again: the fused experts stored transposed, as in the source files
    from safetensors import safe_open

    with safe_open(str(source / "model.safetensors"), "pt") as a, safe_open(str(tmp_path / "model.safetensors"),
                                                                           "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for key in a.keys():  # noqa: SIM118  (safe_open is not iterable)
            assert torch.equal(a.get_tensor(key), b.get_tensor(key)), key
    again = moezoo.load(tmp_path)
    assert torch.equal(transformers.AutoProcessor.from_pretrained(tmp_path)(
        text=[_prompt(again.processor, "image")], images=[_image(0)], return_tensors="pt")["input_ids"],
        again.processor(_prompt(again.processor, "image"), images=[_image(0)])["input_ids"])


def test_save_pretrained_layout_reads_too(tmp_path):
    reference = tiny_qwen3_vl_checkpoint(tmp_path, seed=1, layout="save_pretrained")
    ours = moezoo.load(tmp_path)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(ours(input_ids=ids).logits, reference(input_ids=ids).logits, atol=TOL, rtol=0)


def test_moezoo_format_round_trip(pair, tmp_path):
    ours = pair[2]
    ours.save_pretrained(tmp_path)
    again = moezoo.load(tmp_path)
    for (name, a), (_, b) in zip(ours.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    ref_inputs, _ = _inputs(pair, "video")
    inputs = {k: v for k, v in ref_inputs.items() if k != "video_metadata"}
    with torch.no_grad():
        # same weights; memory layout (an imported tensor's strides) may change float summation order
        assert torch.allclose(again(**inputs).logits, ours(**inputs).logits, atol=1e-6, rtol=0)
    assert torch.equal(again.processor(_prompt(again.processor, "image"), images=[_image(0)])["input_ids"],
                       ours.processor(_prompt(ours.processor, "image"), images=[_image(0)])["input_ids"])


def test_mrope_on_text_positions_is_plain_rope():
    plain = RotaryEmbedding(16, 5000.0)
    multi = RotaryEmbedding(16, 5000.0, mrope_section=[4, 2, 2], mrope_interleaved=True)
    pos = torch.arange(7)[None]
    for a, b in zip(plain(pos, torch.float32), multi(pos.expand(3, 1, 7), torch.float32)):
        assert torch.equal(a, b)


def test_placeholder_count_mismatch_is_refused(pair):
    ours = pair[2]
    ref_inputs, _ = _inputs(pair, "image")
    ids = ref_inputs["input_ids"][:, :-3]
    ids = torch.cat([ids[:, :5], ids[:, 6:]], dim=1)  # one image token fewer
    with pytest.raises(ValueError, match="image placeholder tokens"):
        ours(input_ids=ids, pixel_values=ref_inputs["pixel_values"], image_grid_thw=ref_inputs["image_grid_thw"])


def test_published_file_layout_loads(tmp_path):
    """The files as the hub's Qwen3-VL-30B-A3B-Instruct has them (written by transformers 4.57): ``rope_scaling``
    and ``rope_theta`` in the text config, ``num_experts``, the vision config's old ``model_type``, ``torch_dtype``,
    separate image / video processor files and the legacy ``chat_template.json``."""
    import json

    reference = tiny_qwen3_vl_checkpoint(tmp_path, seed=2)
    cfg = json.loads((tmp_path / "config.json").read_text())
    text, vision = cfg["text_config"], cfg["vision_config"]
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope.pop("rope_theta")
    text["rope_scaling"] = rope
    text["num_experts"] = text.pop("num_local_experts")
    vision["model_type"] = "qwen3_vl_moe"
    vision.pop("rope_parameters")
    cfg["torch_dtype"] = cfg.pop("dtype")
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    processor = json.loads((tmp_path / "processor_config.json").read_text())
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(processor["image_processor"]))
    (tmp_path / "video_preprocessor_config.json").write_text(json.dumps(processor["video_processor"]))
    (tmp_path / "processor_config.json").unlink()
    template = (tmp_path / "chat_template.jinja").read_text()
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    (tmp_path / "chat_template.jinja").unlink()

    ours = moezoo.load(tmp_path)
    assert ours.config.llm.mrope_section == [4, 2, 2] and ours.processor.chat_template == template
    reference_processor = transformers.AutoProcessor.from_pretrained(tmp_path)
    text_in = _prompt(ours.processor, "image")
    expected_inputs = reference_processor(text=[text_in], images=[_image(3, (48, 32))], return_tensors="pt")
    inputs = ours.processor(text_in, images=[_image(3, (48, 32))])
    for key in ("input_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(inputs[key], expected_inputs[key]), key
    with torch.no_grad():
        assert torch.allclose(ours(**inputs).logits, reference(**expected_inputs).logits, atol=TOL, rtol=0)


def test_text_only_left_padded_batch_decodes_as_transformers(pair):
    reference, reference_processor, ours, _ = pair
    texts = [_prompt(ours.processor, "text", "w5"), _prompt(ours.processor, "text", "w6 w7 w8 w9 w10")]
    inputs = reference_processor(text=texts, padding=True, padding_side="left", return_tensors="pt")
    assert torch.equal(ours.processor(texts)["input_ids"], inputs["input_ids"])
    expected = reference.generate(**inputs, max_new_tokens=16, do_sample=False)
    assert torch.equal(ours.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=[]), expected)


def test_encode_prompt_renders_and_processes_a_conversation(pair):
    _, reference_processor, ours, _ = pair
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w9 w10"}]}]
    got = ours.processor.encode_prompt(conversation, images=[_image(4)])
    expected = reference_processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image", "image": _image(4)}, {"type": "text", "text": "w9 w10"}]}],
        tokenize=True, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    for key in ("input_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw"):
        assert torch.equal(got[key], expected[key]), key


def test_training_step_reaches_the_tower_through_deepstack(pair):
    ours = pair[2]
    ref_inputs, _ = _inputs(pair, "image")
    inputs = {k: v for k, v in ref_inputs.items() if k != "video_metadata"}
    ours.train()
    try:
        out = ours(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
        assert out.aux_loss is not None and out.loss > out.lm_loss  # training adds the weighted router loss
        for name in ("visual.merger.linear_fc2.weight", "visual.deepstack_merger_list.0.linear_fc2.weight",
                     "llm.layers.1.mlp.experts.gate_up_proj"):
            grad = dict(ours.named_parameters())[name].grad
            assert grad is not None and bool(grad.abs().sum() > 0), name
    finally:
        ours.zero_grad(set_to_none=True)
        ours.eval()


def test_chat_answers_through_the_checkpoints_processor(tmp_path):
    """``moezoo chat`` / ``moezoo demo``'s one code path (``moezoo.eval.chat``) runs a Qwen3-VL-MoE checkpoint:
    its prompt is the processor's chat template with one image, and the reply is its greedy answer."""
    from moezoo.eval.chat import build_inputs, reply

    tiny_qwen3_vl_checkpoint(tmp_path)
    model = moezoo.load(tmp_path)
    image = tmp_path / "scene.png"
    Image.new("RGB", (32, 32), "red").save(image)
    inputs = build_inputs(model, "what colour?", images=[str(image)])
    assert int((inputs["mm_token_type_ids"] == 1).sum()) == int(inputs["image_grid_thw"].prod()) // 4
    with pytest.raises(ValueError, match="takes no audio: it takes image, video"):
        build_inputs(model, "what colour?", audios=[str(image)])
    ids = model.generate(**inputs, max_new_tokens=3)
    assert reply(model, "what colour?", images=[str(image)], max_new_tokens=3).text == model.processor.tokenizer.decode(
        ids[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
