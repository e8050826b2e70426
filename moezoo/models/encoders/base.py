"""What every modality encoder provides, and the registry of encoder kinds.

An encoder turns one modality's preprocessed input into feature tokens:

* images: ``pixel_values (N, C, H, W)`` -> ``(N, T, D)``;
* audio: ``input_features (N, mel_bins, frames)`` -> ``(N, T, D)``;
* video: ``pixel_values_videos (N, F, C, H, W)`` -> ``(N, T, D)`` (frames through the image encoder).

Each encoder module has a typed config (a :class:`~moezoo.utils.config.Config` with a
``kind``), knows its output width and token count, and says how its input must be
preprocessed as a JSON-ready dict (:meth:`Encoder.preprocess_spec`), which
:mod:`moezoo.processing` turns into the transform with the encoder's own library
(timm's ``create_transform``, open_clip's ``image_transform``, a transformers image
processor or feature extractor). The spec is saved with the model, so the two never drift
apart (open_clip's ``create_model_and_transforms`` idea).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moezoo.models.encoders.moe import sparsify_mlps
from moezoo.models.prompt_pooling import masked_mean
from moezoo.utils.config import KindRegistry

ENCODERS = KindRegistry("encoder")


class Encoder(nn.Module):
    """Base class of the modality encoders.

    Subclasses set ``config``, ``out_dim`` and ``num_tokens`` in ``__init__`` and
    implement :meth:`forward` and :meth:`preprocess_spec`.

    Attributes:
        modality: ``"image"`` or ``"audio"`` (video reuses the image encoder).
        out_dim: width ``D`` of the feature tokens.
        num_tokens: tokens ``T`` per input at the configured input size.
        conditioned: whether :meth:`forward` uses ``condition`` (a FiLM-style encoder
            whose features depend on the prompt); others ignore it.
    """

    modality: str = "image"
    conditioned: bool = False
    out_dim: int
    num_tokens: int

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` (preprocessed input batch) -> ``(N, num_tokens, out_dim)``; ``condition (N, Dc)``."""
        raise NotImplementedError

    def pool_condition(self, prompt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The ``condition (N, Dc)`` :meth:`forward` reads, from the prompt's embeddings ``(N, P, Dc)``
        and its mask ``(N, P)`` (True on the prompt's tokens): their mean, unless the encoder pools
        its own way."""
        return masked_mean(prompt, mask)

    def preprocess_spec(self) -> dict[str, Any]:
        """How to preprocess raw input for this encoder, as a JSON-ready dict with a ``kind`` key."""
        raise NotImplementedError

    def unused_parameters(self) -> set[str]:
        """Names of parameters the forward never uses (kept for the checkpoint format, e.g. the layers
        of a transformers tower after the selected one): training leaves them frozen, since they
        would get no gradient (which DDP rejects)."""
        return set()

    def mlp_sites(self) -> list:
        """The block MLPs that can become experts (:mod:`moezoo.models.encoders.moe`), in block order."""
        raise ValueError(f"{type(self).__name__} has no transformer-block MLPs to turn into experts; "
                         "MoE towers are hf_vision, timm ViT and open_clip encoders")

    def sparsify(self, moe: Any, upcycle: bool, noise_std: float = 0.0, seed: int = 0) -> None:
        """Turn the MLPs ``moe`` (an :class:`~moezoo.models.encoders.moe.EncoderMoEConfig`) picks into experts."""
        sparsify_mlps(self.mlp_sites(), moe, upcycle, noise_std, seed)


def build_encoder(config: Any) -> Encoder:
    """The encoder module of ``config`` (a registered config object or a dict with ``kind``)."""
    return ENCODERS.build(config)
