"""Fixtures shared by the encoder tests: seeded pixels and a seeded PIL image."""

import numpy as np
import pytest
import torch


@pytest.fixture
def pixels():
    """``pixels(n, size)``: seeded ``(n, 3, size, size)`` standard-normal pixel values."""
    return lambda n, size: torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def pil_image():
    """A seeded 48x40 RGB noise image (not square, so resizes and crops matter)."""
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8))


@pytest.fixture
def without_grad():
    """``without_grad(module)``: names of its trainable parameters that got no gradient (empty: all did)."""
    return lambda module: [name for name, p in module.named_parameters() if p.requires_grad and p.grad is None]
