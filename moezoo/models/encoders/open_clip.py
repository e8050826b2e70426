"""Vision encoder on an open_clip image tower: patch tokens from a chosen transformer block.

LLaVA (Liu et al. 2023, arXiv 2304.08485; LLaVA-1.5, arXiv 2310.03744) feeds the language
model the patch tokens of CLIP's penultimate block, CLS dropped; that is the default here.
Only the image tower (``model.visual``) is kept, under its open_clip name, so its weights are
open_clip's ``visual.*`` keys. Features come from open_clip's ``forward_intermediates``, which
both tower types offer:

* open_clip's own ``VisionTransformer`` (CLIP, OpenCLIP, EVA-style configs): CLS token, ``ln_pre``;
* ``TimmModel``, a timm trunk (the SigLIP / SigLIP2 configs, e.g. ``ViT-B-16-SigLIP`` builds timm's
  ``vit_base_patch16_siglip_224``): no CLS token, so ``keep_cls`` keeps nothing extra.

The blocks after the chosen one are pruned at build time (no compute, no parameters that would
never get a gradient). ModifiedResNet towers (``RN50``...) have no blocks to choose from and
are not supported. Preprocessing is the model's own ``preprocess_cfg`` (open_clip 3.x keeps it
on the tower), applied by open_clip's eval transform.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from moezoo.models.encoders.base import ENCODERS, Encoder
from moezoo.models.encoders.moe import EncoderMoEConfig, MLPSite, find_mlps
from moezoo.models.encoders.timm import probe_output_shape, timm_mlp_sites
from moezoo.utils.checks import require
from moezoo.utils.config import Config, to_plain

# The text tower of a `model_cfg` without one: open_clip builds a whole CLIP, the encoder keeps
# only `visual`, so the text side only has to be valid and small.
PLACEHOLDER_TEXT_CFG = {"context_length": 2, "vocab_size": 2, "width": 8, "heads": 1, "layers": 1}


class OpenClipEncoder(Encoder):
    """Patch tokens ``(N, T, width)`` of one block of an open_clip image tower.

    Attributes:
        visual: the open_clip image tower (``VisionTransformer`` or ``TimmModel``), pruned.
        image_size: the ``(H, W)`` input it takes.
    """

    def __init__(self, config: OpenClipEncoderConfig):
        super().__init__()
        import open_clip
        from open_clip.timm_model import TimmModel
        from open_clip.transformer import VisionTransformer

        self.config = config
        clip = _create_clip(config)
        self.visual = clip.visual
        self.preprocess_cfg = to_plain(dict(open_clip.get_model_preprocess_cfg(clip)))
        del clip  # the text tower
        index = [config.feature_layer]
        try:
            if isinstance(self.visual, VisionTransformer):
                self.visual.prune_intermediate_layers(index, prune_norm=True, prune_head=True)
                self.visual.attn_pool = self.visual.attn_pool_contrastive = None  # pooling heads, unused
                self._extra = True  # open_clip's ViT always has a class token
            elif isinstance(self.visual, TimmModel):
                # open_clip builds the timm trunk at the timm model's own size and sizes the preprocessing
                # by vision_cfg's image_size; make the trunk take that size (a no-op when they agree).
                self.visual.set_input_size(self.visual.image_size)
                self.visual.trunk.prune_intermediate_layers(index, prune_norm=True, prune_head=True)
                self.visual.head = nn.Identity()
                self._extra = getattr(self.visual.trunk, "num_prefix_tokens", 0) > 0
            else:
                raise ValueError(f"OpenClipEncoderConfig.model_name={config.model_name!r} builds a "
                                 f"{type(self.visual).__name__} tower; supported: open_clip ViTs and timm towers")
        except AssertionError as err:  # timm-style index checks are asserts
            raise ValueError(f"OpenClipEncoderConfig.feature_layer={config.feature_layer} is out of range: "
                             f"{err}") from None
        self._extra = self._extra and config.keep_cls
        self.image_size = _pair(self.visual.image_size)
        self.num_tokens, self.out_dim = probe_output_shape(self, (1, 3, *self.image_size))
        if config.moe is not None:  # upcycled from the pretrained MLPs, else random experts a checkpoint fills
            self.sparsify(config.moe, upcycle=config.pretrained is not None)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``pixel_values (N, 3, H, W)`` -> ``(N, T, width)``; ``condition`` is ignored."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, *self.image_size):
            raise ValueError(f"expected pixel_values of shape (N, 3, {self.image_size[0]}, {self.image_size[1]}), "
                             f"got {tuple(x.shape)}")
        # After pruning the chosen block is the last one.
        out = self.visual.forward_intermediates(x, indices=1, stop_early=True, intermediates_only=True,
                                                output_extra_tokens=self._extra)
        (features,) = out["image_intermediates"]
        tokens_NTC = features.flatten(2).transpose(1, 2) if features.ndim == 4 else features
        if self._extra:
            tokens_NTC = torch.cat([out["image_intermediates_prefix"][0], tokens_NTC], dim=1)
        return tokens_NTC

    def mlp_sites(self) -> list[MLPSite]:
        """The block MLPs of the (pruned) tower: open_clip's ``c_fc -> gelu -> c_proj``, or the timm trunk's."""
        if hasattr(self.visual, "trunk"):
            return timm_mlp_sites(self.visual.trunk)

        def is_mlp(m: nn.Module) -> bool:
            return isinstance(m, nn.Sequential) and hasattr(m, "c_fc") and isinstance(
                getattr(m, "ln", nn.Identity()), nn.Identity)

        return find_mlps(self.visual, is_mlp, lambda m: (m.c_fc, m.c_proj, m.gelu))

    def preprocess_spec(self) -> dict[str, Any]:
        """open_clip's ``PreprocessCfg`` fields: ``{"kind": "open_clip", "size", "mean", "std", ...}``."""
        keys = ("size", "mean", "std", "interpolation", "resize_mode", "fill_color")
        return {"kind": "open_clip", **{k: self.preprocess_cfg[k] for k in keys if k in self.preprocess_cfg}}


@ENCODERS.register(OpenClipEncoder)
@dataclass
class OpenClipEncoderConfig(Config):
    """An open_clip image tower.

    Args:
        model_name: an open_clip model name (``open_clip.list_models()``), or ``"hf-hub:org/repo"`` /
            ``"local-dir:/path"`` (open_clip's config + weights schemas). Ignored with ``model_cfg``.
        pretrained: an open_clip pretrained tag for ``model_name`` (a download) or a local weights
            file (an open_clip checkpoint; with ``model_cfg``, its ``visual.*`` entries are loaded).
        feature_layer: the block whose output tokens are taken; -2 is the penultimate (LLaVA).
        keep_cls: keep the class token in front of the patch tokens (CLIP towers; SigLIP has none).
        model_cfg: a whole open_clip model config (``embed_dim``, ``vision_cfg``, optional ``text_cfg``)
            for a custom tower, instead of a registered name.
        preprocess_cfg: overrides of the preprocessing (``PreprocessCfg`` fields, e.g. ``mean``).
        moe: turn the tower's block MLPs into routed experts (an
            :class:`~moezoo.models.encoders.moe.EncoderMoEConfig` or its dict); with ``pretrained``
            they are upcycled from the pretrained MLPs.

    Example:
        >>> OpenClipEncoderConfig().feature_layer
        -2
        >>> OpenClipEncoderConfig(model_cfg={"embed_dim": 8})
        Traceback (most recent call last):
        ...
        ValueError: OpenClipEncoderConfig.model_cfg={'embed_dim': 8} must hold 'embed_dim' and 'vision_cfg'
    """

    kind: ClassVar[str] = "open_clip"
    model_name: str = "ViT-B-16"
    pretrained: str | None = None
    feature_layer: int = -2
    keep_cls: bool = False
    model_cfg: dict | None = None
    preprocess_cfg: dict | None = None
    moe: EncoderMoEConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):
            self.moe = EncoderMoEConfig.from_dict(self.moe)
        require(self, "model_name", isinstance(self.model_name, str) and bool(self.model_name),
                "must be an open_clip model name")
        require(self, "pretrained", self.pretrained is None or (isinstance(self.pretrained, str)
                and bool(self.pretrained)), "must be an open_clip pretrained tag, a weights file, or None")
        if self.model_cfg is not None:
            require(self, "model_cfg", isinstance(self.model_cfg, dict)
                    and {"embed_dim", "vision_cfg"} <= set(self.model_cfg), "must hold 'embed_dim' and 'vision_cfg'")
        if self.preprocess_cfg is not None:
            from_open_clip = {"size", "mode", "mean", "std", "interpolation", "resize_mode", "fill_color"}
            require(self, "preprocess_cfg", isinstance(self.preprocess_cfg, dict)
                    and set(self.preprocess_cfg) <= from_open_clip,
                    f"must be a dict with keys from {sorted(from_open_clip)}")


def _create_clip(config: OpenClipEncoderConfig) -> nn.Module:
    """The whole open_clip model (weights loaded) with its preprocessing config set."""
    import open_clip
    from open_clip.factory import load_state_dict
    from open_clip.transform import PreprocessCfg

    if config.model_cfg is None:
        if ":" not in config.model_name and open_clip.get_model_config(config.model_name) is None:
            raise ValueError(f"OpenClipEncoderConfig.model_name={config.model_name!r} is not an open_clip model; "
                             "see open_clip.list_models(), or give model_cfg")
        # The base-tower flags would download timm / HF weights: the tower's weights come from `pretrained`.
        # The default device (meta inside `with torch.device("meta")`), not open_clip's "cpu".
        return open_clip.create_model(config.model_name, pretrained=config.pretrained, pretrained_image=False,
                                      pretrained_text=False, force_preprocess_cfg=config.preprocess_cfg,
                                      device=torch.get_default_device())
    model_cfg = copy.deepcopy(config.model_cfg)
    model_cfg["text_cfg"] = PLACEHOLDER_TEXT_CFG  # the text tower is thrown away
    model_cfg.pop("custom_text", None)
    model_cfg["vision_cfg"].setdefault("timm_model_pretrained", False)
    model = open_clip.CLIP(**model_cfg)
    if config.pretrained is not None:
        if not os.path.isfile(config.pretrained):
            raise ValueError(f"OpenClipEncoderConfig.pretrained={config.pretrained!r} is not a file "
                             "(with model_cfg, pretrained is a local open_clip checkpoint)")
        state = load_state_dict(config.pretrained)
        visual = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
        if not visual:
            raise ValueError(f"{config.pretrained} holds no 'visual.*' weights (an open_clip checkpoint was expected)")
        model.visual.load_state_dict(visual, strict=True)
    size = _pair(model.visual.image_size)
    preprocess = {**dataclasses.asdict(PreprocessCfg()), "size": size[0] if size[0] == size[1] else size}
    open_clip.set_model_preprocess_cfg(model, {**preprocess, **(config.preprocess_cfg or {})})
    return model


def _pair(size: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
