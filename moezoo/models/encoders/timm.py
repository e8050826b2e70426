"""Vision encoder on any timm model: feature tokens from a chosen block or stage.

Follows timm's feature-extraction API (``forward_intermediates`` / ``prune_intermediate_layers``,
timm >= 1.0): the tokens are the output of one block of a ViT or one stage of a CNN, NCHW maps
flattened to ``(N, H*W, C)``; a ViT's prefix tokens (CLS, registers) are dropped or kept in front.
The layers after that block are pruned when the model is built, so they cost no compute and
hold no parameters that would never get a gradient (DDP / FSDP reject those). Preprocessing is
timm's own data config (``resolve_data_config``), applied by ``timm.data.create_transform``.
"""

from __future__ import annotations

import difflib
import inspect
import itertools
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from moezoo.models.encoders.base import ENCODERS, Encoder
from moezoo.models.encoders.moe import EncoderMoEConfig, MLPSite, find_mlps
from moezoo.utils.checks import require
from moezoo.utils.config import Config, to_plain


class TimmEncoder(Encoder):
    """Feature tokens ``(N, T, C)`` of one block / stage of a timm model.

    Attributes:
        model: the timm model, pruned after the block that gives the features.
        image_size: the ``(H, W)`` input it takes.
    """

    def __init__(self, config: TimmEncoderConfig):
        super().__init__()
        from timm.data import resolve_data_config

        self.config = config
        self.model = _create_model(config)
        self.in_chans = config.model_kwargs.get("in_chans", 3)
        size_args = {"input_size": (self.in_chans, config.image_size, config.image_size)} if config.image_size else {}
        self.data_config = resolve_data_config(args=size_args, model=self.model)
        self.image_size = tuple(self.data_config["input_size"][-2:])
        if config.keep_prefix_tokens and not _accepts(self.model, "return_prefix_tokens"):
            raise ValueError(f"TimmEncoderConfig.keep_prefix_tokens=True, but {config.model_name} "
                             f"({type(self.model).__name__}) has no prefix tokens to keep")
        # A ViT without prefix tokens (num_prefix_tokens=0) is asked for none: some timm models fail then.
        self._prefix = config.keep_prefix_tokens and getattr(self.model, "num_prefix_tokens", 1) > 0
        try:  # prune after the wanted block, once pretrained weights are in
            self._index = self.model.prune_intermediate_layers([config.feature_index], prune_norm=True)[0]
        except AssertionError as err:  # timm's index checks are asserts
            raise ValueError(f"TimmEncoderConfig.feature_index={config.feature_index} is out of range "
                             f"for {config.model_name}: {err}") from None
        self.num_tokens, self.out_dim = probe_output_shape(self, (1, self.in_chans, *self.image_size))
        if config.moe is not None:  # upcycled from the pretrained MLPs, else random experts a checkpoint fills
            self.sparsify(config.moe, upcycle=bool(config.pretrained))

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``pixel_values (N, 3, H, W)`` -> ``(N, T, C)``; ``condition`` is ignored."""
        expected = (self.in_chans, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected pixel_values of shape (N, {', '.join(map(str, expected))}), "
                             f"got {tuple(x.shape)}")
        extra = {"return_prefix_tokens": True} if self._prefix else {}
        (features,) = self.model.forward_intermediates(
            x, indices=[self._index], intermediates_only=True, stop_early=True, **extra)
        prefix_NPC = None
        if isinstance(features, tuple):  # (spatial, prefix) when prefix tokens are asked for
            features, prefix_NPC = features
        tokens_NTC = features.flatten(2).transpose(1, 2) if features.ndim == 4 else features
        if prefix_NPC is not None:
            tokens_NTC = torch.cat([prefix_NPC, tokens_NTC], dim=1)
        return tokens_NTC

    def mlp_sites(self) -> list[MLPSite]:
        """The block MLPs of the (pruned) timm model."""
        return timm_mlp_sites(self.model)

    def preprocess_spec(self) -> dict[str, Any]:
        """timm's data config: ``{"kind": "timm", "input_size", "interpolation", "mean", "std", "crop_pct", ...}``."""
        return {"kind": "timm", **to_plain(dict(self.data_config))}


@ENCODERS.register(TimmEncoder)
@dataclass
class TimmEncoderConfig(Config):
    """A timm vision encoder.

    Args:
        model_name: a timm model name (``timm.list_models()``), optionally with a ``.tag``.
        pretrained: ``True`` loads timm's own weights for the name (a download); a path loads a
            local weights file (``.safetensors`` / ``.pth``) through timm's pretrained loader.
        feature_index: which of ``forward_intermediates``' outputs (a block of a ViT, a stage of a
            CNN); negative counts from the end.
        keep_prefix_tokens: keep a ViT's CLS / register tokens in front of the patch tokens.
        image_size: square input size, when not the model's default (ViTs get ``img_size``;
            CNNs take any size).
        model_kwargs: more keyword arguments for ``timm.create_model``.
        moe: turn the tower's block MLPs into routed experts (an
            :class:`~moezoo.models.encoders.moe.EncoderMoEConfig` or its dict); with ``pretrained``
            they are upcycled from the pretrained MLPs.

    Example:
        >>> enc = TimmEncoderConfig("test_convnext", feature_index=2, image_size=64)
        >>> enc.to_dict()["kind"], enc.feature_index
        ('timm', 2)
        >>> TimmEncoderConfig("test_vit", image_size=0)
        Traceback (most recent call last):
        ...
        ValueError: TimmEncoderConfig.image_size=0 must be >= 1 or None (the model's default)
    """

    kind: ClassVar[str] = "timm"
    model_name: str
    pretrained: bool | str = False
    feature_index: int = -1
    keep_prefix_tokens: bool = False
    image_size: int | None = None
    model_kwargs: dict = field(default_factory=dict)
    moe: EncoderMoEConfig | None = None

    def __post_init__(self) -> None:
        if isinstance(self.moe, dict):
            self.moe = EncoderMoEConfig.from_dict(self.moe)
        require(self, "model_name", isinstance(self.model_name, str) and bool(self.model_name),
                "must be a timm model name")
        require(self, "pretrained", isinstance(self.pretrained, bool) or (isinstance(self.pretrained, str)
                and bool(self.pretrained)), "must be a bool or a weights file path")
        require(self, "image_size", self.image_size is None or self.image_size >= 1,
                "must be >= 1 or None (the model's default)")
        require(self, "model_kwargs", isinstance(self.model_kwargs, dict), "must be a dict")


def timm_mlp_sites(model: torch.nn.Module) -> list[MLPSite]:
    """timm's token MLPs (``timm.layers.Mlp`` on linear layers, no inner norm or dropout), in module order."""

    def is_mlp(m: torch.nn.Module) -> bool:
        return (type(m).__name__ == "Mlp" and isinstance(getattr(m, "fc1", None), torch.nn.Linear)
                and isinstance(getattr(m, "norm", torch.nn.Identity()), torch.nn.Identity)
                and all(getattr(getattr(m, d, None), "p", 0.0) == 0.0 for d in ("drop1", "drop2")))

    return find_mlps(model, is_mlp, lambda m: (m.fc1, m.fc2, m.act))


def _create_model(config: TimmEncoderConfig) -> torch.nn.Module:
    import timm

    name = config.model_name
    if ":" not in name and not timm.is_model(name):  # "hf-hub:..." names are resolved by timm itself
        close = difflib.get_close_matches(name, timm.list_models(), n=3)
        raise ValueError(f"TimmEncoderConfig.model_name={name!r} is not a timm model"
                         + (f"; did you mean {close}?" if close else ""))
    kwargs: dict[str, Any] = dict(config.model_kwargs)
    if isinstance(config.pretrained, str):
        if not os.path.isfile(config.pretrained):
            raise ValueError(f"TimmEncoderConfig.pretrained={config.pretrained!r} is not a file; give a local "
                             "weights file, or True for timm's own weights")
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=config.pretrained))
    else:
        kwargs.update(pretrained=config.pretrained)
    if config.image_size is not None:
        try:  # ViT-like models fix their position table at build time
            return timm.create_model(name, img_size=config.image_size, **kwargs)
        except TypeError as err:  # CNNs take any input size and have no img_size argument
            if "img_size" not in str(err):
                raise
    return timm.create_model(name, **kwargs)


def _accepts(model: torch.nn.Module, argument: str) -> bool:
    return argument in inspect.signature(model.forward_intermediates).parameters


def probe_output_shape(encoder: Encoder, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """``(T, D)`` of ``encoder``'s ``(N, T, D)`` output, from a shape-only (meta device) forward where the ops allow.

    Token counts depend on strides, padding and prefix tokens that differ per architecture, so
    they are measured, not derived; on the meta device that costs no compute (it falls back to
    one real forward of a single input for ops without a meta kernel).

    Example:
        >>> probe_output_shape(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 2, stride=2), torch.nn.Flatten(2)),
        ...                    (1, 3, 8, 8))
        (8, 16)
    """
    was_training = encoder.training
    encoder.eval()  # no batch-norm statistics updates from the probe
    try:
        with torch.no_grad():
            try:
                meta = {name: torch.empty_like(t, device="meta")
                        for name, t in itertools.chain(encoder.named_parameters(), encoder.named_buffers())}
                out = torch.func.functional_call(encoder, meta, (torch.zeros(input_shape, device="meta"),))
            except Exception:  # an op without a meta kernel: one real forward of a single input
                weight = next(encoder.parameters())
                out = encoder(torch.zeros(input_shape, device=weight.device, dtype=weight.dtype))
    finally:
        encoder.train(was_training)
    return int(out.shape[1]), int(out.shape[2])
