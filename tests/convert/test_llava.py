"""The LLaVA family in and out: moezoo.load and save_pretrained(format="hf") against transformers' LLaVA."""

import json
import os

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, LlavaForConditionalGeneration

import moezoo
from moezoo.convert.llava_testing import tiny_llava_checkpoint

# (tower, text family, vision_feature_select_strategy, vision_feature_layer, key layout, LlavaConfig extras):
# each tower, family, strategy, layer choice and layout at least once, not the cross product.
CASES = [
    ("clip", "llama", "default", -2, "save_pretrained", {}),
    ("siglip", "qwen3_moe", "full", -1, "save_pretrained", {}),
    ("clip", "mixtral", "full", [-3, -1], "state_dict",
     {"projector_hidden_act": "gelu_pytorch_tanh", "multimodal_projector_bias": False}),
    ("siglip", "olmoe", "default", [-2, -1], "state_dict", {}),
    ("clip", "qwen2", "default", -1, "state_dict", {}),  # a tied LM head
    ("siglip", "qwen2_moe", "full", -2, "save_pretrained", {}),
]
IDS = [f"{t}-{f}-{s}-{layer}-{layout}".replace(" ", "") for t, f, s, layer, layout, _ in CASES]
PROMPTS = ["USER: <image>\nw5 w6 ASSISTANT:", "USER: <image> w7 w8 <image>\nw9 ASSISTANT: w10"]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """case id -> (dir, transformers model); built once for the module."""
    out = {}
    for case_id, (tower, family, strategy, layer, layout, extra) in zip(IDS, CASES):
        path = tmp_path_factory.mktemp(f"{tower}-{family}")
        hf = tiny_llava_checkpoint(path, tower, family, layout, vision_feature_select_strategy=strategy,
                                   vision_feature_layer=layer, **extra)
        out[case_id] = (path, hf)
    return out


def _images(seed=0):
    g = torch.Generator().manual_seed(seed)
    sizes = [(40, 30), (50, 64), (32, 32)]  # (W, H): resize and crop paths differ
    return [Image.fromarray(torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8).numpy()) for w, h in sizes]


def _hf_inputs(path, text, images):
    processor = AutoProcessor.from_pretrained(str(path))
    return processor(text=text, images=images, padding=True, padding_side="left", return_tensors="pt")


def _assert_same_inputs(ours, theirs):
    for key in ("input_ids", "attention_mask", "pixel_values"):
        assert torch.equal(ours[key], theirs[key]), key


@pytest.mark.parametrize("case_id", IDS)
def test_processor_matches_transformers(checkpoints, case_id):
    path, hf = checkpoints[case_id]
    model = moezoo.load(path)
    images = _images()
    for text, imgs in ((PROMPTS[0], images[:1]), (PROMPTS, images)):  # one prompt; a left-padded batch of 1 + 2
        ours = model.processor(text=text, images=imgs)
        theirs = _hf_inputs(path, [text] if isinstance(text, str) else text, imgs)
        _assert_same_inputs(ours, theirs)
    n_tokens = int((ours["input_ids"] == hf.config.image_token_id).sum()) // 3
    patches = (32 // 8) ** 2
    cls = 1 if "clip" in case_id else 0  # SigLIP has no CLS; "default" drops the first token either way
    drop = hf.config.vision_feature_select_strategy == "default"
    assert n_tokens == model.num_tokens["image"] == patches + cls - drop
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w5 w6"}]}]
    assert model.processor.apply_chat_template(conversation) == AutoProcessor.from_pretrained(
        str(path)).apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)


@pytest.mark.parametrize("case_id", IDS)
def test_logits_loss_and_generation_match_transformers(checkpoints, case_id):
    path, hf = checkpoints[case_id]
    model = moezoo.load(path)
    assert not model.training and model.config.llm.family == case_id.split("-")[1]
    inputs = model.processor(text=PROMPTS, images=_images())
    mask = inputs["attention_mask"]
    positions = (mask.cumsum(-1) - 1).clamp_min(0)  # transformers' forward would count the left padding
    # -100 on images, padding and each row's first real tokens (a padding position's logits would predict them)
    ignored = (inputs["input_ids"] == hf.config.image_token_id) | (mask == 0) | (positions < 3)
    labels = inputs["input_ids"].masked_fill(ignored, -100)
    with torch.no_grad():
        ref = hf(**inputs, position_ids=positions, labels=labels)
        out = model(**inputs, position_ids=positions, labels=labels)
        other = hf(**{**inputs, "pixel_values": inputs["pixel_values"].flip(-1)}, position_ids=positions)
    real = mask.bool()
    torch.testing.assert_close(out.logits[real], ref.logits[real], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.loss, ref.loss, atol=1e-5, rtol=0)
    assert (other.logits - ref.logits)[real].abs().max() > 1e-2  # the images matter at this tolerance
    single = model.processor(text=PROMPTS[0], images=_images()[:1])
    ours = model.generate(**single, max_new_tokens=16, do_sample=False, eos_token_id=[])
    theirs = hf.generate(**single, max_new_tokens=16, do_sample=False, eos_token_id=None)
    assert ours.shape == theirs.shape == (1, single["input_ids"].shape[1] + 16)
    assert torch.equal(ours, theirs)


def _hf_load(path):
    model, info = LlavaForConditionalGeneration.from_pretrained(str(path), output_loading_info=True)
    # transformers fills missing weights with random numbers: insist that nothing was missed.
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    return model.eval()


@pytest.mark.parametrize("case_id", IDS)
def test_export_loads_in_transformers_with_the_same_outputs(checkpoints, tmp_path, case_id):
    path, hf = checkpoints[case_id]
    model = moezoo.load(path)
    layout = "per_expert" if case_id.endswith("save_pretrained") else "fused"
    out_dir = model.save_pretrained(tmp_path, format="hf", expert_layout=layout)
    if layout == "per_expert":  # the very keys transformers' save_pretrained wrote
        assert load_file(str(out_dir / "model.safetensors")).keys() == load_file(str(path / "model.safetensors")).keys()
    exported = _hf_load(out_dir)
    assert all(torch.equal(exported.state_dict()[k], v) for k, v in hf.state_dict().items())
    images = _images(seed=1)
    inputs = _hf_inputs(out_dir, PROMPTS[:1], images[:1])
    _assert_same_inputs(inputs, _hf_inputs(path, PROMPTS[:1], images[:1]))
    ours, theirs = AutoProcessor.from_pretrained(str(out_dir)), AutoProcessor.from_pretrained(str(path))
    for name in ("patch_size", "vision_feature_select_strategy", "num_additional_image_tokens", "image_token",
                 "chat_template"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.image_processor.to_dict() == theirs.image_processor.to_dict()
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, model(**inputs).logits, atol=1e-4, rtol=0)
    back = moezoo.load(out_dir)  # and the export reads back into moezoo
    assert back.config == model.config
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("case_id", IDS)
def test_moezoo_round_trip_is_exact(checkpoints, tmp_path, case_id):
    model = moezoo.load(checkpoints[case_id][0])
    again = moezoo.load(model.save_pretrained(tmp_path))
    assert again.config == model.config
    assert all(torch.equal(again.state_dict()[k], v) for k, v in model.state_dict().items())
    inputs = model.processor(text=PROMPTS, images=_images())
    _assert_same_inputs(again.processor(text=PROMPTS, images=_images()), inputs)
    with torch.no_grad():
        assert torch.equal(again(**inputs).logits, model(**inputs).logits)


def test_native_model_exports_as_llava(tmp_path):
    """A moezoo-built CLIP model (zoo tokenizer, MoE LLM) is served by transformers unchanged, sharded or not."""
    torch.manual_seed(0)
    model = moezoo.create_model("mm_tiny_clip").eval()
    exported = _hf_load(model.save_pretrained(tmp_path, format="hf", max_shard_size=400_000))
    assert len(set(json.loads((tmp_path / "model.safetensors.index.json").read_text())["weight_map"].values())) > 1
    assert json.loads((tmp_path / "config.json").read_text())["text_config"]["model_type"] == "mixtral"
    text = "<image>\nWhat colour is the circle?"
    inputs = model.processor(text=text, images=_images()[:1])
    _assert_same_inputs(inputs, _hf_inputs(tmp_path, [text], _images()[:1]))
    with torch.no_grad():
        torch.testing.assert_close(exported(**inputs).logits, model(**inputs).logits, atol=1e-4, rtol=0)


def test_upcycled_llava_exports_as_an_moe_llava(checkpoints, tmp_path):
    """MoE-LLaVA's recipe: a dense LLaVA upcycled in moezoo, then served by transformers as a Mixtral LLaVA."""
    path, hf = checkpoints[IDS[0]]
    upcycled = moezoo.upcycle(moezoo.load(path), num_experts=4, top_k=2, norm_topk_prob=True)
    exported = _hf_load(upcycled.save_pretrained(tmp_path, format="hf"))
    assert exported.config.text_config.model_type == "mixtral"
    inputs = upcycled.processor(text=PROMPTS[0], images=_images()[:1])
    with torch.no_grad():
        ref = hf(**inputs).logits  # identical experts: upcycling leaves the outputs unchanged
        torch.testing.assert_close(exported(**inputs).logits, ref, atol=1e-4, rtol=0)
        torch.testing.assert_close(upcycled(**inputs).logits, ref, atol=1e-4, rtol=0)


def test_bf16_load(checkpoints):
    model = moezoo.load(checkpoints[IDS[1]][0], dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    inputs = model.processor(text=PROMPTS[0], images=_images()[:1])
    assert model(**inputs).logits.dtype == torch.bfloat16


def test_transformers_4_processor_files_and_vision_model_keys(checkpoints, tmp_path):
    """llava-hf's published files: preprocessor_config.json, chat_template.json, vision_tower.vision_model.* keys."""
    path, hf = checkpoints[IDS[0]]
    processor = json.loads((path / "processor_config.json").read_text())
    image_processor = {**processor.pop("image_processor"), "processor_class": "LlavaProcessor"}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(image_processor))
    (tmp_path / "processor_config.json").write_text(json.dumps(processor))
    template = (path / "chat_template.jinja").read_text()
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": template}))
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).write_text((path / name).read_text())
    state = load_file(str(path / "model.safetensors"))
    save_file({k.replace("vision_tower.", "vision_tower.vision_model."): v for k, v in state.items()},
              str(tmp_path / "model.safetensors"))
    model = moezoo.load(tmp_path)
    images = _images(seed=2)
    inputs = model.processor(text=PROMPTS, images=images)
    _assert_same_inputs(inputs, _hf_inputs(tmp_path, PROMPTS, images))
    assert model.processor.chat_template == template
    single = model.processor(text=PROMPTS[0], images=images[:1])
    with torch.no_grad():
        torch.testing.assert_close(model(**single).logits, _hf_load(tmp_path)(**single).logits, atol=1e-4, rtol=0)


def _subdir(path, name):
    (path / name).mkdir()
    return path / name


def _copy(src, dst, edit_config=None, edit_state=None, edit_processor=None):
    for name in os.listdir(src):
        (dst / name).write_bytes((src / name).read_bytes())
    for name, edit in (("config.json", edit_config), ("processor_config.json", edit_processor)):
        if edit:
            data = json.loads((dst / name).read_text())
            edit(data)
            (dst / name).write_text(json.dumps(data))
    if edit_state:
        state = load_file(str(src / "model.safetensors"))
        edit_state(state)
        save_file(state, str(dst / "model.safetensors"))
    return dst


def test_unsupported_tower_and_text_family_name_the_supported_ones(checkpoints, tmp_path):
    path = checkpoints[IDS[0]][0]

    def to_pixtral(cfg):
        cfg["vision_config"]["model_type"] = "pixtral"

    with pytest.raises(ValueError, match=r"model_type 'pixtral'; moezoo reads the towers "
                                         r"\['clip_vision_model', 'siglip_vision_model'\]"):
        moezoo.load(_copy(path, tmp_path, to_pixtral))

    def to_gpt2(cfg):
        cfg["text_config"] = {"model_type": "gpt2", "vocab_size": 96, "n_embd": 32, "n_layer": 1, "n_head": 4}

    with pytest.raises(ValueError, match=r"LLaVA text_config: unsupported model_type 'gpt2'.*MixtralForCausalLM"):
        moezoo.load(_copy(path, tmp_path, to_gpt2))


def test_missing_and_unexpected_keys_are_listed(checkpoints, tmp_path):
    def edit(state):
        state.pop("language_model.model.layers.1.self_attn.q_proj.weight")
        state.pop("vision_tower.encoder.layers.0.mlp.fc1.weight")
        state["multi_modal_projector.extra.weight"] = torch.zeros(2)

    with pytest.raises(ValueError, match=r"missing keys \(2\): llm\.layers\.1\.self_attn\.q_proj\.weight, "
                                         r"vision\.vision_tower\.encoder\.layers\.0\.mlp\.fc1\.weight; "
                                         r"unexpected keys \(1\): connectors\.image\.extra\.weight"):
        moezoo.load(_copy(checkpoints[IDS[0]][0], tmp_path, edit_state=edit))


def test_processor_file_errors(checkpoints, tmp_path):
    path = checkpoints[IDS[0]][0]

    def other_class(processor):
        processor["image_processor"]["image_processor_type"] = "LlavaImageProcessor"

    with pytest.raises(ValueError, match=r"image processor is 'LlavaImageProcessor'; moezoo rebuilds only \["):
        moezoo.load(_copy(path, _subdir(tmp_path, "a"),
                          edit_processor=other_class))

    def other_token(cfg):
        cfg["image_token_index"] = 7

    with pytest.raises(ValueError, match=r"encodes the image token '<image>' as \[95\], not as the model's "
                                         r"image_token_index \[7\]"):
        moezoo.load(_copy(path, _subdir(tmp_path, "b"), other_token))

    def no_cls_count(processor):  # transformers-4 CLIP processors lacked num_additional_image_tokens
        processor.pop("num_additional_image_tokens")

    with pytest.warns(UserWarning, match=r"into 15 tokens, but the model takes 16 per image"):
        model = moezoo.load(_copy(path, _subdir(tmp_path, "c"),
                                  edit_processor=no_cls_count))
    assert model.processor(text=PROMPTS[0], images=_images()[:1])["input_ids"].eq(95).sum() == 16


NOT_EXPORTABLE = [
    ("mm_tiny_timm", {}, r"the image encoder is 'timm'; LLaVA's vision tower is a transformers CLIP / SigLIP"),
    ("mm_tiny_open_clip", {}, r"the image encoder is 'open_clip'"),
    ("mm_tiny_cnn", {}, r"the image encoder is 'cnn'"),
    ("mm_tiny_whisper", {}, r"LLaVA needs an image encoder.*LLaVA has no audio encoder \(audio='whisper'\)"),
    ("mm_tiny_video", {}, r"LLaVA takes no video"),
    ("mm_tiny_clip", {"image_connector": {"kind": "moe", "num_experts": 4}}, r"the image connector is 'moe'"),
    ("mm_tiny_clip", {"image_connector": {"kind": "resampler", "num_queries": 4, "num_heads": 4}},
     r"the image connector is 'resampler'"),
    ("mm_tiny_clip", {"image_connector": {"kind": "film"}}, r"the image connector is 'film'"),
    ("mm_tiny_clip", {"modality_attention": "bidirectional"}, r"modality_attention='bidirectional'"),
    ("mm_tiny_siglip", {"llm": {"moe": {"router": "cosine"}}}, r"the LLM: .*router='cosine'"),
]


@pytest.mark.parametrize("name, overrides, message", NOT_EXPORTABLE,
                         ids=[f"{n}-{list(o)}" for n, o, _ in NOT_EXPORTABLE])
def test_export_errors_name_what_stands_in_the_way(tmp_path, name, overrides, message):
    model = moezoo.create_model(name, **overrides)
    with pytest.raises(ValueError, match="cannot export as a transformers LLaVA checkpoint: .*" + message):
        model.save_pretrained(tmp_path / "never-written", format="hf")
    assert not (tmp_path / "never-written").exists()


def test_export_refuses_a_modified_tower(tmp_path):
    model = moezoo.create_model("mm_tiny_clip")
    model.vision.vision_tower.encoder.layers[1].mlp = torch.nn.Identity()  # e.g. an MLP swapped for experts
    with pytest.raises(ValueError, match=r"vision tower's weights are not a plain CLIPVisionModel's \(extra \[\], "
                                         r"missing \['encoder\.layers\.1\.mlp\.fc1\.bias'"):
        model.save_pretrained(tmp_path / "never-written", format="hf")
    assert not (tmp_path / "never-written").exists()
