"""LibMoE's released format: tiny checkpoints in LibMoE's key layout, loaded with ``moezoo.load``.

Every MoE layer is checked against a forward written here from LibMoE's code (github.com/Fsoft-AIC/LibMoE,
v2.0, ``moe_model/model/moe/*.py``; the file and function of each equation are named beside it), and the whole
model against transformers' ``SiglipVisionModel`` + ``Phi3ForCausalLM`` composed with those references, as
LibMoE's ``LlavaPhiForCausalLM`` composes them. LibMoE v1.x's router layouts (commit 766ddae) are checked the
same way against :func:`libmoe_v1_moelayer`, written from v1's code.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from jinja2 import Template
from safetensors.torch import load_file
from torch import nn

import moezoo
from moezoo.convert.libmoe import KNOWN_TOWERS, tower_config
from moezoo.convert.libmoe_import import chat_template
from moezoo.convert.libmoe_testing import IMAGE_SIZE, tiny_libmoe_checkpoint
from moezoo.moe.recording import SiteRecorder

ROUTERS = ["smoe", "xmoe", "smoe_cosinegating", "smoe_sigmoidgating", "smoe_perturbed", "hyperrouter", "smoe_share"]
V1_ROUTERS = ["smoe_cosinegating", "smoe_perturbed", "smoe_sigmoidgating"]  # v1.x's own router layouts
TOWER_ACT = nn.GELU(approximate="tanh")  # SigLIP's gelu_pytorch_tanh (siglip_smoe.py SiglipMLP)
PROJECTOR_ACT = nn.GELU()  # multimodal_projector/builder.py MLPMoE: nn.Sequential(Linear, nn.GELU(), Linear)


def libmoe_v1_moelayer(x: torch.Tensor, t: dict[str, torch.Tensor], moe_name: str, k: int,
                       names: tuple[str, str], act: nn.Module) -> torch.Tensor:
    """LibMoE v1.x's ``moelayer(x)`` (commit 766ddae, ``moe_model/model/moe/``), ``x (B, N, D)``, from the tensors
    ``t`` below ``moelayer.`` (``gate`` is ``nn.Linear(D, E, bias=True)`` in all three routers' ``__init__``)."""
    w, b = t["gate.weight"], t["gate.bias"]
    if moe_name in ("smoe_cosinegating", "smoe_perturbed"):
        if moe_name == "smoe_cosinegating":
            # moe_cosinegating.py MoECosingGating.forward: (x @ W.T) / (|x| * |W_e|.T), no temperature
            logits = (x @ w.T) / (torch.norm(x, dim=-1, keepdim=True) * torch.norm(w, dim=1, keepdim=True).T)
        else:
            # moe_perturbed.py MoEPerturbedCosingGating.forward: (x @ W.T) / ((|x| + theta) * (|W_e|.T + theta)),
            # theta=0.1 (the __init__ default; MLPMoE / SiglipEncoderMoELayer pass none)
            theta = 0.1
            logits = (x @ w.T) / ((torch.norm(x, dim=-1, keepdim=True) + theta)
                                  * (torch.norm(w, dim=1, keepdim=True).T + theta))
        # both forwards: gate_softmax = F.softmax(gate_logits, dim=-1, dtype=torch.float).to(x.dtype)
        probs = F.softmax(logits, dim=-1, dtype=torch.float).to(x.dtype)
        # both _keepTopk(gate_softmax, self.gate.bias): x + beta, torch.topk(k, dim=2), softmax of the kept values
        weights, idx = torch.topk(probs + b, k=k, dim=2)
        weights = torch.softmax(weights, dim=2)
    elif moe_name == "smoe_sigmoidgating":
        # moe_sigmoidgating.py SMoESigmoidGating.forward: gate_logits = self.sigmoid(self.gate(x)) (biased gate)
        gate_logits = torch.sigmoid(F.linear(x, w, b))
        # moe.py MoeLayer.topk_expert: softmax(gate_logits, dtype=float32), torch.topk(gate_softmax, num_selected)
        weights, idx = torch.topk(F.softmax(gate_logits, dim=-1, dtype=torch.float32), k)
        weights = weights / torch.sum(weights, dim=-1, keepdim=True)  # SMoESigmoidGating.forward
    else:
        raise AssertionError(moe_name)
    def expert(e: int) -> torch.Tensor:  # SiglipMLP / MLPMoE's Sequential, copied per expert (MoeLayer.__init__)
        h = act(F.linear(x, t[f"experts.{e}.{names[0]}.weight"], t[f"experts.{e}.{names[0]}.bias"]))
        return F.linear(h, t[f"experts.{e}.{names[1]}.weight"], t[f"experts.{e}.{names[1]}.bias"])

    # moe.py MoeLayer.compute_moe: results[b, n] += weights[b, n, slot] * experts[i](x[b, n])
    outs = torch.stack([expert(e) for e in range(w.shape[0])], dim=2)  # (B, N, E, D)
    return (outs.gather(2, idx[..., None].expand(*idx.shape, outs.shape[-1])) * weights[..., None]).sum(2)


def libmoe_moelayer(x: torch.Tensor, t: dict[str, torch.Tensor], moe_name: str, num_experts: int, k: int,
                    names: tuple[str, str], act: nn.Module, layout: str = "v2") -> torch.Tensor:
    """LibMoE's ``moelayer(x)`` at eval, ``x (B, N, D)``, from the tensors ``t`` below ``moelayer.``
    (``layout="v1"``: :func:`libmoe_v1_moelayer`)."""
    if layout == "v1":
        return libmoe_v1_moelayer(x, t, moe_name, k, names, act)

    def expert(e: int, h: torch.Tensor) -> torch.Tensor:  # SiglipMLP / the projector's Sequential
        h = F.linear(h, t[f"experts.{e}.{names[0]}.weight"], t[f"experts.{e}.{names[0]}.bias"])
        return F.linear(act(h), t[f"experts.{e}.{names[1]}.weight"], t[f"experts.{e}.{names[1]}.bias"])

    routed, kk = (num_experts - 1, k - 1) if moe_name == "smoe_share" else (num_experts, k)
    if moe_name in ("smoe", "smoe_share"):
        # moe.py MoeLayer.topk_expert: softmax(gate(x), dtype=float32), torch.topk;
        # smoe.py SMoeLayer.forward / shard_smoe.py MoEShareLayer.forward: weights / weights.sum(-1)
        probs = F.softmax(F.linear(x, t["gate.weight"]), dim=-1, dtype=torch.float32)
        w, idx = torch.topk(probs, kk)
        w = w / w.sum(-1, keepdim=True)
    elif moe_name == "smoe_sigmoidgating":
        # smoe_sigmoidgating.py SMoESigmoidGating.topk_expert: torch.topk(sigmoid(gate(x))); forward: w / w.sum(-1)
        w, idx = torch.topk(torch.sigmoid(F.linear(x, t["gate.weight"])), kk)
        w = w / w.sum(-1, keepdim=True)
    elif moe_name in ("xmoe", "smoe_cosinegating", "smoe_perturbed"):
        theta = 0.1 if moe_name == "smoe_perturbed" else None
        e = t["expert_embeddings"]
        z = F.linear(x, t["inp_reduction.weight"])  # XMOE.forward: reduced_inp = self.inp_reduction(x)
        if theta is None:
            e = e * (1.5 / e.norm(p=2.0, dim=-1, keepdim=True))  # XMOE.forward: expert_embeddings.mul_(1.5 / norm)
            z = F.normalize(z.float(), p=2.0, dim=-1, eps=1e-4)  # XMOE._cosine
        else:
            # smoe_perturbed.py MoEPerturbedCosingGating.forward: mul_(1.5 / (norm + theta)); _cosine: z / (|z| + theta)
            e = e * (1.5 / (e.norm(p=2.0, dim=-1, keepdim=True) + theta))
            z = z.float() / (z.norm(p=2, dim=-1, keepdim=True) + theta)
        logits = z @ e.float().T
        probs = F.softmax(logits / 0.3, dim=-1, dtype=torch.float)  # self.temperature = 0.3
        w, idx = torch.topk(probs, kk, dim=2)  # XMOE._keepTopk: topk, then softmax of the kept probabilities
        w = torch.softmax(w, dim=2)
    elif moe_name == "hyperrouter":
        # hyperrouter.py HyperRouter.recreate_gate: hypernet(hyper_embedding)[0].reshape(E, -1) -> gate weight | bias
        h = torch.relu(F.linear(t["hyper_embedding"], t["hypernet.0.weight"], t["hypernet.0.bias"]))
        flat = F.linear(h, t["hypernet.2.weight"], t["hypernet.2.bias"])[0].reshape(num_experts, -1)
        logits = F.linear(x, flat[:, :-1], flat[:, -1])
        w, idx = torch.topk(logits, k=kk, dim=2)  # HyperRouter.forward (eval): topk of the logits, softmaxed
        w = F.softmax(w, dim=-1, dtype=torch.float)
    else:
        raise AssertionError(moe_name)
    # moe.py MoeLayer.compute_moe: results[b, n] += weights[b, n, slot] * experts[i](x[b, n])
    outs = torch.stack([expert(i, x) for i in range(routed)], dim=2)  # (B, N, E, D)
    y = (outs.gather(2, idx[..., None].expand(*idx.shape, outs.shape[-1])) * w[..., None]).sum(2)
    if moe_name == "smoe_share":  # MoEShareLayer.forward: output_shared * 0.5 + output_selected * 0.5
        y = expert(routed, x) * 0.5 + y * 0.5
    return y


def moelayer_tensors(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


class RefMoE(nn.Module):
    """A SigLIP layer's MLP replaced by the LibMoE reference (siglip_smoe.py SiglipEncoderMoELayer)."""

    def __init__(self, tensors, moe_name, num_experts, k, layout="v2"):
        super().__init__()
        self.args = (tensors, moe_name, num_experts, k, ("fc1", "fc2"), TOWER_ACT, layout)

    def forward(self, x):
        return libmoe_moelayer(x, *self.args)


def reference_features(ckpt: dict, pixel_values: torch.Tensor, scales=(1,), layout="v2") -> torch.Tensor:
    """LibMoE's image features: SiglipVisionTower.forward (siglip_encoder.py) then MLPMoE (projector builder.py)."""
    cfg, state, tower = ckpt["config"], ckpt["state"], ckpt["siglip"]
    n, k = cfg["num_experts"], cfg["num_selected"]
    for i, layer in enumerate(tower.encoder.layers):
        layer.mlp = RefMoE(moelayer_tensors(state, f"model.vision_tower.vision_model.encoder.layers.{i}.moelayer."),
                           cfg["moe_name"], n, k, layout)

    def encode(x):  # SiglipSMoEVisionTransformer.forward: encoder_outputs[-1], the input of the last layer
        return tower(pixel_values=x, output_hidden_states=True).hidden_states[-2]

    with torch.no_grad():
        feats = [encode(pixel_values)]
        side = pixel_values.shape[-1]
        for s in scales[1:]:  # SiglipVisionTower.forward: split_chessboard / merge_chessboard, bicubic up, area down
            size, m = int(side * s), math.ceil(s)
            big = F.interpolate(pixel_values.float(), size=size, mode="bicubic")
            h = size // m
            tiles = torch.cat([big[:, :, i * h:(i + 1) * h, j * h:(j + 1) * h] for i in range(m) for j in range(m)])
            out = encode(tiles)
            g = int(out.shape[1] ** 0.5)
            out = out.transpose(1, 2).reshape(out.shape[0], -1, g, g)
            b = pixel_values.shape[0]
            out = torch.cat([torch.cat([out[(i * m + j) * b:(i * m + j + 1) * b] for j in range(m)], dim=-1)
                             for i in range(m)], dim=-2)
            out = F.interpolate(out, size=int(feats[0].shape[1] ** 0.5), mode="area")
            feats.append(out.flatten(2).transpose(1, 2))
        feats = torch.cat(feats, dim=-1)
        return libmoe_moelayer(feats, moelayer_tensors(state, "model.mm_projector.moelayer."), cfg["moe_name"], n, k,
                               ("0", "2"), PROJECTOR_ACT, layout)


def reference_logits(ckpt, input_ids, features, image_token_id, prompt_len=None):
    """LlavaMetaForCausalLM.prepare_inputs_labels_for_multimodal: the image features replace the image tokens
    of the prompt (its first ``prompt_len`` ids; a generated id is always a text token)."""
    phi3 = ckpt["phi3"]
    with torch.no_grad():
        embeds = phi3.model.embed_tokens(input_ids)
        spliced = input_ids == image_token_id
        spliced[:, prompt_len or input_ids.shape[1]:] = False
        embeds[spliced] = features.reshape(-1, features.shape[-1])
        return phi3(inputs_embeds=embeds).logits


def _inputs(image_token_id: int, num_tokens: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[1, 5, 9] + [image_token_id] * num_tokens + [7, 8, 11]])
    return ids, torch.randn(1, 3, IMAGE_SIZE, IMAGE_SIZE, generator=gen)


@pytest.mark.parametrize("moe_name", ROUTERS)
def test_each_moe_layer_equals_libmoe_forward(tmp_path, moe_name):
    ckpt = tiny_libmoe_checkpoint(tmp_path, moe_name)
    model = moezoo.load(tmp_path)
    cfg, state = ckpt["config"], ckpt["state"]
    n, k = cfg["num_experts"], cfg["num_selected"]
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    for i, layer in enumerate(model.vision.vision_tower.encoder.layers):
        t = moelayer_tensors(state, f"model.vision_tower.vision_model.encoder.layers.{i}.moelayer.")
        expected = libmoe_moelayer(x, t, moe_name, n, k, ("fc1", "fc2"), TOWER_ACT)
        torch.testing.assert_close(layer.mlp(x), expected, atol=1e-5, rtol=0)
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(2))
    t = moelayer_tensors(state, "model.mm_projector.moelayer.")
    expected = libmoe_moelayer(x, t, moe_name, n, k, ("0", "2"), PROJECTOR_ACT)
    torch.testing.assert_close(model.connectors["image"](x), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("moe_name,scales", [("smoe", (1,)), ("xmoe", (1,)), ("hyperrouter", (1,)),
                                             ("smoe_share", (1, 3)), ("smoe_perturbed", (1, 2))])
def test_whole_model_equals_transformers_composition(tmp_path, moe_name, scales):
    ckpt = tiny_libmoe_checkpoint(tmp_path, moe_name, scales=scales)
    model = moezoo.load(tmp_path)
    image_token_id = model.config.image_token_id
    ids, pixels = _inputs(image_token_id, model.num_tokens["image"])
    features = reference_features(ckpt, pixels, scales)
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels).logits
    expected = reference_logits(ckpt, ids, features, image_token_id)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
    # Greedy decoding: the reference re-runs the whole prefix (no cache) with the spliced image each step.
    out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=6, do_sample=False)
    ref = ids
    for _ in range(6):
        nxt = reference_logits(ckpt, ref, features, image_token_id, ids.shape[1])[:, -1].argmax(-1, keepdim=True)
        ref = torch.cat([ref, nxt], dim=1)
    assert out.tolist() == ref.tolist()


def test_routing_is_recorded_and_tower_uses_libmoe_convention(tmp_path):
    tiny_libmoe_checkpoint(tmp_path, "smoe_share")
    model = moezoo.load(tmp_path)
    mlp = model.vision.vision_tower.encoder.layers[0].mlp
    assert (mlp.config.router_convention, mlp.config.num_experts, mlp.config.top_k, mlp.config.num_shared_experts) == (
        "libmoe", 3, 1, 1)
    with SiteRecorder(model.connectors["image"]) as recorder:
        model.connectors["image"](torch.randn(1, 4, 16))
    (record,) = recorder.records
    assert torch.allclose(record.output.routing.weight, torch.ones(4))  # the one routed expert: weight 1


@pytest.mark.parametrize("moe_name", ROUTERS)
def test_export_round_trip_is_exact(tmp_path, moe_name):
    ckpt = tiny_libmoe_checkpoint(tmp_path / "in", moe_name, scales=(1, 3) if moe_name == "smoe" else (1,))
    model = moezoo.load(tmp_path / "in")
    model.save_pretrained(tmp_path / "out", format="libmoe")
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    last = "model.vision_tower.vision_model.encoder.layers.2."  # never runs in LibMoE: not written back
    expected = {k: v for k, v in ckpt["state"].items() if not k.startswith(last)
                and not (moe_name in ("xmoe", "smoe_cosinegating", "smoe_perturbed") and k.endswith("gate.weight"))}
    assert sorted(written) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(written[key], tensor), key
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    src = ckpt["config"]
    for field in ("model_type", "num_experts", "num_selected", "mlp_smoe", "clip_smoe", "scales", "mm_hidden_size",
                  "balance_loss_coef", "router_z_loss_coef", "hidden_size", "num_hidden_layers", "vocab_size"):
        assert cfg[field] == pytest.approx(src[field]), field
    assert cfg["moe_name"] == {"smoe_cosinegating": "xmoe"}.get(moe_name, moe_name)
    assert cfg["vision_config"]["num_hidden_layers"] == src["vision_config"]["num_hidden_layers"]
    again = moezoo.load(tmp_path / "out")
    ids, pixels = _inputs(model.config.image_token_id, model.num_tokens["image"])
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, pixel_values=pixels).logits,
                           model(input_ids=ids, pixel_values=pixels).logits)


def test_dense_projector_and_tower(tmp_path):
    ckpt = tiny_libmoe_checkpoint(tmp_path / "in", "smoe", clip_smoe=False, mlp_smoe=False)
    model = moezoo.load(tmp_path / "in")
    assert model.config.image_connector.kind == "mlp2x_gelu" and model.config.vision.moe is None
    model.save_pretrained(tmp_path / "out", format="libmoe")
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    for key, tensor in written.items():
        assert torch.equal(tensor, ckpt["state"][key]), key


@pytest.mark.parametrize("fields,match", [
    ({"moe_name": "smoe_plus_plus"}, r"config\.json: moe_name='smoe_plus_plus' is not a LibMoE router .*'smoe_share'"),
    ({"moe_name": "hyperrouter", "topk_max": 3, "topk_min": 1},
     r"config\.json: topk_max=3, topk_min=1 with num_selected=2: HyperRouter's dynamic top-k"),
    ({"moe_name": "hyperrouter", "topk_max": 2, "topk_min": 0}, r"config\.json: topk_max=2, topk_min=0"),
    ({"scales": [2, 3]}, r"config\.json: scales=\[2, 3\] must be whole numbers >= 1 starting with 1"),
    ({"mm_projector_type": "moe", "mlp_smoe": False}, r"config\.json: mlp_smoe=False must be True"),
    ({"mm_patch_merge_type": "spatial_unpad"}, r"config\.json: mm_patch_merge_type='spatial_unpad'"),
])
def test_refusals_name_the_file_and_field(tmp_path, fields, match):
    tiny_libmoe_checkpoint(tmp_path, "smoe")
    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, **fields}))
    with pytest.raises(ValueError, match=match):
        moezoo.load(tmp_path)


def test_hyperrouter_schedule_ending_at_num_selected_loads_with_that_k(tmp_path):
    """LibMoE v1.1 writes train.py's defaults (topk_min 1, topk_max 2) into every config; its hyperrouter release
    grew k from 1 to 2 and evaluates with num_selected 2: it loads, routing with k = 2 at every site."""
    tiny_libmoe_checkpoint(tmp_path, "hyperrouter", topk_max=2, topk_min=1)
    config = moezoo.load(tmp_path).config
    assert config.vision.moe.top_k == config.image_connector.top_k == 2
    assert config.vision.moe.router == config.image_connector.router == "hyper"


def test_known_siglip_towers():
    vision = tower_config({"mm_vision_tower": "google/siglip-so400m-patch14-224"}, "c.json")
    assert (vision["hidden_size"], vision["num_hidden_layers"], vision["image_size"]) == (1152, 27, 224)
    assert set(KNOWN_TOWERS) >= {"google/siglip-so400m-patch14-224", "google/siglip-so400m-patch14-384"}
    with pytest.raises(ValueError, match=r"c\.json: mm_vision_tower='google/other' is not a SigLIP tower"):
        tower_config({"mm_vision_tower": "google/other"}, "c.json")


# Strings written down from moe_model/conversation.py: Conversation.get_prompt with conv_phi_35_instruct
# (SeparatorStyle.PHI35, system "You are a helpful assistant.", sep = sep2 = "<|end|>\n") and conv_phi_3_instruct
# (SeparatorStyle.PHI3, no system). A user turn is "<|user|>\n" + message + sep + "<|assistant|>\n", an answer
# message + sep2; the image of the first message becomes "<image>\n" + text.
PHI35_TWO_TURNS = ("<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\n<image>\nWhat is this?<|end|>\n"
                   "<|assistant|>\nA cat.<|end|>\n<|user|>\nWhat colour?<|end|>\n<|assistant|>\nBlack.<|end|>\n")
PHI35_PROMPT = ("<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\n<image>\nWhat is this?<|end|>\n"
                "<|assistant|>\n")
PHI3_PROMPT = "<|user|>\n<image>\nWhat is this?<|end|>\n<|assistant|>\n"
CONVERSATION = [
    {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "A cat."}]},
    {"role": "user", "content": "What colour?"},
    {"role": "assistant", "content": "Black."},
]


def test_chat_template_renders_libmoe_prompts():
    phi35, phi3 = Template(chat_template("phi35")), Template(chat_template("phi3"))
    assert phi35.render(messages=CONVERSATION, add_generation_prompt=False) == PHI35_TWO_TURNS
    assert phi35.render(messages=CONVERSATION[:1], add_generation_prompt=True) == PHI35_PROMPT
    assert phi3.render(messages=CONVERSATION[:1], add_generation_prompt=True) == PHI3_PROMPT


def test_processor_applies_the_template_and_encodes_examples(tmp_path):
    from moezoo.convert.testing import tiny_tokenizer

    tiny_libmoe_checkpoint(tmp_path, "smoe")
    tokenizer = tiny_tokenizer(40)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]})
    tokenizer.save_pretrained(str(tmp_path))
    model = moezoo.load(tmp_path)
    processor = model.processor
    assert processor.apply_chat_template(CONVERSATION[:1], add_generation_prompt=True) == PHI35_PROMPT
    from PIL import Image

    image = Image.new("RGB", (20, 20), (200, 10, 10))
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "w7 w8"}]},
                    {"role": "assistant", "content": "w5 w6"}]
    enc = processor.encode_example(conversation, images=[image])
    ids = enc["input_ids"].reshape(-1).tolist()
    assert ids.count(model.config.image_token_id) == model.num_tokens["image"]
    assert enc["pixel_values"].shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE)
    trained = [i for i, label in zip(ids, enc["labels"].reshape(-1).tolist()) if label != -100]
    assert trained == tokenizer.encode("w5 w6<|end|>\n", add_special_tokens=False)  # the answer and its <|end|>


def test_processor_pads_wide_images_as_libmoe_does(tmp_path):
    """image_aspect_ratio "pad" (the releases', sft.sh): process_images in moe_model/mm_utils.py centres the image on
    a square of int(255 * image_mean) (``expand2square``) before SigLIP's processor; moezoo's pixels are the same."""
    import transformers
    from PIL import Image

    from moezoo.processing.image import build_image_processor

    tiny_libmoe_checkpoint(tmp_path, "smoe")
    model = moezoo.load(tmp_path)
    image = Image.fromarray((torch.rand(IMAGE_SIZE, 2 * IMAGE_SIZE + 3, 3) * 255).byte().numpy())
    siglip = transformers.SiglipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    side = image.width
    square = Image.new("RGB", (side, side), tuple(int(x * 255) for x in siglip.image_mean))
    square.paste(image, (0, (side - image.height) // 2))
    pixels = build_image_processor(model.preprocess_specs()["image"])([image])  # what the processor runs
    torch.testing.assert_close(pixels, siglip(square, return_tensors="pt")["pixel_values"], rtol=0, atol=0)


def _hub_cache_snapshot(cache, repo_id: str, commit: str, files: dict[str, bytes]):
    """``files`` laid out as huggingface_hub's cache does (blobs named by their ETag, relative links, refs/main)."""
    import hashlib
    import os

    repo = cache / ("models--" + repo_id.replace("/", "--"))
    for rel, data in files.items():
        name = hashlib.sha256(data).hexdigest() if rel.endswith(".safetensors") else \
            hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        blob = repo / "blobs" / name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = repo / "snapshots" / commit / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)


def test_hub_entry_resolves_a_router_subfolder_offline(tmp_path, monkeypatch):
    """LibMoE's hub repos keep one sub-folder per router; an entry's ``subfolder`` names it."""
    from moezoo.registry import PretrainedCfg, PretrainedFile, register_pretrained
    from moezoo.registry.pretrained import unregister_pretrained

    monkeypatch.setenv("MOEZOO_CACHE", str(tmp_path / "moezoo-cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    files = {}
    for router in ("smoe", "xmoe"):
        tiny_libmoe_checkpoint(tmp_path / router, router, seed=3)
        files.update({f"sft/{router}/{p.name}": p.read_bytes() for p in (tmp_path / router).iterdir()})
    repo, commit = "Fsoft-AIC/Phi3.5-Siglip-MoE", "c" * 40
    _hub_cache_snapshot(tmp_path / "hf-cache", repo, commit, files)
    cfg = register_pretrained(PretrainedCfg(
        "mm_tiny_clip.libmoe_xmoe_test", "hf", repo, revision=commit, subfolder="sft/xmoe",
        files=(PretrainedFile("config.json"), PretrainedFile("model.safetensors")), modalities=("image", "text")))
    try:
        model = moezoo.load(cfg.name)
    finally:
        unregister_pretrained(cfg.name)
    assert model.config.vision.moe.router == "cosine"
    direct = moezoo.load(tmp_path / "xmoe")
    ids, pixels = _inputs(model.config.image_token_id, model.num_tokens["image"])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, pixel_values=pixels).logits,
                           direct(input_ids=ids, pixel_values=pixels).logits)


@pytest.mark.parametrize("router,shared,libmoe_name", [("softmax", 0, "smoe"), ("cosine", 0, "xmoe"),
                                                       ("hyper", 0, "hyperrouter"), ("softmax", 1, "smoe_share")])
def test_upcycling_a_dense_phi3_siglip_llava_into_libmoe_layout(tmp_path, router, shared, libmoe_name):
    """LibMoE's sparse upcycling (``sparse_upcycling=True``: every expert a copy of the dense MLP) of the tower MLPs
    and projector is exact at init, and the result is a LibMoE checkpoint that loads back with the same logits."""
    from moezoo.convert.llava_testing import tiny_llava_checkpoint
    from moezoo.models.multimodal.upcycle import upcycle_multimodal

    tiny_llava_checkpoint(tmp_path / "dense", tower="siglip", family="phi3", vision_feature_select_strategy="full")
    dense = moezoo.load(tmp_path / "dense")
    moe = upcycle_multimodal(dense, num_experts=4, top_k=2, router=router, targets=("connector", "vision"),
                             router_convention="libmoe", num_shared_experts=shared).eval()
    ids = torch.tensor([[1, 5] + [dense.config.image_token_id] * dense.num_tokens["image"] + [7, 9]])
    pixels = torch.randn(1, 3, *dense.vision.vision_tower.config.image_size * torch.ones(2, dtype=torch.long))
    with torch.no_grad():
        expected = dense(input_ids=ids, pixel_values=pixels).logits
        torch.testing.assert_close(moe(input_ids=ids, pixel_values=pixels).logits, expected, atol=1e-5, rtol=0)
    moe.save_pretrained(tmp_path / "libmoe", format="libmoe")
    cfg = json.loads((tmp_path / "libmoe" / "config.json").read_text())
    assert (cfg["model_type"], cfg["moe_name"], cfg["num_experts"], cfg["num_selected"]) == (
        "llava_phi", libmoe_name, 4 + shared, 2 + shared)
    assert any(".moelayer.experts.3.fc1.weight" in k for k in load_file(str(tmp_path / "libmoe" / "model.safetensors")))
    back = moezoo.load(tmp_path / "libmoe")
    with torch.no_grad():
        torch.testing.assert_close(back(input_ids=ids, pixel_values=pixels).logits, expected, atol=1e-5, rtol=0)


def _v1_layer_checks(model, state, moe_name, k):
    """Every MoE layer of ``model`` against :func:`libmoe_v1_moelayer` on random inputs, to 1e-5."""
    x = torch.randn(2, 5, 16, generator=torch.Generator().manual_seed(1))
    for i, layer in enumerate(model.vision.vision_tower.encoder.layers):
        t = moelayer_tensors(state, f"model.vision_tower.vision_model.encoder.layers.{i}.moelayer.")
        torch.testing.assert_close(layer.mlp(x), libmoe_v1_moelayer(x, t, moe_name, k, ("fc1", "fc2"), TOWER_ACT),
                                   atol=1e-5, rtol=0)
    t = moelayer_tensors(state, "model.mm_projector.moelayer.")
    torch.testing.assert_close(model.connectors["image"](x),
                               libmoe_v1_moelayer(x, t, moe_name, k, ("0", "2"), PROJECTOR_ACT), atol=1e-5, rtol=0)


@pytest.mark.parametrize("moe_name", V1_ROUTERS)
def test_libmoe_v1_moe_layer_equals_v1_forward(tmp_path, moe_name):
    ckpt = tiny_libmoe_checkpoint(tmp_path, moe_name, layout="v1")
    model = moezoo.load(tmp_path)
    for site in (model.config.vision.moe, model.config.image_connector):
        assert (site.router_convention, site.num_experts, site.top_k) == ("libmoe_v1", 4, 2)
    _v1_layer_checks(model, ckpt["state"], moe_name, ckpt["config"]["num_selected"])


@pytest.mark.parametrize("moe_name", V1_ROUTERS)
def test_libmoe_v1_top1_and_bias_moves_the_selection(tmp_path, moe_name):
    """k=1 (v1 still softmaxes / renormalises the one kept value: weight 1) with a bias large enough to decide."""
    ckpt = tiny_libmoe_checkpoint(tmp_path, moe_name, num_selected=1, layout="v1")
    model = moezoo.load(tmp_path)
    _v1_layer_checks(model, ckpt["state"], moe_name, 1)
    router = model.connectors["image"].mlp.router
    with torch.no_grad():
        router.bias.copy_(torch.tensor([0.0, 0.0, 50.0, 0.0]))
    with SiteRecorder(model.connectors["image"]) as recorder:
        model.connectors["image"](torch.randn(1, 6, 16))
    (record,) = recorder.records
    assert record.output.routing.expert_idx.tolist() == [2] * 6
    assert torch.allclose(record.output.routing.weight, torch.ones(6))


@pytest.mark.parametrize("moe_name,scales", [("smoe_cosinegating", (1,)), ("smoe_perturbed", (1, 2)),
                                             ("smoe_sigmoidgating", (1,))])
def test_libmoe_v1_whole_model_equals_transformers_composition(tmp_path, moe_name, scales):
    ckpt = tiny_libmoe_checkpoint(tmp_path, moe_name, scales=scales, layout="v1")
    model = moezoo.load(tmp_path)
    image_token_id = model.config.image_token_id
    ids, pixels = _inputs(image_token_id, model.num_tokens["image"])
    features = reference_features(ckpt, pixels, scales, layout="v1")
    with torch.no_grad():
        logits = model(input_ids=ids, pixel_values=pixels).logits
    torch.testing.assert_close(logits, reference_logits(ckpt, ids, features, image_token_id), atol=1e-5, rtol=0)


@pytest.mark.parametrize("moe_name", V1_ROUTERS)
def test_libmoe_v1_export_round_trip_is_exact(tmp_path, moe_name):
    ckpt = tiny_libmoe_checkpoint(tmp_path / "in", moe_name, layout="v1")
    model = moezoo.load(tmp_path / "in")
    model.save_pretrained(tmp_path / "out", format="libmoe")
    written = load_file(str(tmp_path / "out" / "model.safetensors"))
    last = "model.vision_tower.vision_model.encoder.layers.2."  # never runs in LibMoE: not written back
    expected = {k: v for k, v in ckpt["state"].items() if not k.startswith(last)}
    assert sorted(written) == sorted(expected)  # gate.weight and gate.bias, no inp_reduction / expert_embeddings
    for key, tensor in expected.items():
        assert torch.equal(written[key], tensor), key
    assert json.loads((tmp_path / "out" / "config.json").read_text())["moe_name"] == moe_name
    again = moezoo.load(tmp_path / "out")
    assert again.config.image_connector.router_convention == "libmoe_v1"
    ids, pixels = _inputs(model.config.image_token_id, model.num_tokens["image"])
    with torch.no_grad():
        assert torch.equal(again(input_ids=ids, pixel_values=pixels).logits,
                           model(input_ids=ids, pixel_values=pixels).logits)


def test_libmoe_v1_cosine_layout_loads(tmp_path):
    """A v2.0 checkpoint rewritten by hand into v1.x's smoe_cosinegating layout (cos(x, gate.weight) + gate.bias)
    loads as v1's router."""
    from safetensors.torch import save_file

    ckpt = tiny_libmoe_checkpoint(tmp_path, "smoe_cosinegating")
    state = {k: v for k, v in ckpt["state"].items() if not k.endswith(("inp_reduction.weight", "expert_embeddings"))}
    for key in [k for k in state if k.endswith("moelayer.gate.weight")]:
        state[key.replace("gate.weight", "gate.bias")] = torch.linspace(-0.2, 0.2, state[key].shape[0])
    save_file(state, str(tmp_path / "model.safetensors"))
    model = moezoo.load(tmp_path)
    assert model.config.vision.moe.router_convention == "libmoe_v1"
    _v1_layer_checks(model, state, "smoe_cosinegating", 2)


def test_libmoe_v1_sigmoid_layout_loads(tmp_path):
    from safetensors.torch import save_file

    ckpt = tiny_libmoe_checkpoint(tmp_path, "smoe_sigmoidgating")
    state = dict(ckpt["state"])
    for key in [k for k in state if k.endswith("moelayer.gate.weight")]:
        state[key.replace("gate.weight", "gate.bias")] = torch.linspace(-0.5, 0.5, state[key].shape[0])
    save_file(state, str(tmp_path / "model.safetensors"))
    model = moezoo.load(tmp_path)
    assert model.config.image_connector.router_convention == "libmoe_v1"
    _v1_layer_checks(model, state, "smoe_sigmoidgating", 2)


def test_mixed_v1_and_v2_layouts_are_refused(tmp_path):
    from safetensors.torch import save_file

    ckpt = tiny_libmoe_checkpoint(tmp_path, "smoe_sigmoidgating")
    state = dict(ckpt["state"])
    state["model.mm_projector.moelayer.gate.bias"] = torch.zeros(4)  # the projector in v1's layout, the tower in v2's
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.mm_projector\.moelayer has LibMoE v1's router layout .* but "
                                         r"model\.vision_tower\.vision_model\.encoder\.layers\.0\.moelayer "
                                         r"has v2\.0's"):
        moezoo.load(tmp_path)


def test_xmoe_with_v1_keys_is_refused_with_the_reason(tmp_path):
    """v1.x had no xmoe: its layout under that name is a broken checkpoint, named as such."""
    from safetensors.torch import save_file

    ckpt = tiny_libmoe_checkpoint(tmp_path, "xmoe")
    state = {k: v for k, v in ckpt["state"].items() if not k.endswith(("inp_reduction.weight", "expert_embeddings"))}
    for key in [k for k in state if k.endswith("moelayer.gate.weight")]:
        state[key.replace("gate.weight", "gate.bias")] = torch.zeros(state[key].shape[0])
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors: moe_name='xmoe' but "
                                         r"model\.vision_tower\.vision_model\.encoder\.layers\.0\.moelayer lacks "
                                         r"\['inp_reduction\.weight', 'expert_embeddings'\].*"
                                         r"LibMoE v1's cosine layout.*v1 has no 'xmoe'"):
        moezoo.load(tmp_path)
