"""Early checks shared by the data configs: fail when a config is built, naming the field."""

from __future__ import annotations


def check_min(cfg: object, **lows: int) -> None:
    """Raise ``ValueError`` naming the first field of ``cfg`` below its lower bound.

    Example:
        >>> from types import SimpleNamespace
        >>> check_min(SimpleNamespace(n=0), n=1)
        Traceback (most recent call last):
        ...
        ValueError: SimpleNamespace.n=0 must be >= 1
    """
    for name, low in lows.items():
        value = getattr(cfg, name)
        if value < low:
            raise ValueError(f"{type(cfg).__name__}.{name}={value} must be >= {low}")
