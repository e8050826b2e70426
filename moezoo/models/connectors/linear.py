"""Token-preserving connectors: ``linear``, ``mlp2x_gelu`` and the prompt-conditioned ``film``.

* ``linear``: LLaVA-1's projector, one linear layer (Liu et al. 2023, arXiv 2304.08485).
* ``mlp2x_gelu``: LLaVA-1.5's, Linear -> GELU -> Linear (Liu et al. 2023, arXiv 2310.03744).
  The attribute names are those of transformers' ``LlavaMultiModalProjector``
  (``linear_1``, ``act``, ``linear_2``), so a LLaVA checkpoint's ``multi_modal_projector.*``
  weights load by a prefix rename, and the config fields mirror ``multimodal_projector_bias``
  and ``projector_hidden_act``.
* ``film``: the same MLP with its hidden features FiLM-modulated by the prompt (Perez et al.
  2018, arXiv 1709.07871): a per-channel scale and shift from the masked mean of the prompt
  embeddings. Letting the question shape the visual features is what made the tiny VQA
  probes learn (../shared/DESIGN.md); the modulation starts at zero, so at init it is the
  plain MLP.

Also the input checks every connector shares (:func:`check_features`, :func:`check_prompt`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from moezoo.models.connectors.base import CONNECTORS, Connector
from moezoo.models.prompt_pooling import masked_mean
from moezoo.moe.mlp_experts import ACTIVATIONS, Activation
from moezoo.utils.checks import require
from moezoo.utils.config import Config


def check_features(features: torch.Tensor, in_dim: int) -> None:
    """Raise ``ValueError`` unless ``features`` is ``(N, T, in_dim)``."""
    if features.ndim != 3 or features.shape[-1] != in_dim:
        raise ValueError(f"expected features of shape (N, T, {in_dim}) (in_dim={in_dim}), got {tuple(features.shape)}")


def check_prompt(features: torch.Tensor, prompt: torch.Tensor | None, prompt_mask: torch.Tensor | None,
                 prompt_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(prompt, mask)`` checked against ``features (N, T, _)``, with padding zeroed.

    ``mask (N, P)`` is boolean (all True when ``prompt_mask`` is None). Padding positions of
    the prompt are set to 0, so whatever they hold (even NaN) cannot reach the output.
    """
    if prompt is None:
        raise ValueError("this connector reads the prompt: pass prompt (N, P, prompt_dim) and prompt_mask (N, P)")
    n = features.shape[0]
    if prompt.ndim != 3 or prompt.shape[0] != n or prompt.shape[-1] != prompt_dim:
        raise ValueError(f"expected prompt of shape ({n}, P, {prompt_dim}) (one row per feature row, "
                         f"prompt_dim={prompt_dim}), got {tuple(prompt.shape)}")
    if prompt_mask is None:
        mask = torch.ones(prompt.shape[:2], dtype=torch.bool, device=prompt.device)
    elif tuple(prompt_mask.shape) != tuple(prompt.shape[:2]):
        raise ValueError(f"expected prompt_mask of shape {tuple(prompt.shape[:2])}, got {tuple(prompt_mask.shape)}")
    else:
        mask = prompt_mask.bool()
    return torch.where(mask[..., None], prompt, prompt.new_zeros(())), mask


class LinearConnector(Connector):
    """``features (N, T, in_dim)`` -> ``linear_1`` -> ``(N, T, out_dim)`` (LLaVA-1).

    Example:
        >>> LinearConnector(LinearConfig(), in_dim=8, out_dim=16)(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 16])
    """

    def __init__(self, config: LinearConfig, in_dim: int, out_dim: int, prompt_dim: int | None = None):
        super().__init__()
        self.config, self.in_dim, self.out_dim = config, in_dim, out_dim
        self.linear_1 = nn.Linear(in_dim, out_dim, bias=config.bias)

    def forward(self, features: torch.Tensor, prompt: torch.Tensor | None = None,
                prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_features(features, self.in_dim)
        return self.linear_1(features)


@CONNECTORS.register(LinearConnector)
@dataclass
class LinearConfig(Config):
    """``linear``: one linear layer.

    Args:
        bias: give the layer a bias (LLaVA-1 does).
    """

    kind: ClassVar[str] = "linear"
    bias: bool = True


class MLPConnector(Connector):
    """``linear_1 -> act -> linear_2``, both ``out_dim`` wide (LLaVA-1.5's ``mlp2x_gelu``).

    Example:
        >>> mlp = MLPConnector(MLPConfig(), in_dim=8, out_dim=16)
        >>> mlp(torch.randn(2, 5, 8)).shape, sorted(mlp.state_dict())
        (torch.Size([2, 5, 16]), ['linear_1.bias', 'linear_1.weight', 'linear_2.bias', 'linear_2.weight'])
    """

    def __init__(self, config: MLPConfig, in_dim: int, out_dim: int, prompt_dim: int | None = None):
        super().__init__()
        self.config, self.in_dim, self.out_dim = config, in_dim, out_dim
        self.linear_1 = nn.Linear(in_dim, out_dim, bias=config.bias)
        self.act = Activation(config.activation)
        self.linear_2 = nn.Linear(out_dim, out_dim, bias=config.bias)

    def forward(self, features: torch.Tensor, prompt: torch.Tensor | None = None,
                prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_features(features, self.in_dim)
        return self.linear_2(self.act(self.linear_1(features)))


@CONNECTORS.register(MLPConnector)
@dataclass
class MLPConfig(Config):
    """``mlp2x_gelu``: LLaVA-1.5's two-layer MLP projector.

    Args:
        bias: biases on both layers (transformers' ``multimodal_projector_bias``).
        activation: transformers' ``projector_hidden_act`` name (``"gelu"`` is the exact erf GELU).

    Example:
        >>> MLPConfig(activation="tanh")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: MLPConfig.activation='tanh' must be one of ['gelu', 'gelu_pytorch_tanh', ...]
    """

    kind: ClassVar[str] = "mlp2x_gelu"
    bias: bool = True
    activation: str = "gelu"

    def __post_init__(self) -> None:
        require(self, "activation", self.activation in ACTIVATIONS, f"must be one of {sorted(ACTIVATIONS)}")


class FiLMConnector(MLPConnector):
    """``mlp2x_gelu`` whose hidden features are FiLM-modulated by the prompt.

    ``h = act((1 + gamma) * linear_1(x) + beta)``, ``(gamma, beta) = film(norm(mean_prompt))``,
    then ``linear_2(h)``. The modulation acts *before* the activation, so the prompt can
    switch hidden channels off, which is what makes FiLM selective (Perez et al. put it
    before the ReLU too). The pooled prompt is layer-normed because LLM embeddings are
    small (std ~0.02), which would make ``film`` learn slowly. ``film`` starts at zero:
    at init the output is the plain MLP's, and any ``mlp2x_gelu`` weights load into it.

    Example:
        >>> film = FiLMConnector(FiLMConfig(), in_dim=8, out_dim=16, prompt_dim=12)
        >>> film(torch.randn(2, 5, 8), torch.randn(2, 3, 12), torch.ones(2, 3, dtype=torch.bool)).shape
        torch.Size([2, 5, 16])
    """

    uses_prompt = True

    def __init__(self, config: FiLMConfig, in_dim: int, out_dim: int, prompt_dim: int | None = None):
        super().__init__(config, in_dim, out_dim)
        self.prompt_dim = prompt_dim or out_dim
        # No affine: `film` right after it would absorb it (and a zero `film` would starve it of gradient).
        self.prompt_norm = nn.LayerNorm(self.prompt_dim, elementwise_affine=False)
        self.film = nn.Linear(self.prompt_dim, 2 * out_dim)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, features: torch.Tensor, prompt: torch.Tensor | None = None,
                prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_features(features, self.in_dim)
        prompt, mask = check_prompt(features, prompt, prompt_mask, self.prompt_dim)
        gamma_ND, beta_ND = self.film(self.prompt_norm(masked_mean(prompt, mask))).chunk(2, dim=-1)
        h_NTD = self.linear_1(features) * (1 + gamma_ND[:, None]) + beta_ND[:, None]
        return self.linear_2(self.act(h_NTD))


@CONNECTORS.register(FiLMConnector)
@dataclass
class FiLMConfig(MLPConfig):
    """``film``: ``mlp2x_gelu`` conditioned on the prompt (its fields are ``mlp2x_gelu``'s)."""

    kind: ClassVar[str] = "film"
