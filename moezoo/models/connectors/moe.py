"""The ``moe`` connector: LLaVA-1.5's two-layer projector as a sparse mixture of experts.

LibMoE (arXiv 2411.00918) puts the MoE in the connector as well as in the LLM; CuMo
(arXiv 2405.05949) upcycles the projector into experts. Every expert is an
``mlp2x_gelu``-shaped MLP with biases (:class:`~moezoo.moe.mlp_experts.MoEMLP`), routed by
any router of :mod:`moezoo.moe`. :meth:`MoEConnector.from_dense` upcycles a trained
``mlp2x_gelu`` connector: identical experts and renormalised top-k give exactly its output.

The routing of each call goes to the forward's recorder (the
:class:`~moezoo.moe.mlp_experts.MoEMLP` contract): the owning model returns it in its output
(``site_outputs``, site ``connectors.{modality}.mlp``) and, in training, adds
``config.aux_loss_coef * aux_loss + config.z_loss_coef * z_loss`` of every call to the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from moezoo.models.connectors.base import CONNECTORS, Connector
from moezoo.models.connectors.linear import MLPConnector, check_features
from moezoo.moe.mlp_experts import ACTIVATIONS, ExpertsConfig, MoEMLP
from moezoo.utils.checks import check_min, require


class MoEConnector(Connector):
    """``features (N, T, in_dim)`` -> top-k of ``E`` MLPs ``in_dim -> hidden_dim -> out_dim`` -> ``(N, T, out_dim)``.

    Example:
        >>> from moezoo.moe.recording import SiteRecorder
        >>> connector = MoEConnector(MoEConnectorConfig(num_experts=4, top_k=2), in_dim=8, out_dim=16)
        >>> with SiteRecorder(connector) as recorder:
        ...     features = connector(torch.randn(2, 5, 8))
        >>> (record,) = recorder.records
        >>> features.shape, record.site, record.output.tokens_per_expert.sum().item()
        (torch.Size([2, 5, 16]), 'mlp', 20)
    """

    def __init__(self, config: MoEConnectorConfig, in_dim: int, out_dim: int, prompt_dim: int | None = None):
        super().__init__()
        self.config, self.in_dim, self.out_dim = config, in_dim, out_dim
        self.mlp = MoEMLP(in_dim, config.hidden_dim or out_dim, out_dim, activation=config.activation,
                          **config.moe_kwargs())

    def forward(self, features: torch.Tensor, prompt: torch.Tensor | None = None,
                prompt_mask: torch.Tensor | None = None) -> torch.Tensor:
        check_features(features, self.in_dim)
        return self.mlp(features)

    @classmethod
    def from_dense(cls, dense: MLPConnector, num_experts: int = 4, top_k: int = 2, router: str = "softmax",
                   noise_std: float = 0.0, seed: int = 0, **config_fields: Any) -> MoEConnector:
        """Upcycle an ``mlp2x_gelu`` connector: every expert a copy of it, a fresh router.

        Args:
            dense: the trained :class:`~moezoo.models.connectors.linear.MLPConnector` (left unchanged).
            num_experts / top_k / router: the new experts and their router.
            noise_std / seed: as :meth:`MoEMLP.from_dense`.
            **config_fields: further :class:`MoEConnectorConfig` fields (``aux_loss_coef``, ...).

        Example:
            >>> from moezoo.models.connectors.linear import MLPConfig
            >>> dense = MLPConnector(MLPConfig(), in_dim=8, out_dim=16)
            >>> moe = MoEConnector.from_dense(dense, num_experts=4, top_k=2)
            >>> x = torch.randn(2, 5, 8)
            >>> torch.allclose(moe(x), dense(x), atol=1e-6)
            True
        """
        if not isinstance(dense, MLPConnector) or dense.uses_prompt:
            raise ValueError(f"from_dense upcycles an mlp2x_gelu connector (MLPConnector), got {type(dense).__name__}")
        config = MoEConnectorConfig(num_experts=num_experts, top_k=top_k, router=router,
                                    activation=dense.config.activation, **config_fields)
        if config.hidden_dim not in (None, dense.out_dim):
            raise ValueError(f"an upcycled connector keeps the dense hidden width {dense.out_dim}, "
                             f"got hidden_dim={config.hidden_dim}")
        connector = cls(config, dense.in_dim, dense.out_dim)
        connector.mlp = MoEMLP.from_dense(dense.linear_1, config.activation, dense.linear_2, noise_std=noise_std,
                                          seed=seed, **config.moe_kwargs())
        return connector


@CONNECTORS.register(MoEConnector)
@dataclass
class MoEConnectorConfig(ExpertsConfig):
    """``moe``: an ``mlp2x_gelu``-shaped connector whose MLP is a mixture of experts.

    Args:
        num_experts / top_k / router / aux_loss_coef / z_loss_coef / norm_topk_prob: the experts
            and their routing (:class:`~moezoo.moe.mlp_experts.ExpertsConfig`).
        hidden_dim: each expert's hidden width; default the LLM width ``out_dim``, as ``mlp2x_gelu``.
        activation: as :class:`~moezoo.models.connectors.linear.MLPConfig`.

    Example:
        >>> MoEConnectorConfig(num_experts=4, top_k=6)
        Traceback (most recent call last):
        ...
        ValueError: MoEConnectorConfig.top_k=6 must be in [1, num_experts=4]
    """

    kind: ClassVar[str] = "moe"
    hidden_dim: int | None = None
    activation: str = "gelu"

    def __post_init__(self) -> None:
        super().__post_init__()
        require(self, "activation", self.activation in ACTIVATIONS, f"must be one of {sorted(ACTIVATIONS)}")
        if self.hidden_dim is not None:
            check_min(self, hidden_dim=1)
