"""Connectors: encoder features -> the LLM's embedding space (LLaVA's "projector").

=============== ======================================================================
kind            what it is
=============== ======================================================================
``linear``      one linear layer (LLaVA-1)
``mlp2x_gelu``  Linear -> GELU -> Linear (LLaVA-1.5; transformers' ``LlavaMultiModalProjector``)
``film``        ``mlp2x_gelu`` whose hidden features are FiLM-modulated by the prompt
``resampler``   learned queries cross-attending to the features (Perceiver / Q-Former; Uni-MoE's audio)
``instruct``    a resampler whose queries also see the prompt (InstructBLIP's Q-Former)
``moe``         ``mlp2x_gelu`` upcycled into routed experts (LibMoE's MoE connector)
=============== ======================================================================

Example:
    >>> from moezoo.models.connectors import build_connector
    >>> build_connector({"kind": "resampler", "num_queries": 4, "num_heads": 2}, in_dim=8, out_dim=16
    ...                 )(torch.randn(2, 10, 8)).shape
    torch.Size([2, 4, 16])
"""

import torch  # noqa: F401  (doctest namespace)

from moezoo.models.connectors import linear, moe, resampler  # noqa: F401  (the kinds register themselves)
from moezoo.models.connectors.base import CONNECTORS, Connector, build_connector
from moezoo.models.connectors.linear import FiLMConfig, FiLMConnector, LinearConfig, LinearConnector, MLPConfig, \
    MLPConnector
from moezoo.models.connectors.moe import MoEConnector, MoEConnectorConfig
from moezoo.models.connectors.resampler import InstructResampler, InstructResamplerConfig, Resampler, \
    ResamplerConfig

__all__ = ["CONNECTORS", "Connector", "FiLMConfig", "FiLMConnector", "InstructResampler", "InstructResamplerConfig",
           "LinearConfig", "LinearConnector", "MLPConfig", "MLPConnector", "MoEConnector", "MoEConnectorConfig",
           "Resampler", "ResamplerConfig", "build_connector"]
