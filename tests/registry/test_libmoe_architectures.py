"""LibMoE's Phi-3.5 + SigLIP router family (:mod:`moezoo.registry.libmoe`), built on the meta device.

Each count is checked against transformers' own ``Phi3ForCausalLM`` and ``SiglipVisionModel`` built from the
upstream configs, with the MoE parts counted from LibMoE v1.1's shapes (``moe_model/model/moe/*.py`` at 766ddae).
"""

from __future__ import annotations

import pytest
import torch
import transformers

import moezoo
from moezoo.cli.models import describe
from moezoo.registry.libmoe import PHI3_5_MINI_INSTRUCT, libmoe_config_json

E, K = 4, 2  # sft.sh: --num_experts 4 --num_selected 2
# The router each architecture names: (LibMoE moe_name, moezoo router, router_convention).
ARCHS = {
    "libmoe_phi3_5_siglip_smoe": ("smoe", "softmax", "libmoe"),
    "libmoe_phi3_5_siglip_cosine": ("smoe_cosinegating", "cosine", "libmoe_v1"),
    "libmoe_phi3_5_siglip_hyper": ("hyperrouter", "hyper", "libmoe"),
    "libmoe_phi3_5_siglip_perturbed": ("smoe_perturbed", "perturbed_cosine", "libmoe_v1"),
}
# https://huggingface.co/google/siglip-so400m-patch14-224/blob/main/config.json (vision_config)
SO400M_224 = {"hidden_size": 1152, "intermediate_size": 4304, "num_hidden_layers": 27, "num_attention_heads": 16,
              "image_size": 224, "patch_size": 14, "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6}
TOWER_DIM, LLM_DIM = SO400M_224["hidden_size"], PHI3_5_MINI_INSTRUCT["hidden_size"]
PROJECTOR_IN = TOWER_DIM * 2  # S2 scales (1, 3): the two scales' features side by side (MLPMoE's mm_channels)


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.fixture(scope="module")
def models():
    return {name: moezoo.create_model(name, device="meta") for name in ARCHS}


@pytest.fixture(scope="module")
def reference():
    """transformers' Phi-3.5-mini and SigLIP-so400m/224 (with LibMoE's 27 layers), on the meta device."""
    text = {k: v for k, v in PHI3_5_MINI_INSTRUCT.items() if k not in ("model_type", "architectures")}
    with torch.device("meta"):
        phi3 = transformers.Phi3ForCausalLM(transformers.Phi3Config(**text))
        siglip = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**SO400M_224))
    return phi3, siglip


def router_params(router: str, dim: int) -> int:
    """The router parameters LibMoE v1.1 trains in one ``moelayer`` of width ``dim``."""
    if router == "softmax":  # moe.py MoeLayer: gate = nn.Linear(D, E, bias=False)
        return E * dim
    if router in ("cosine", "perturbed_cosine"):  # moe_cosinegating.py / moe_perturbed.py: nn.Linear(D, E, bias=True)
        return E * dim + E
    # hyperrouter.py: hyper_embedding (1, D) is trained; the hypernetwork is frozen (LLaVACallback), a buffer here
    return dim


def hypernetwork_size(dim: int) -> int:
    """hyperrouter.py's frozen ``hypernet``: Linear(D, D // 4) -> ReLU -> Linear(D // 4, E * (D + 1))."""
    hidden = dim // 4
    return dim * hidden + hidden + hidden * E * (dim + 1) + E * (dim + 1)


def expected_total(reference, router: str) -> int:
    """Phi3ForCausalLM + SigLIP (26 layers, MLPs as E experts + a router, post-norm, no head) + the MoE projector."""
    phi3, siglip = reference
    layers = siglip.encoder.layers
    kept = SO400M_224["num_hidden_layers"] - 1  # LibMoE's features are the input of the last layer
    mlp = count(layers[0].mlp)
    tower = (count(siglip.embeddings) + count(siglip.post_layernorm)
             + kept * (count(layers[0]) - mlp + E * mlp + router_params(router, TOWER_DIM)))
    # multimodal_projector/builder.py MLPMoE: each expert Linear(2304, 3072) -> GELU -> Linear(3072, 3072)
    expert = PROJECTOR_IN * LLM_DIM + LLM_DIM + LLM_DIM * LLM_DIM + LLM_DIM
    projector = E * expert + router_params(router, PROJECTOR_IN)
    return count(phi3) + tower + projector


def test_the_llm_is_dense_phi3_5_mini(models, reference):
    phi3, _ = reference
    assert count(phi3) == 3_821_079_552  # Phi-3.5-mini-instruct's size
    for model in models.values():
        llm = model.config.llm
        assert llm.moe is None
        assert (llm.num_layers, llm.dim, llm.num_heads, llm.num_kv_heads, llm.ffn_dim, llm.vocab_size) == \
            (32, 3072, 32, 32, 8192, 32064)
        assert llm.max_position_embeddings == 131072 and llm.sliding_window == 262144
        assert llm.eos_token_id == [32007, 32001, 32000]  # <|end|> ends an answer (generation_config.json)
        assert llm.rope_scaling["rope_type"] == "longrope"
        assert llm.rope_scaling["original_max_position_embeddings"] == 4096
        assert len(llm.rope_scaling["long_factor"]) == len(llm.rope_scaling["short_factor"]) == 48  # head_dim / 2
        assert count(model.llm) == count(phi3)


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_tower_and_projector_are_libmoe_v1_1_moe(models, name):
    moe_name, router, convention = ARCHS[name]
    model = models[name]
    vision, projector = model.config.vision, model.config.image_connector
    # so400m/224, one layer short (LibMoE's select layer -2 is the last layer's input), S2 scales (1, 3)
    assert vision.vision_config == {"model_type": "siglip_vision_model", **SO400M_224, "num_channels": 3,
                                    "num_hidden_layers": 26, "vision_use_head": False}
    assert vision.scales == [1.0, 3.0]
    for moe in (vision.moe, projector):
        assert (moe.num_experts, moe.top_k, moe.router, moe.router_convention) == (E, K, router, convention)
        assert moe.num_shared_experts == 0 and moe.norm_topk_prob
    assert projector.kind == "moe"
    assert model.config.image_token_id == 32011  # the row after Phi-3.5's 32,011 tokenizer tokens
    experts = [n for n, p in model.named_parameters() if n.endswith("mlp.fc1_weight")]
    assert len(experts) == 27  # 26 tower layers + the projector
    tower_fc1 = model.get_parameter("vision.vision_tower.encoder.layers.0.mlp.fc1_weight")
    assert tuple(tower_fc1.shape) == (E, 4304, TOWER_DIM)
    assert tuple(model.get_parameter("connectors.image.mlp.fc1_weight").shape) == (E, LLM_DIM, PROJECTOR_IN)
    assert libmoe_config_json(moe_name)["moe_name"] == moe_name


def test_image_tokens_per_image(models):
    """S2 merges the 3x3 tiles of the 672-px image back to the 224-px grid: (224 / 14)^2 = 256 tokens per image."""
    for model in models.values():
        assert model.num_tokens == {"image": 256}


@pytest.mark.parametrize("name", sorted(ARCHS))
def test_total_parameters_are_the_components(models, reference, name):
    router = ARCHS[name][1]
    total = expected_total(reference, router)
    assert count(models[name]) == total
    assert describe(name)["parameters"] == total


def test_routers_differ_only_in_router_parameters(models):
    def shapes(model, routers: bool) -> dict:
        tensors = [*model.named_parameters(), *model.named_buffers()]
        return {n: tuple(t.shape) for n, t in tensors if (".router." in n) == routers}

    base = shapes(models["libmoe_phi3_5_siglip_smoe"], routers=False)
    for name, model in models.items():
        assert shapes(model, routers=False) == base, name
    hyper = models["libmoe_phi3_5_siglip_hyper"]
    frozen = sum(b.numel() for n, b in hyper.named_buffers() if ".router." in n)
    assert frozen == 26 * hypernetwork_size(TOWER_DIM) + hypernetwork_size(PROJECTOR_IN)
    cosine = shapes(models["libmoe_phi3_5_siglip_cosine"], routers=True)
    assert cosine == shapes(models["libmoe_phi3_5_siglip_perturbed"], routers=True)
    assert cosine["connectors.image.mlp.router.weight"] == (E, PROJECTOR_IN)
    assert cosine["connectors.image.mlp.router.bias"] == (E,)
