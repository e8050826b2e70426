"""What every connector provides, and the registry of connector kinds.

A connector (LLaVA's "projector") maps an encoder's feature tokens into the LLM's
embedding space: ``(N, T, in_dim)`` -> ``(N, T', out_dim)``. Some keep the token count
(``linear``, ``mlp2x_gelu``, ``moe``), some compress it to learned queries
(``resampler``), and instruction-aware ones also read the prompt (InstructBLIP's
Q-Former idea), never the answer.

The widths are not config fields: the multimodal model passes ``in_dim`` (the
encoder's ``out_dim``), ``out_dim`` (the LLM width) and ``prompt_dim`` (the width of
the prompt embeddings) when it builds the connector, so one config fits any encoder.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from moezoo.utils.config import KindRegistry

CONNECTORS = KindRegistry("connector")


class Connector(nn.Module):
    """Base class of the connectors.

    Subclasses take ``(config, in_dim, out_dim, prompt_dim)`` in ``__init__``.

    Attributes:
        uses_prompt: whether :meth:`forward` reads ``prompt`` (instruction-aware kinds).
    """

    uses_prompt: bool = False

    def num_output_tokens(self, num_input_tokens: int) -> int:
        """Tokens out for ``num_input_tokens`` tokens in (the placeholder count per input)."""
        return num_input_tokens

    def forward(self, features: torch.Tensor, prompt: torch.Tensor | None = None,
                prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``features (N, T, in_dim)`` -> ``(N, T', out_dim)``.

        Args:
            features: one row per image (audio clip, video).
            prompt: ``(N, P, prompt_dim)`` embeddings of the prompt tokens of the sample each
                row belongs to (only read when ``uses_prompt``).
            prompt_mask: ``(N, P)`` True on real prompt tokens, False on padding.
        """
        raise NotImplementedError


def build_connector(config: Any, in_dim: int, out_dim: int, prompt_dim: int | None = None) -> Connector:
    """The connector module of ``config`` (a registered config object or a dict with ``kind``)."""
    return CONNECTORS.build(config, in_dim=in_dim, out_dim=out_dim, prompt_dim=prompt_dim or out_dim)
