"""MoE-LLaVA's released format: import against a composition of reference implementations, export, templates, errors.

The reference for a whole MoE-LLaVA model is built here as MoE-LLaVA builds it (``moellava/model/language_model/
llava_{stablelm,phi}_moe.py``, ``EvalMoELLaVA*ForCausalLM.__init__``): transformers' own ``StableLmForCausalLM`` /
``PhiForCausalLM`` whose ``model.layers[i].mlp`` at each ``moe_layers_idx`` is DeepSpeed's ``MoE`` around that
MLP, with a bias-free ``lm_head``; the MoE is the DeepSpeed reference of ``tests/moe/test_deepspeed_gating.py``
(``DeepSpeedMoE``, written from ``deepspeed/moe/sharded_moe.py``'s ``top2gating`` / ``MOELayer`` and
``deepspeed/moe/layer.py``'s ``MoE``), reused, not rewritten. Images go through transformers' ``CLIPVisionModel``
(``multimodal_encoder/clip_encoder.py``: ``hidden_states[mm_vision_select_layer][:, 1:]``) and the projector
(``multimodal_projector/builder.py``: ``Linear -> nn.GELU() -> Linear``), and replace the prompt's one image id
(``llava_arch.py``'s ``prepare_inputs_labels_for_multimodal``). Capacity depends on the tokens of each forward,
so both sides prefill the prompt in one forward, then decode one token at a time with a KV cache.
"""

import importlib.util
import json
from pathlib import Path

import pytest
import torch
import transformers
from PIL import Image
from safetensors.torch import load_file
from torch import nn

import moezoo
from moezoo.convert.hf_config import family_problems
from moezoo.convert.llava_testing import tiny_llava_checkpoint
from moezoo.convert.moe_llava import SYSTEM
from moezoo.convert.moe_llava_testing import (
    IMAGE_SIZE,
    PATCH,
    tiny_moe_llava_checkpoint,
    tiny_moe_llava_config,
    tiny_text_model,
)
from moezoo.models.lm import LMConfig, MoEForCausalLM
from moezoo.moe import MoEConfig

_spec = importlib.util.spec_from_file_location(
    "deepspeed_reference", Path(__file__).parents[1] / "moe" / "test_deepspeed_gating.py")
ds_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ds_ref)  # DeepSpeedMoE: hidden size ds_ref.DIM (16), ds_ref.E (4) experts

IMAGE_ID = -200  # moellava/constants.py: IMAGE_TOKEN_INDEX
# multimodal_encoder/clip_encoder.py and siglip_encoder.py: transformers' own tower classes.
TOWER_CLASSES = {"clip_vision_model": (transformers.CLIPVisionModel, transformers.CLIPVisionConfig),
                 "siglip_vision_model": (transformers.SiglipVisionModel, transformers.SiglipVisionConfig)}


class ReferenceMoE(nn.Module):
    """DeepSpeed's ``MoE`` as a decoder layer's ``mlp``: the layer takes the hidden states and drops ``l_aux``
    (MoE-LLaVA's patched decoder-layer forward keeps it aside)."""

    def __init__(self, expert: nn.Module, moe: dict):
        super().__init__()
        self.moe = ds_ref.DeepSpeedMoE(expert, moe["capacity_factor"], moe["eval_capacity_factor"],
                                       moe["min_capacity"], use_residual=moe["use_residual"])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.moe(hidden_states)[0]


def reference_model(base: str, config: dict, state: dict) -> nn.Module:
    """transformers' text model + CLIPVisionModel / SiglipVisionModel + projector, MoE layers swapped, loaded from
    MoE-LLaVA's keys."""
    text = tiny_text_model(base)
    moe = config["moe"]
    assert config["hidden_size"] == ds_ref.DIM and set(moe["num_experts"]) == {ds_ref.E}
    for layer in moe["moe_layers_idx"]:
        text.model.layers[layer].mlp = ReferenceMoE(text.model.layers[layer].mlp, moe)
    text.lm_head = nn.Linear(config["hidden_size"], config["vocab_size"], bias=False)  # MoELLaVA*ForCausalLM's
    ref = nn.Module()
    ref.text = text
    tower_class, tower_config = TOWER_CLASSES[config["mm_image_tower_config"]["model_type"]]
    ref.tower = tower_class(tower_config(**{k: v for k, v in config["mm_image_tower_config"].items()
                                            if k != "model_type"}))
    ref.proj = nn.Sequential(nn.Linear(config["mm_hidden_size"], config["hidden_size"]), nn.GELU(),
                             nn.Linear(config["hidden_size"], config["hidden_size"]))
    renamed = {}
    for key, tensor in state.items():
        if key.startswith("model.image_tower.image_tower.vision_model."):
            tower_key = key[len("model.image_tower.image_tower."):]
            if tower_key not in ref.tower.state_dict():  # transformers 5 drops the `vision_model.` level
                tower_key = tower_key[len("vision_model."):]
            renamed["tower." + tower_key] = tensor
        elif key.startswith("model.mm_projector.image_spatial_proj."):
            renamed["proj." + key[len("model.mm_projector.image_spatial_proj."):]] = tensor
        else:
            key = (key.replace(".mlp.deepspeed_moe.gate.wg.", ".mlp.moe.wg.")
                   .replace(".mlp.deepspeed_moe.experts.deepspeed_experts.", ".mlp.moe.deepspeed_experts.")
                   .replace(".mlp.mlp.", ".mlp.moe.mlp.").replace(".mlp.coefficient.", ".mlp.moe.coefficient."))
            renamed["text." + key] = tensor
    ref.load_state_dict(renamed, strict=True)  # every MoE-LLaVA key has its place, and nothing is left over
    return ref.eval()


def tokenizer_image_token(prompt: str, tokenizer) -> list[int]:
    """moellava/mm_utils.py, ``tokenizer_image_token``: chunks around ``<image>``, -200 between them."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    ids, offset = [], 0
    if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id:
        offset = 1
        ids.append(chunks[0][0])
    for i, chunk in enumerate(chunks):
        if i:
            ids.append(IMAGE_ID)
        ids.extend(chunk[offset:])
    return ids


def reference_embeds(ref: nn.Module, ids: list[int], pixel_values: torch.Tensor, select_layer: int) -> torch.Tensor:
    # "patch": [:, 1:] for CLIP and, although it has no CLS, for SigLIP too (siglip_encoder.py's feature_select)
    features = ref.tower(pixel_values, output_hidden_states=True).hidden_states[select_layer][:, 1:]
    features = ref.proj(features)[0]
    at = ids.index(IMAGE_ID)
    embed = ref.text.get_input_embeddings()
    parts = [embed(torch.tensor(ids[:at])), features, embed(torch.tensor(ids[at + 1:]))]
    return torch.cat(parts)[None]


def reference_greedy(ref: nn.Module, embeds: torch.Tensor, steps: int) -> list[int]:
    """Prefill in one forward, then one token per forward with the KV cache (as MoE-LLaVA's generate does)."""
    out = ref.text(inputs_embeds=embeds, use_cache=True)
    new = []
    for _ in range(steps):
        token = out.logits[:, -1].argmax(-1)
        new.append(int(token))
        out = ref.text(input_ids=token[:, None], cache=out.past_key_values, use_cache=True)
    return new


PROMPT = "<image>\nw5 w9 w12 w7 w30 w31 w2"


@pytest.mark.parametrize("residual", [False, True], ids=["moe", "residual"])
@pytest.mark.parametrize("base", ["stablelm", "phi", "qwen1_5"])
def test_logits_and_greedy_ids_match_the_reference_composition(tmp_path, base, residual):
    clip = transformers.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                           crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    _check_against_the_reference(tmp_path, base, residual, "clip", clip)


@pytest.mark.parametrize("base", ["stablelm", "phi"])
def test_a_siglip_tower_matches_the_reference_composition(tmp_path, base):
    """The -384 releases' tower: transformers' SiglipVisionModel, hidden_states[-2][:, 1:] (the first patch dropped
    as MoE-LLaVA drops it: 15 of the tiny tower's 16 positions), through SiglipImageProcessor's pixels."""
    siglip = transformers.SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    model = _check_against_the_reference(tmp_path, base, False, "siglip", siglip)
    assert model.num_tokens == {"image": (IMAGE_SIZE // PATCH) ** 2 - 1}


def _check_against_the_reference(tmp_path, base: str, residual: bool, tower: str, image_processor):
    """Pixels equal ``image_processor``'s, ids MoE-LLaVA's around the image, logits and 16 greedy ids the
    reference composition's; returns the model."""
    state = tiny_moe_llava_checkpoint(tmp_path, base, use_residual=residual, tower=tower)
    config = json.loads((tmp_path / "config.json").read_text())
    model = moezoo.load(tmp_path)  # moe_llava_qwen1_5 runs transformers' Qwen2 (llava_qwen1_5_moe.py)
    ref = reference_model(base, config, state)
    image = Image.fromarray((torch.rand(IMAGE_SIZE, IMAGE_SIZE, 3) * 255).byte().numpy())
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w5 w9 w12"}]}]
    prompt = model.processor.apply_chat_template(conv)
    inputs = model.processor(text=prompt, images=[image])
    torch.testing.assert_close(inputs["pixel_values"], image_processor(image, return_tensors="pt")["pixel_values"])
    ids = tokenizer_image_token(prompt, model.tokenizer)
    mine = inputs["input_ids"][0].tolist()
    image_at = mine.index(model.config.image_token_id)
    assert mine[:image_at] + [IMAGE_ID] + mine[image_at + model.num_tokens["image"]:] == ids

    with torch.no_grad():
        embeds = reference_embeds(ref, ids, inputs["pixel_values"], config["mm_vision_select_layer"])
        expected = ref.text(inputs_embeds=embeds).logits
        out = model(**inputs)
    assert all(stats.dropped_fraction > 0 for stats in out.router_stats)  # the prompt overflowed the capacity
    torch.testing.assert_close(out.logits, expected, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        want = reference_greedy(ref, embeds, 16)
    got = model.generate(**inputs, max_new_tokens=16, do_sample=False, eos_token_id=[])
    assert got[0, inputs["input_ids"].shape[1]:].tolist() == want
    return model


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """``expand2square`` of MoE-LLaVA's ``moellava/mm_utils.py`` (LLaVA's): the image centred on a square of
    ``background``, the offset rounded down."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    square = Image.new(image.mode, (side, side), background)
    square.paste(image, (0, (width - height) // 2) if width > height else ((height - width) // 2, 0))
    return square


@pytest.mark.parametrize("aspect", ["pad", "square"])
def test_a_siglip_processor_pads_as_configured_then_squashes_without_a_crop(tmp_path, aspect):
    """A non-square image: with image_aspect_ratio "pad" (the releases') it is first padded to a square in the
    processor's mean colour (process_images: ``expand2square(image, tuple(int(x*255) for x in image_mean))``),
    then SigLIP's processor resizes it to the tower's square (no crop), mean and std 0.5, exactly as transformers'
    SiglipImageProcessor does; with "square" it is resized as it is."""
    tiny_moe_llava_checkpoint(tmp_path, "stablelm", tower="siglip", image_aspect_ratio=aspect)
    model = moezoo.load(tmp_path)
    image = Image.fromarray((torch.rand(20, 48, 3) * 255).byte().numpy())
    pixels = model.processor(text="<image> w5", images=[image])["pixel_values"]
    theirs = transformers.SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    if aspect == "pad":
        image = expand2square(image, tuple(int(x * 255) for x in theirs.image_mean))
    torch.testing.assert_close(pixels, theirs(image, return_tensors="pt")["pixel_values"], rtol=0, atol=0)
    spec = model.preprocess_specs()["image"]
    assert spec["class"] == "SiglipImageProcessor" and spec["config"]["size"] == {"height": 32, "width": 32}
    assert spec["config"]["image_mean"] == spec["config"]["image_std"] == [0.5, 0.5, 0.5]
    assert spec.get("pad_to_square", False) == (aspect == "pad")
    model.save_pretrained(tmp_path / "out", format="moe_llava")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["image_aspect_ratio"] == aspect


def test_a_clip_release_pads_in_clip_mean_colour(tmp_path):
    tiny_moe_llava_checkpoint(tmp_path, "phi")
    model = moezoo.load(tmp_path)
    image = Image.fromarray((torch.rand(40, 24, 3) * 255).byte().numpy())
    pixels = model.processor(text="<image> w5", images=[image])["pixel_values"]
    theirs = transformers.CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                             crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    padded = expand2square(image, tuple(int(x * 255) for x in theirs.image_mean))  # (122, 116, 104)
    torch.testing.assert_close(pixels, theirs(padded, return_tensors="pt")["pixel_values"], rtol=0, atol=0)


def test_the_prompt_overflows_the_eval_capacity(tmp_path):
    """The parity above runs with tokens dropped: eval_capacity_factor 0.5 keeps half the prompt's choices."""
    tiny_moe_llava_checkpoint(tmp_path, "phi")
    model = moezoo.load(tmp_path)
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w5 w9 w12"}]}]
    inputs = model.processor(text=model.processor.apply_chat_template(conv),
                             images=[Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "red")])
    layer = model.llm.layers[1].mlp
    tokens = inputs["input_ids"].shape[1]
    assert layer.capacity(tokens) == max(0, -(-tokens * 2 * 0.5 // 4))
    with torch.no_grad():
        out = layer(torch.randn(tokens, 16))
    assert out.num_dropped > 0


@pytest.mark.parametrize("base", ["stablelm", "phi"])
def test_config_fields_map(tmp_path, base):
    tiny_moe_llava_checkpoint(tmp_path, base, moe_layers_idx=(0, 2), use_residual=True, capacity_factor=1.25,
                              eval_capacity_factor=2.0, min_capacity=3)
    cfg = moezoo.load(tmp_path).config
    llm, moe = cfg.llm, cfg.llm.moe
    assert llm.moe_layers == [0, 2] and not llm.is_moe_layer(1)
    assert (moe.router, moe.top_k, moe.num_experts, moe.capacity_factor, moe.eval_capacity_factor,
            moe.min_capacity, moe.use_residual, moe.aux_loss_coef) == ("deepspeed_top2", 2, 4, 1.25, 2.0, 3, True, 0.01)
    assert (moe.activation, moe.expert_bias) == (("gelu_tanh", True) if base == "phi" else ("swiglu", False))
    assert llm.rotary_fraction == 0.5 and llm.norm == "layer" and not llm.lm_head_bias
    assert llm.parallel_block == (base == "phi")
    assert (cfg.vision.feature_layer, cfg.vision.select_strategy) == (-2, "default")
    assert (cfg.image_connector.kind, cfg.image_connector.activation) == ("mlp2x_gelu", "gelu")


# --- export ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("base", ["stablelm", "phi", "qwen1_5"])
def test_round_trips_are_exact(tmp_path, base):
    """MoE-LLaVA files -> moezoo -> MoE-LLaVA files: the same tensors under the same keys; and back again."""
    state = tiny_moe_llava_checkpoint(tmp_path / "in", base, use_residual=True)
    model = moezoo.load(tmp_path / "in")
    model.save_pretrained(tmp_path / "out", format="moe_llava")
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(written) == sorted(state)
    for key, tensor in state.items():
        assert torch.equal(written[key], tensor), key
    config_in = json.loads((tmp_path / "in" / "config.json").read_text())
    config_out = json.loads((tmp_path / "out" / "config.json").read_text())
    for field in ("model_type", "architectures", "mm_image_tower", "mm_vision_select_layer", "image_projector_type"):
        assert config_out[field] == config_in[field], field
    for field in ("moe_layers_idx", "num_experts", "capacity_factor", "eval_capacity_factor", "min_capacity",
                  "use_residual", "top_k_experts", "router_aux_loss_coef"):
        assert config_out["moe"][field] == config_in["moe"][field], field
    again = moezoo.load(tmp_path / "out")
    assert again.config == model.config
    mine, theirs = model.state_dict(), again.state_dict()
    assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert again.processor.chat_template == model.processor.chat_template


def test_a_siglip_round_trip_is_exact(tmp_path):
    """The SigLIP tower goes back under its own keys, post-layernorm and pooling head included (MoE-LLaVA saves
    them; its features never reach them), and ``mm_image_tower`` names it."""
    state = tiny_moe_llava_checkpoint(tmp_path / "in", "phi", tower="siglip")
    assert "model.image_tower.image_tower.vision_model.head.probe" in state
    assert "model.image_tower.image_tower.vision_model.post_layernorm.weight" in state
    model = moezoo.load(tmp_path / "in")
    model.save_pretrained(tmp_path / "out", format="moe_llava")
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert sorted(written) == sorted(state) and all(torch.equal(written[k], state[k]) for k in state)
    config_in = json.loads((tmp_path / "in" / "config.json").read_text())
    config_out = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config_out["mm_image_tower"] == config_in["mm_image_tower"] == "google/siglip-tiny-test"
    assert config_out["mm_image_tower_config"] == config_in["mm_image_tower_config"]
    assert (config_out["mm_hidden_size"], config_out["mm_vision_select_feature"]) == (32, "patch")
    again = moezoo.load(tmp_path / "out")
    assert again.config == model.config and again.num_tokens == {"image": 15}
    mine, theirs = model.state_dict(), again.state_dict()
    assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_released_siglip_checkpoint_names_its_hub_tower():
    """The -384 releases name google/siglip-so400m-patch14-384 only; moezoo fills in its SiglipVisionConfig, and
    MoE-LLaVA's "patch" selection gives 27 * 27 - 1 = 728 tokens."""
    from moezoo.convert.moe_llava import vision_config
    from moezoo.models.encoders.hf_vision import HFVisionEncoder, HFVisionEncoderConfig

    vision = vision_config({"mm_image_tower": "google/siglip-so400m-patch14-384"})
    assert {k: vision[k] for k in ("model_type", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "image_size", "patch_size", "hidden_act")} == {
        "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27,
        "num_attention_heads": 16, "image_size": 384, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh"}
    with torch.device("meta"):
        tower = HFVisionEncoder(HFVisionEncoderConfig(vision, feature_layer=-2, select_strategy="default"))
    assert tower.num_tokens == 728


def test_export_refuses_a_tower_name_moe_llava_would_build_otherwise(tmp_path):
    tiny_moe_llava_checkpoint(tmp_path / "in", "stablelm", tower="siglip")
    model = moezoo.load(tmp_path / "in")
    vision = model.config.vision
    vision.vision_config["_name_or_path"] = "openai/clip-vit-large-patch14-336"
    with pytest.raises(ValueError, match=r"mm_image_tower='openai/clip-vit-large-patch14-336' would make MoE-LLaVA's "
                       r"builder.py build a clip_vision_model tower, but the tower is 'siglip_vision_model'"):
        model.save_pretrained(tmp_path / "out", format="moe_llava")
    assert not (tmp_path / "out").exists()


def test_export_refuses_what_moe_llava_cannot_hold(tmp_path):
    model = moezoo.create_model("mm_tiny_timm")
    with pytest.raises(ValueError, match="cannot export as a MoE-LLaVA checkpoint: the image encoder is 'timm'"):
        model.save_pretrained(tmp_path, format="moe_llava")
    assert not any(tmp_path.iterdir())


# --- chat templates -------------------------------------------------------------------------------------------
# Written down from moellava/conversation.py: conv_templates["phi"] (conv_phi, also "qwen") and
# conv_templates["stablelm"] (conv_stablelm), both SeparatorStyle.TWO with sep " " and sep2 "<|endoftext|>";
# the prompt from conv.append_message(roles[0], "<image>\n" + question); conv.append_message(roles[1], None);
# conv.get_prompt() (predict.py, moellava/serve/cli.py).
EXPECTED_PROMPT = SYSTEM + " USER: <image>\nWhat is in the picture? ASSISTANT:"
EXPECTED_TWO_TURNS = (SYSTEM + " USER: <image>\nWhat is in the picture? ASSISTANT: A red circle.<|endoftext|>"
                      "USER: And its size? ASSISTANT: Small.<|endoftext|>")
EXPECTED_SYSTEM = "Answer briefly. USER: Hi ASSISTANT:"


@pytest.mark.parametrize("base", ["stablelm", "phi", "qwen1_5"])
def test_chat_template_renders_moe_llavas_conversation(tmp_path, base):
    tiny_moe_llava_checkpoint(tmp_path, base)
    processor = moezoo.load(tmp_path).processor
    assert SYSTEM == ("A chat between a curious user and an artificial intelligence assistant. The assistant gives "
                      "helpful, detailed, and polite answers to the user's questions.")
    question = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in the picture?"}]}]
    assert processor.apply_chat_template(question) == EXPECTED_PROMPT
    assert processor.apply_chat_template([{"role": "user", "content": "<image>\nWhat is in the picture?"}]) \
        == EXPECTED_PROMPT
    answered = question + [{"role": "assistant", "content": "A red circle."},
                           {"role": "user", "content": "And its size?"}, {"role": "assistant", "content": "Small."}]
    assert processor.apply_chat_template(answered, add_generation_prompt=False) == EXPECTED_TWO_TURNS
    system = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi"}]
    assert processor.apply_chat_template(system) == EXPECTED_SYSTEM
    # the tokenizer carries it too (transformers' own apply_chat_template renders the same)
    assert processor.tokenizer.apply_chat_template(question, tokenize=False, add_generation_prompt=True) \
        == EXPECTED_PROMPT


def test_encode_example_labels_the_answers(tmp_path):
    tiny_moe_llava_checkpoint(tmp_path, "phi")
    processor = moezoo.load(tmp_path).processor
    conv = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w5 w6"}]},
            {"role": "assistant", "content": "w7 w8"}, {"role": "user", "content": "w9"},
            {"role": "assistant", "content": "w10"}]
    enc = processor.encode_example(conv, images=[Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), "blue")])
    rendered = processor.apply_chat_template(conv, add_generation_prompt=False)
    assert rendered.endswith("ASSISTANT: w10<|endoftext|>")
    assert enc["input_ids"][0].tolist() == processor(text=rendered, images=[Image.new("RGB", (8, 8))])[
        "input_ids"][0].tolist()
    tok = processor.tokenizer
    labelled = [i for i, label in zip(enc["input_ids"][0].tolist(), enc["labels"][0].tolist()) if label != -100]
    assert labelled == tok.convert_tokens_to_ids(["w7", "w8", "<|endoftext|>", "w10", "<|endoftext|>"])


# --- errors ---------------------------------------------------------------------------------------------------


def test_pickle_only_checkpoint_is_refused_with_how_to_convert(tmp_path):
    state = tiny_moe_llava_checkpoint(tmp_path, "stablelm")
    (tmp_path / "model.safetensors").unlink()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError) as err:
        moezoo.load(tmp_path)
    message = str(err.value)
    assert str(tmp_path / "pytorch_model.bin") in message
    assert "safetensors only" in message and "arbitrary code" in message
    assert "save_pretrained(out_dir, safe_serialization=True)" in message


@pytest.mark.parametrize("change,field", [
    ({"moe_layers_idx": (1, 3)}, r"moe\.moe_layers_idx=\[1, 3\] must hold layer indices in \[0, num_hidden_layers=3\)"),
    ({"moe": {"top_k_experts": 1}}, r"moe\.top_k_experts=1"),
    ({"moe": {"num_experts": [4, 2]}}, r"moe\.num_experts=\[4, 2\] differ between layers"),
    ({"moe": {"noisy_gate_policy": "RSample"}}, r"moe\.noisy_gate_policy='RSample'"),
    ({"image_projector_type": "linear"}, r"image_projector_type='linear'"),
    ({"mm_image_tower": "openai/some-other-tower", "mm_image_tower_config": None}, r"mm_image_tower='openai/some-"),
    ({"model_type": "moe_llava_qwen"}, r"model_type='moe_llava_qwen' is refused: its base is Qwen-1"),
    ({"mm_image_tower": "google/vit-base-patch16-224", "mm_image_tower_config": {"model_type": "vit"}},
     r"mm_image_tower_config has model_type 'vit'; MoE-LLaVA's image towers are CLIP \(clip_vision_model\) or "
     r"SigLIP \(siglip_vision_model\)"),
    ({"mm_image_tower": "google/siglip-tiny-test"},
     r"mm_image_tower='google/siglip-tiny-test' makes MoE-LLaVA's builder.py build a siglip_vision_model tower, "
     r"but mm_image_tower_config has model_type 'clip_vision_model'"),
])
def test_config_errors_name_the_file_and_field(tmp_path, change, field):
    tiny_moe_llava_checkpoint(tmp_path, "stablelm")
    moe_change = change.pop("moe", {})
    config = json.loads((tmp_path / "config.json").read_text())
    if "moe_layers_idx" in change:
        config["moe"]["moe_layers_idx"] = list(change.pop("moe_layers_idx"))
    config["moe"].update(moe_change)
    config.update(change)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/config\.json: {field}"):
        moezoo.load(tmp_path)


def test_unknown_model_type_names_the_file(tmp_path):
    tiny_moe_llava_checkpoint(tmp_path, "stablelm")
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "moe_llava_mistral"}))
    with pytest.raises(ValueError, match=rf"{tmp_path}/config\.json: unsupported model_type 'moe_llava_mistral'"):
        moezoo.load(tmp_path)


def test_every_config_json_default_is_what_moe_llava_assumes(tmp_path):
    """A config.json without the stablelm_epoch fields reads StableLMEpochConfig's defaults (rope_pct 0.25)."""
    config = tiny_moe_llava_config("stablelm")
    assert config.pop("rope_pct") == 0.5
    config["hidden_size"], config["num_attention_heads"] = 16, 1  # head_dim 16: a quarter rotates 4 channels
    (tmp_path / "config.json").write_text(json.dumps(config))
    from moezoo.convert.moe_llava import multimodal_fields

    assert multimodal_fields(config, source=tmp_path)["llm"].rotary_fraction == 0.25


# --- fixes where this path meets others -----------------------------------------------------------------------


@pytest.mark.parametrize("moe,field", [
    ({"router": "deepspeed_top2", "capacity_factor": 1.0}, "router='deepspeed_top2'"),
    ({"expert_bias": True}, "expert_bias=True"),
    ({"use_residual": True}, "use_residual=True"),
])
def test_hf_export_refuses_moe_weights_transformers_would_drop(tmp_path, moe, field):
    llm = LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=24,
                   moe=MoEConfig(dim=16, expert_dim=24, num_experts=4, top_k=2, norm_topk_prob=True, **moe))
    assert any(field in problem for problem in family_problems(llm, "mixtral"))
    with pytest.raises(ValueError, match=field.replace("(", r"\(").replace(")", r"\)")):
        MoEForCausalLM(llm).save_pretrained(tmp_path, format="hf")
    assert not (tmp_path / "config.json").exists()


def test_llava_with_a_phi_text_model_loads_without_a_head_bias(tmp_path):
    """transformers' LLaVA head has no bias, Phi's own head has one: the checkpoint decides."""
    ref = tiny_llava_checkpoint(tmp_path / "in", tower="clip", family="phi")
    model = moezoo.load(tmp_path / "in")
    assert not model.config.llm.lm_head_bias
    ids = torch.tensor([[5, 6] + [ref.config.image_token_index] * model.num_tokens["image"] + [7, 8]])
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = ref(input_ids=ids, pixel_values=pixels).logits
        torch.testing.assert_close(model(input_ids=ids, pixel_values=pixels).logits, expected, atol=1e-4, rtol=1e-4)
    model.save_pretrained(tmp_path / "out", format="hf")
    again = transformers.LlavaForConditionalGeneration.from_pretrained(tmp_path / "out").eval()
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, pixel_values=pixels).logits, expected, atol=1e-5, rtol=1e-5)


def test_phi_without_a_head_bias_exports_to_transformers_with_a_zero_bias(tmp_path):
    llm = LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=24, norm="layer", qk_norm="none",
                   attention_bias=True, rotary_fraction=0.5, parallel_block=True, mlp_activation="gelu_tanh",
                   mlp_bias=True, family="phi")
    model = MoEForCausalLM(llm).eval()
    model.save_pretrained(tmp_path, format="hf")
    theirs = transformers.PhiForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[1, 5, 9, 3]])
    with torch.no_grad():
        torch.testing.assert_close(theirs(ids).logits, model(input_ids=ids).logits, atol=1e-5, rtol=1e-5)


def test_a_released_checkpoint_names_its_hub_tower():
    """MoE-LLaVA's released config.json names the tower only (openai/clip-vit-large-patch14-336, whose Hub
    config.json has this vision_config); moezoo fills it in without a download."""
    from moezoo.convert.moe_llava import vision_config

    vision = vision_config({"mm_image_tower": "openai/clip-vit-large-patch14-336"})
    assert {k: vision[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                   "image_size", "patch_size", "hidden_act")} == {
        "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
        "image_size": 336, "patch_size": 14, "hidden_act": "quick_gelu"}
    assert vision["_name_or_path"] == "openai/clip-vit-large-patch14-336"


@pytest.mark.parametrize("with_json", [True, False], ids=["tokenizer_json", "remote_only"])
def test_a_remote_code_tokenizer_is_never_run(tmp_path, with_json):
    """MoE-LLaVA-StableLM ships Arcade100kTokenizer as Hub code (auto_map): moezoo reads its tokenizer.json, or
    loads the model without a processor and says why."""
    tiny_moe_llava_checkpoint(tmp_path, "stablelm")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "Arcade100kTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_arcade100k.Arcade100kTokenizer", None]}}))
    if with_json:
        model = moezoo.load(tmp_path)
        assert model.processor.apply_chat_template([{"role": "user", "content": "w5"}]).endswith("USER: w5 ASSISTANT:")
        assert model.processor(text="<image> w5", images=[Image.new("RGB", (8, 8))])["input_ids"].shape[1] == 17
    else:
        (tmp_path / "tokenizer.json").unlink()
        with pytest.warns(UserWarning, match="the tokenizer is remote code"):
            model = moezoo.load(tmp_path)
        assert model.processor is None
