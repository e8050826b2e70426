"""``moezoo.load`` of a LibMoE checkpoint dir (``model_type`` ``llava_phi``; :mod:`moezoo.convert.libmoe`).

The model is a :class:`~moezoo.models.multimodal.MultimodalMoEForCausalLM`: the Phi-3 / Phi-3.5 text model
(dense), a transformers SigLIP tower whose MLPs are :class:`~moezoo.moe.mlp_experts.MoEMLP` experts
(``clip_smoe``), S2 multi-scale features when ``scales`` has more than one scale, and a ``moe``
connector (``mlp_smoe``), every router with ``router_convention="libmoe"`` (``"libmoe_v1"`` for a checkpoint
in LibMoE v1.x's router layout: :func:`~moezoo.convert.libmoe.detect_convention`).

With tokenizer files the model gets a :class:`~moezoo.processing.processor.Processor`: the tokenizer plus
``<image>`` (LibMoE splices its images in at the id -200, which no tokenizer holds, so the added token takes
a free embedding row), the SigLIP image processor at the tower's size, and :func:`chat_template` for the
config's ``version``.

LibMoE's ``image_aspect_ratio="pad"`` pads an image to a square with the mean colour before the SigLIP
processor (``process_images`` in ``moe_model/mm_utils.py``); the importer carries it to the tower's config, so
moezoo's processor pads the same way. Where moezoo's inputs could differ from LibMoE's (not its model):
LibMoE's ``tokenizer_image_token`` tokenizes the text on each
side of ``<image>`` separately, moezoo the whole string with ``<image>`` as one special token (the same ids
for the templates' ``<image>\\n`` at a turn start with a Llama-style tokenizer; check yours).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import torch

from moezoo.checkpoint.files import read_safetensors
from moezoo.checkpoint.reader import build_model
from moezoo.convert.hf_config import lm_config_from_hf
from moezoo.convert.hf_import import checkpoint_dtype, read_hf_config
from moezoo.convert.hf_weights import hf_to_moezoo
from moezoo.convert.libmoe import (
    LIBMOE_FIELDS,
    MODEL_TYPE,
    PROJECTOR_PREFIX,
    SYSTEMS,
    TOWER_PREFIX,
    LibMoEFacts,
    check_router_layout,
    detect_convention,
    moelayer_to_moezoo,
    read_facts,
    split_libmoe,
    tower_config,
)
from moezoo.convert.llava import IMAGE_TOKEN, add_image_token
from moezoo.models.multimodal import (
    MULTIMODAL_SPEC,
    MultimodalConfig,
    MultimodalMoEForCausalLM,
)
from moezoo.models.spec import register_importer
from moezoo.processing.processor import Processor
from moezoo.processing.tokenizer import load_tokenizer

# Training arguments LibMoE writes into config.json that are not Phi-3's (dropped before the text config is read).
_TRAINING_ONLY = ("training", "local_rank", "tokenizer_padding_side", "tokenizer_model_max_length",
                  "tune_mm_mlp_adapter",
                  "freeze_mm_mlp_adapter", "mm_use_im_start_end", "mm_use_im_patch_token", "mm_projector_lr")


def chat_template(version: str) -> str:
    """LibMoE's Phi-3 (``"phi3"``) or Phi-3.5 (``"phi35"``) conversation template as Jinja.

    LibMoE keeps it in Python (``moe_model/conversation.py``: ``conv_phi_3_instruct`` / ``conv_phi_35_instruct``,
    rendered by ``Conversation.get_prompt`` with ``SeparatorStyle.PHI3`` / ``PHI35``): ``phi35`` starts with
    ``<|system|>\\nYou are a helpful assistant.<|end|>\\n``; each user turn is ``<|user|>\\n{text}<|end|>\\n``
    followed by ``<|assistant|>\\n``, each answer ``{text}<|end|>\\n``; the image goes first in its turn as
    ``<image>\\n``. Rendered with ``add_generation_prompt=True`` after a user turn, or after an answer, the
    string is the one ``get_prompt`` returns; a system message replaces LibMoE's fixed system text (its code
    has no way to set one per conversation).

    Example:
        >>> from jinja2 import Template
        >>> msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi?"}]}]
        >>> Template(chat_template("phi3")).render(messages=msgs, add_generation_prompt=True)
        '<|user|>\\n<image>\\nHi?<|end|>\\n<|assistant|>\\n'
    """
    if version not in SYSTEMS:
        raise ValueError(f"version={version!r} is not a LibMoE Phi-3 template; known: {sorted(SYSTEMS)}")
    default = SYSTEMS[version]
    system = ("{% set ns = namespace(system=" + (repr(default) if default is not None else "none") + ") %}"
              "{% if messages and messages[0]['role'] == 'system' %}{% set ns.system = messages[0]['content'] "
              "if messages[0]['content'] is string else messages[0]['content'] | map(attribute='text') | join('') %}"
              "{% endif %}{% if ns.system is not none %}<|system|>\n{{ ns.system }}<|end|>\n{% endif %}")
    body = ("{% for message in messages if message['role'] != 'system' %}"
            "{% if message['role'] == 'user' %}<|user|>\n{% else %}<|assistant|>\n{% endif %}"
            "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
            "{% for part in message['content'] if part['type'] == 'image' %}<image>\n{% endfor %}"
            "{% for part in message['content'] if part['type'] == 'text' %}{{ part['text'] }}{% endfor %}"
            "{% endif %}<|end|>\n{% endfor %}"
            "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
    return system + body


def multimodal_fields(cfg: dict[str, Any], facts: LibMoEFacts, source: Any,
                      generation: dict[str, Any] | None = None) -> dict[str, Any]:
    """The :class:`~moezoo.models.multimodal.MultimodalConfig` fields of a LibMoE ``config.json``.

    The tower keeps every SigLIP layer but the last (see :mod:`moezoo.convert.libmoe`); the loss coefficients
    are LibMoE's ``balance_loss_coef`` / ``router_z_loss_coef``, divided over the tower's MoE calls since LibMoE
    averages its tower's layers (and scales) where moezoo adds every site's loss.
    """
    text = {k: v for k, v in cfg.items() if k not in LIBMOE_FIELDS and k not in _TRAINING_ONLY}
    text["model_type"], text["architectures"] = "phi3", ["Phi3ForCausalLM"]
    try:
        llm = lm_config_from_hf(text, generation)
    except ValueError as err:
        raise ValueError(f"{source}: the Phi-3 text config: {err}") from None
    vision_config = tower_config(cfg, source)
    vision_config["num_hidden_layers"] -= 1  # LibMoE's features are the input of the last layer
    vision_config["vision_use_head"] = False
    balance, z = float(cfg.get("balance_loss_coef", 0.0)), float(cfg.get("router_z_loss_coef", 0.0))
    calls = vision_config["num_hidden_layers"] * sum(math.ceil(s) ** 2 for s in facts.scales) / len(facts.scales)
    vision = {"kind": "hf_vision", "vision_config": vision_config, "feature_layer": -1, "select_strategy": "full",
              "scales": facts.scales if len(facts.scales) > 1 else None,
              "image_aspect_ratio": cfg.get("image_aspect_ratio") or "square",
              "moe": facts.experts_fields(balance / calls, z / calls) if facts.clip_smoe else None}
    if facts.mlp_smoe:
        connector = {"kind": "moe", "activation": "gelu", **facts.experts_fields(balance, z)}
    else:
        connector = {"kind": "mlp2x_gelu", "bias": True, "activation": "gelu"}
    return {"llm": llm, "vision": vision, "image_connector": connector}


def libmoe_to_moezoo(state: dict[str, torch.Tensor], config: MultimodalConfig, facts: LibMoEFacts,
                     source: Any = "the checkpoint") -> dict[str, torch.Tensor]:
    """LibMoE's state dict in moezoo's names (without the keys that never reach the output: :func:`split_libmoe`).

    Raises:
        ValueError: a ``moelayer`` without its router's tensors (:func:`~moezoo.convert.libmoe.check_router_layout`).
    """
    num_layers = config.vision.vision_config["num_hidden_layers"] + 1
    llm, tower, projector = split_libmoe(state, num_layers)
    out = {f"llm.{k}": v for k, v in hf_to_moezoo(llm, config.llm).items()}
    layers: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in tower.items():
        head, sep, rest = key.partition(".moelayer.")
        if sep:
            layers.setdefault(int(head.split(".")[2]), {})[rest] = tensor
        else:
            out[f"vision.vision_tower.{key}"] = tensor
    for i, tensors in layers.items():
        check_router_layout(tensors, facts, f"{TOWER_PREFIX}encoder.layers.{i}.moelayer", source)
        for k, v in moelayer_to_moezoo(tensors, facts, ("fc1", "fc2")).items():
            out[f"vision.vision_tower.encoder.layers.{i}.mlp.{k}"] = v
    dim = config.vision.vision_config["hidden_size"]
    dtype = out["vision.vision_tower.embeddings.patch_embedding.weight"].dtype
    # SiglipVisionModel has a post-norm that LibMoE's tower lacks and the features never reach.
    out["vision.vision_tower.post_layernorm.weight"] = torch.ones(dim, dtype=dtype)
    out["vision.vision_tower.post_layernorm.bias"] = torch.zeros(dim, dtype=dtype)
    if facts.mlp_smoe:
        moe = {k[len("moelayer."):]: v for k, v in projector.items() if k.startswith("moelayer.")}
        check_router_layout(moe, facts, f"{PROJECTOR_PREFIX}moelayer", source)
        out.update({f"connectors.image.mlp.{k}": v for k, v in moelayer_to_moezoo(moe, facts, ("0", "2")).items()})
        # Anything else under the projector has no place in moezoo: kept as is, so the loader names it as unexpected.
        out.update({f"model.mm_projector.{k}": v for k, v in projector.items() if not k.startswith("moelayer.")})
    else:
        names = {"0.": "linear_1.", "2.": "linear_2."}
        for k, v in projector.items():
            out["connectors.image." + names.get(k[:2], "?") + k[2:]] = v
    return out


def import_libmoe(path: str | Path, device: str | torch.device = "cpu",
                  dtype: torch.dtype | str | None = None) -> MultimodalMoEForCausalLM:
    """Load a LibMoE ``llava_phi`` checkpoint dir (safetensors) as a :class:`MultimodalMoEForCausalLM`.

    Raises:
        ValueError: a config value moezoo cannot express (the file and field named: an unknown ``moe_name``,
            HyperRouter's dynamic top-k, ...), a SigLIP tower it does not know, missing or unexpected weights.

    Example:
        >>> import tempfile
        >>> from moezoo.convert.libmoe_testing import tiny_libmoe_checkpoint
        >>> path = tempfile.mkdtemp()
        >>> _ = tiny_libmoe_checkpoint(path, "xmoe", scales=(1, 3))
        >>> model = import_libmoe(path)
        >>> tower_moe, projector = model.config.vision.moe, model.config.image_connector
        >>> tower_moe.router, tower_moe.router_convention, projector.kind, model.config.vision.scales
        ('cosine', 'libmoe', 'moe', [1.0, 3.0])
    """
    path = Path(path)
    cfg, generation = read_hf_config(path)
    source = path / "config.json"
    facts = read_facts(cfg, source)
    weights = path / "model.safetensors"
    where = weights if weights.is_file() else path
    state = read_safetensors(path)
    # LibMoE v1.x or v2.0: told apart by the routers' keys (see moezoo.convert.libmoe).
    facts = dataclasses.replace(facts, convention=detect_convention(state, facts, where))
    fields = multimodal_fields(cfg, facts, source, generation)
    tokenizer = load_tokenizer(path, required=False)
    vocab = fields["llm"].vocab_size
    fields["image_token_id"] = add_image_token(tokenizer, vocab, path) if tokenizer is not None else vocab - 1
    config = MultimodalConfig(**fields)
    state = libmoe_to_moezoo(state, config, facts, where)
    model = build_model(config, state, str(path), device, checkpoint_dtype(cfg, dtype))
    if tokenizer is not None:
        template = chat_template(facts.version)
        tokenizer.chat_template = template
        model.processor = Processor(tokenizer, dict(model.num_tokens), image=model.preprocess_specs()["image"],
                                    placeholders={"image": IMAGE_TOKEN}, chat_template=template)
    return model


register_importer(MULTIMODAL_SPEC, MODEL_TYPE, import_libmoe, "LlavaPhiForCausalLM (LibMoE)")
