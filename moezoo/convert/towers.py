"""The Hub vision towers that released checkpoints name, with their configs, so that none needs a download.

MoE-LLaVA's ``mm_image_tower`` and LibMoE's ``mm_vision_tower`` name a tower on the Hub, and their code reads
its config from there (``CLIPVisionConfig`` / ``SiglipVisionConfig.from_pretrained(name)``). Each dict here is
the ``vision_config`` of that tower's own ``config.json`` (linked), with the transformers ``model_type`` of the
vision model, as :class:`~moezoo.models.encoders.hf_vision.HFVisionEncoderConfig` takes it. Importers, exporters
and the registry read them from here: one definition per tower.

Example:
    >>> HUB_TOWERS["google/siglip-so400m-patch14-384"]["image_size"], SIGLIP_SO400M_384["model_type"]
    (384, 'siglip_vision_model')
    >>> (384 // 14) ** 2  # SigLIP has no CLS token: 729 positions
    729
"""

from __future__ import annotations

# https://huggingface.co/openai/clip-vit-large-patch14-336/blob/main/config.json (vision_config); the -224
# tower, https://huggingface.co/openai/clip-vit-large-patch14/blob/main/config.json, differs only in image_size.
_CLIP_L14 = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
             "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14, "hidden_act": "quick_gelu",
             "layer_norm_eps": 1e-5, "projection_dim": 768, "num_channels": 3}
CLIP_L14_336 = dict(_CLIP_L14, image_size=336)
CLIP_L14_224 = dict(_CLIP_L14, image_size=224)
# https://huggingface.co/google/siglip-so400m-patch14-384/blob/main/config.json (vision_config); the -224 tower,
# https://huggingface.co/google/siglip-so400m-patch14-224/blob/main/config.json, differs only in image_size.
_SIGLIP_SO400M = {"model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
                  "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14,
                  "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-6, "num_channels": 3}
SIGLIP_SO400M_384 = dict(_SIGLIP_SO400M, image_size=384)
SIGLIP_SO400M_224 = dict(_SIGLIP_SO400M, image_size=224)

HUB_TOWERS = {
    "openai/clip-vit-large-patch14-336": CLIP_L14_336,
    "openai/clip-vit-large-patch14": CLIP_L14_224,
    "google/siglip-so400m-patch14-384": SIGLIP_SO400M_384,
    "google/siglip-so400m-patch14-224": SIGLIP_SO400M_224,
}


def towers_of(*model_types: str) -> dict[str, dict]:
    """The :data:`HUB_TOWERS` whose ``model_type`` is one of ``model_types`` (copies).

    Example:
        >>> sorted(towers_of("siglip_vision_model"))
        ['google/siglip-so400m-patch14-224', 'google/siglip-so400m-patch14-384']
    """
    return {name: dict(tower) for name, tower in HUB_TOWERS.items() if tower["model_type"] in model_types}


def hub_tower_name(vision_config: dict, towers: dict[str, dict] = HUB_TOWERS) -> str | None:
    """The Hub tower of ``towers`` whose config ``vision_config`` holds (its other keys ignored), or ``None``.

    Example:
        >>> hub_tower_name({**SIGLIP_SO400M_224, "_name_or_path": ""})
        'google/siglip-so400m-patch14-224'
    """
    return next((name for name, known in towers.items()
                 if all(vision_config.get(k) == v for k, v in known.items())), None)
