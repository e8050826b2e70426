"""Build a module with its parameters on the meta device and its buffers real.

A model about to receive a checkpoint's weights need not fill them with random numbers
first: parameters are created on the ``meta`` device (no memory, no init cost) and the
loaded tensors are assigned in place (``load_state_dict(assign=True)``). Buffers stay
real, because non-persistent ones (position ids, RoPE tables, attention masks of
transformers / timm modules) are not in a state dict and must keep their computed values.
This is what ``accelerate.init_empty_weights(include_buffers=False)`` does.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Inside, every ``nn.Parameter`` registered on a module is created on ``meta``.

    Example:
        >>> with parameters_on_meta():
        ...     norm = nn.BatchNorm1d(4)
        >>> norm.weight.is_meta, norm.running_mean.is_meta
        (True, False)
    """
    original = nn.Module.register_parameter

    def register_parameter(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and not param.is_meta:
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        original(module, name, param)

    nn.Module.register_parameter = register_parameter
    try:
        yield
    finally:
        nn.Module.register_parameter = original


def meta_tensors(module: nn.Module) -> list[str]:
    """Names of the parameters and buffers of ``module`` still on the meta device."""
    tensors = [*module.named_parameters(), *module.named_buffers()]
    return [name for name, t in tensors if isinstance(t, torch.Tensor) and t.is_meta]
