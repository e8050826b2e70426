"""The random states a training checkpoint carries, so a resumed run is exact.

Noisy routers and sampling draw from torch's and Python's generators; Lightning restores the
weights, the optimiser and the loops, but not these. :class:`~moezoo.train.module.MoEZooModule`
stores :func:`rng_state` in each checkpoint and sets it back with :func:`restore_rng_state`.
"""

from __future__ import annotations

from typing import Any

import torch


def rng_state() -> dict[str, Any]:
    """torch's and Python's random states, as plain tensors and lists (a checkpoint keeps them and
    still loads with ``weights_only=True``): noisy routers and sampling draw from them, so a run
    resumed with :func:`restore_rng_state` draws what the uninterrupted run would have.

    Example:
        >>> import random
        >>> state = rng_state()
        >>> a = (torch.rand(1), random.random())
        >>> restore_rng_state(state)
        >>> b = (torch.rand(1), random.random())
        >>> torch.equal(a[0], b[0]) and a[1] == b[1]
        True
    """
    import random

    version, state, gauss = random.getstate()
    return {"torch": torch.get_rng_state(), "python": [version, list(state), gauss]}


def restore_rng_state(state: dict[str, Any] | None) -> None:
    """Set the random states :func:`rng_state` saved (nothing for ``None``: a checkpoint without them)."""
    import random

    if state:
        torch.set_rng_state(state["torch"])
        version, python_state, gauss = state["python"]
        random.setstate((version, tuple(python_state), gauss))
