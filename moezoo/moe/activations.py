"""Expert and MLP activations by name, with transformers' spellings (``hidden_act``) as aliases.

One table for every FFN of :mod:`moezoo.moe`: the LLM's fused experts (:class:`~moezoo.moe.GroupedExperts`),
the dense :class:`~moezoo.moe.MLP`, and the biased MLP experts of connectors and towers
(:class:`~moezoo.moe.mlp_experts.MoEMLP`). ``"swiglu"`` is the gated SiLU of Llama / Mixtral
experts and is handled by the FFNs themselves (it needs two input projections); every other name
is an element-wise function of this table.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """``x * sigmoid(1.702 x)``: the GELU approximation of OpenAI's CLIP weights."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of GELU: transformers' ``gelu_pytorch_tanh`` (SigLIP) and ``gelu_new`` (Phi-2).

    transformers' ``NewGELUActivation`` (``gelu_new``) writes the same formula out element by element;
    PyTorch's fused kernel agrees with it to about one float ulp, so a converter maps ``gelu_new`` here.
    """
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact erf GELU: LLaVA's projector, CLIP's "gelu", Whisper
    "gelu_tanh": gelu_tanh,  # Phi-2's "gelu_new" (MoE-LLaVA-Phi2's experts)
    "gelu_pytorch_tanh": gelu_tanh,  # SigLIP
    "quick_gelu": quick_gelu,  # OpenAI CLIP
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
}

# How each element-wise activation's backward is computed by ``aten.gelu_backward`` (the fused
# expert dispatch recomputes activations in backward); names not listed take autograd.
GELU_APPROXIMATE = {"gelu": "none", "gelu_tanh": "tanh", "gelu_pytorch_tanh": "tanh"}


def activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The activation function called ``name`` (a key of :data:`ACTIVATIONS`).

    Example:
        >>> activation_fn("relu")(torch.tensor([-1.0, 2.0]))
        tensor([0., 2.])
        >>> activation_fn("gleu")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: unknown activation 'gleu'; known: ['gelu', 'gelu_pytorch_tanh', 'gelu_tanh', ...]
    """
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]
