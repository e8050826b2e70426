"""Vision encoder on a transformers CLIP / SigLIP tower, with LLaVA's feature selection.

Follows transformers' ``LlavaModel.get_image_features`` (LLaVA-1.5, Liu et al. 2023, arXiv 2310.03744)
up to, not including, the projector: ``vision_feature_layer`` picks a hidden state of the tower
(``hidden_states[0]`` is the embedding output, ``hidden_states[i]`` the output of layer ``i``; a
list picks several, concatenated on the width), and ``vision_feature_select_strategy="default"``
drops the first token of each (CLIP's CLS; for SigLIP, which has none, it drops the first patch
exactly as transformers does), ``"full"`` keeps all.

The tower is the module transformers' ``LlavaForConditionalGeneration`` builds
(``AutoModel.from_config(vision_config)``), held as ``vision_tower``, so its weights carry
LLaVA's in-memory names (``vision_tower.embeddings.*``, ``vision_tower.encoder.layers.*``; transformers 5
no longer nests them under ``vision_model``). Unlike ``output_hidden_states=True``, the forward
stops after the deepest selected layer: the later layers and the post-norm cost nothing (and
get no gradient). Tests check the result equals transformers' LLaVA features exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, ClassVar

import torch

from moezoo.models.encoders.base import ENCODERS, Encoder
from moezoo.models.encoders.moe import EncoderMoEConfig, MLPSite, activation_name
from moezoo.utils.checks import require
from moezoo.utils.config import Config, to_plain


@dataclass(frozen=True)
class _Family:
    model_class: str  # the transformers class AutoModel builds for the config
    pre_norm: str | None  # the norm between the embeddings and the first layer, if any
    image_processor: str  # the class AutoImageProcessor picks for the family
    default_processor: Callable[[int], dict]  # image size -> the processor kwargs its checkpoints use


def _resize_and_crop(size: int) -> dict:  # CLIP / LLaVA-1.5: shortest edge, then a centre crop
    return {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size}}


def _squash(size: int) -> dict:  # SigLIP: resize to the square, no crop
    return {"size": {"height": size, "width": size}}


FAMILIES = {
    "clip_vision_model": _Family("CLIPVisionModel", "pre_layrnorm", "CLIPImageProcessor", _resize_and_crop),
    "siglip_vision_model": _Family("SiglipVisionModel", None, "SiglipImageProcessor", _squash),
}
SELECT_STRATEGIES = ("default", "full")
ASPECT_RATIOS = ("square", "pad")  # LLaVA's image_aspect_ratio values moezoo reads ("anyres" is LLaVA-NeXT's tiling)


class HFVisionEncoder(Encoder):
    """LLaVA's image features ``(N, T, hidden_size * len(layers))`` from a CLIP / SigLIP tower.

    Attributes:
        vision_tower: the transformers ``CLIPVisionModel`` / ``SiglipVisionModel``.
        layers: the selected hidden-state indices, made non-negative.
    """

    def __init__(self, config: HFVisionEncoderConfig):
        super().__init__()
        import transformers

        self.config = config
        self.family = FAMILIES[config.vision_config["model_type"]]
        settings = {k: v for k, v in config.vision_config.items() if k != "model_type"}
        tf_config = transformers.AutoConfig.for_model(config.vision_config["model_type"], **settings)
        num_states = tf_config.num_hidden_layers + 1  # the embeddings, then each layer's output
        requested = [config.feature_layer] if isinstance(config.feature_layer, int) else list(config.feature_layer)
        require(config, "feature_layer", all(-num_states <= i < num_states for i in requested),
                f"must index the {num_states} hidden states (embeddings + {num_states - 1} layers), "
                f"in [{-num_states}, {num_states - 1}]")
        self.layers = [i % num_states for i in requested]
        self.image_processor_config = config.image_processor
        if config.pretrained is None:
            self.vision_tower = transformers.AutoModel.from_config(tf_config)  # as LlavaModel builds it
        else:
            require(config, "pretrained", os.path.isdir(config.pretrained), "is not a directory")
            self.vision_tower = _load_pretrained(getattr(transformers, self.family.model_class), tf_config,
                                                 config.pretrained)
            path = os.path.join(config.pretrained, "preprocessor_config.json")
            if self.image_processor_config is None and os.path.isfile(path):
                with open(path) as f:
                    self.image_processor_config = json.load(f)
        self.image_size = tf_config.image_size
        self.num_channels = tf_config.num_channels
        drop_first = config.select_strategy == "default"
        self.num_tokens = self.vision_tower.embeddings.num_positions - int(drop_first)
        self.out_dim = tf_config.hidden_size * len(self.layers) * len(config.scales or [1])
        if config.moe is not None:  # upcycled from the pretrained MLPs, else random experts a checkpoint fills
            self.sparsify(config.moe, upcycle=config.pretrained is not None)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``pixel_values (N, C, H, W)`` -> ``(N, T, D)``; ``condition`` is ignored."""
        expected = (self.num_channels, self.image_size, self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected pixel_values of shape (N, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        if self.config.scales:
            return self._multi_scale(x)
        return self._encode(x)

    def _multi_scale(self, x: torch.Tensor) -> torch.Tensor:
        """S2 multi-scale features (Shi et al. 2024, arXiv 2403.13043), as LibMoE's ``SiglipVisionTower.forward``
        computes them: scale ``s > 1`` resizes the image bicubically to ``s`` times its side, cuts it into
        ``ceil(s)**2`` tiles (row-major), encodes each tile, stitches their feature maps back together and
        area-pools them to the base grid; the scales' features are concatenated on the width."""
        import torch.nn.functional as F

        side = x.shape[-1]
        base = self._encode(x)
        grid = math.isqrt(base.shape[1])
        outputs = [base]
        for scale in self.config.scales[1:]:
            size = int(side * scale)
            n = math.ceil(size / side)
            big = F.interpolate(x.float(), size=size, mode="bicubic").to(x.dtype)
            h = w = size // n
            tiles = torch.cat([big[:, :, i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(n) for j in range(n)])
            feats = self._encode(tiles)  # (n*n*N, T, D)
            t = math.isqrt(feats.shape[1])
            maps = feats.transpose(1, 2).reshape(feats.shape[0], feats.shape[2], t, t)
            b = x.shape[0]
            maps = torch.cat([torch.cat([maps[(i * n + j) * b:(i * n + j + 1) * b] for j in range(n)], dim=-1)
                              for i in range(n)], dim=-2)
            maps = F.interpolate(maps.float(), size=grid, mode="area").to(x.dtype)
            outputs.append(maps.flatten(2).transpose(1, 2))
        return torch.cat(outputs, dim=-1)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        tower = self.vision_tower
        hidden_NTD = tower.embeddings(x)
        if self.family.pre_norm is not None:
            hidden_NTD = getattr(tower, self.family.pre_norm)(hidden_NTD)
        states = {0: hidden_NTD}
        # Only the layers up to the deepest selected one: exactly what the full forward gives there.
        for index, layer in enumerate(tower.encoder.layers[: max(self.layers)], start=1):
            hidden_NTD = layer(hidden_NTD, None)
            if index in self.layers:
                states[index] = hidden_NTD
        start = 1 if self.config.select_strategy == "default" else 0
        selected = [states[i][:, start:] for i in self.layers]
        return selected[0] if len(selected) == 1 else torch.cat(selected, dim=-1)

    def unused_parameters(self) -> set[str]:
        """The layers after the deepest selected one, the post-norm and SigLIP's pooling head."""
        used = {f"vision_tower.{name}" for name, _ in self.vision_tower.embeddings.named_parameters(prefix="embeddings")}
        if self.family.pre_norm is not None:
            used |= {f"vision_tower.{n}" for n, _ in getattr(self.vision_tower, self.family.pre_norm)
                     .named_parameters(prefix=self.family.pre_norm)}
        for i in range(max(self.layers)):
            used |= {f"vision_tower.encoder.layers.{i}.{n}" for n, _ in self.vision_tower.encoder.layers[i]
                     .named_parameters()}
        return {name for name, _ in self.named_parameters()} - used

    def mlp_sites(self) -> list[MLPSite]:
        """The MLPs of the layers the features come from (the later layers never run)."""
        act = activation_name(self.vision_tower.config.hidden_act)
        return [MLPSite(layer, "mlp", layer.mlp.fc1, layer.mlp.fc2, act)
                for layer in self.vision_tower.encoder.layers[: max(self.layers)]]

    def preprocess_spec(self) -> dict[str, Any]:
        """``{"kind": "hf_image", "class": ..., "config": {...}}``: the tower's transformers image processor."""
        import transformers

        settings = dict(self.image_processor_config or {})
        name = settings.pop("image_processor_type", None) or self.family.image_processor
        if not settings:  # what the family's checkpoints ship, at this tower's size
            settings = self.family.default_processor(self.image_size)
            settings = json.loads(getattr(transformers, name)(**settings).to_json_string())  # JSON-ready
            settings.pop("image_processor_type", None)
        spec = {"kind": "hf_image", "class": name, "config": to_plain(settings)}
        if self.config.image_aspect_ratio == "pad":
            spec["pad_to_square"] = True
        return spec


@ENCODERS.register(HFVisionEncoder)
@dataclass
class HFVisionEncoderConfig(Config):
    """A transformers CLIP / SigLIP vision tower with LLaVA's feature selection.

    Args:
        vision_config: a ``CLIPVisionConfig`` / ``SiglipVisionConfig`` as a dict, with its
            ``model_type`` (``"clip_vision_model"`` / ``"siglip_vision_model"``); a LLaVA
            checkpoint's ``vision_config``.
        feature_layer: LLaVA's ``vision_feature_layer``: a hidden-state index or a list of them.
        select_strategy: LLaVA's ``vision_feature_select_strategy``: ``"default"`` drops the first
            token, ``"full"`` keeps all.
        pretrained: a local transformers directory (``config.json`` + safetensors) of a
            ``CLIPVisionModel`` / ``SiglipVisionModel`` or the whole CLIP / SigLIP model.
        image_processor: the transformers image-processor dict (``preprocessor_config.json``,
            with ``image_processor_type``); default: the family's processor at the tower's size,
            or the pretrained directory's ``preprocessor_config.json`` when it has one.
        moe: turn the tower's block MLPs into routed experts (an
            :class:`~moezoo.models.encoders.moe.EncoderMoEConfig` or its dict); with ``pretrained``
            they are upcycled from the pretrained MLPs.
        scales: S2 multi-scale features (LibMoE's ``scales``, e.g. ``[1, 3]``): the first must be 1;
            each further scale adds the tower's features of the image enlarged that many times,
            tiled and pooled back to the base grid (the width grows ``len(scales)`` times).
            ``None``: one scale.
        image_aspect_ratio: LLaVA's ``image_aspect_ratio``: ``"square"`` hands images to the image processor
            as they are; ``"pad"`` first pads each to a square in the processor's mean colour (LLaVA-1.5's,
            MoE-LLaVA's and LibMoE's setting), so a wide picture keeps its edges.

    Example:
        >>> vision = {"model_type": "clip_vision_model", "hidden_size": 32, "num_hidden_layers": 2}
        >>> HFVisionEncoderConfig(vision, feature_layer=[-2, -1]).to_dict()["feature_layer"]
        [-2, -1]
        >>> HFVisionEncoderConfig({"model_type": "vit"})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: HFVisionEncoderConfig.vision_config={'model_type': 'vit'} must have model_type in [...]
    """

    kind: ClassVar[str] = "hf_vision"
    vision_config: dict
    feature_layer: int | list[int] = -2
    select_strategy: str = "default"
    pretrained: str | None = None
    image_processor: dict | None = None
    moe: EncoderMoEConfig | None = None
    scales: list[float] | None = None
    image_aspect_ratio: str = "square"

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):
            self.moe = EncoderMoEConfig.from_dict(self.moe)
        require(self, "vision_config", isinstance(self.vision_config, dict)
                and self.vision_config.get("model_type") in FAMILIES, f"must have model_type in {sorted(FAMILIES)}")
        layers = [self.feature_layer] if isinstance(self.feature_layer, int) else self.feature_layer
        require(self, "feature_layer", isinstance(layers, (list, tuple)) and len(layers) > 0
                and all(isinstance(i, int) and not isinstance(i, bool) for i in layers),
                "must be an int or a list of ints")
        require(self, "select_strategy", self.select_strategy in SELECT_STRATEGIES,
                f"must be one of {SELECT_STRATEGIES}")
        require(self, "pretrained", self.pretrained is None or (isinstance(self.pretrained, str)
                and bool(self.pretrained)), "must be a local transformers model directory or None")
        require(self, "scales", self.scales is None or (isinstance(self.scales, (list, tuple)) and len(self.scales) > 0
                and self.scales[0] == 1 and all(s >= 1 for s in self.scales)),
                "must be None or a list of scales >= 1 starting with 1 (e.g. [1, 3])")
        require(self, "image_processor", self.image_processor is None or isinstance(self.image_processor, dict),
                "must be a transformers image-processor dict or None")
        require(self, "image_aspect_ratio", self.image_aspect_ratio in ASPECT_RATIOS, f"must be one of {ASPECT_RATIOS}")


def _load_pretrained(model_class: type, tf_config: Any, path: str) -> torch.nn.Module:
    """``model_class`` with the weights of a local safetensors directory; missing or mis-shaped weights are an error."""
    try:
        # In the default dtype, like a tower built from its config (transformers 5 would keep the file's).
        model, info = model_class.from_pretrained(path, config=tf_config, use_safetensors=True, local_files_only=True,
                                                  dtype=torch.get_default_dtype(), output_loading_info=True)
    except RuntimeError as err:  # transformers refuses weights of the wrong shape
        raise ValueError(f"HFVisionEncoderConfig.pretrained={path!r} does not fit the vision_config: {err}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ValueError(f"HFVisionEncoderConfig.pretrained={path!r} lacks {len(missing)} weights the vision_config "
                         f"needs, e.g. {missing[:3]}")
    return model.train()  # from_pretrained returns eval mode; the parent module decides
