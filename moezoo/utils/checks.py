"""Early config checks: a bad config fails when it is built, naming the field.

Every typed config (``MoEConfig``, ``LMConfig``, the data configs) checks its
invariants in ``__post_init__`` with these two helpers, so all of them word their
errors the same way: ``Class.field=value why``.
"""

from __future__ import annotations


def require(config: object, field: str, ok: bool, why: str) -> None:
    """Raise ``ValueError`` naming ``config.field`` and its value unless ``ok``.

    Example:
        >>> from types import SimpleNamespace
        >>> require(SimpleNamespace(mode="fast"), "mode", False, "must be one of ('eager', 'fused')")
        Traceback (most recent call last):
        ...
        ValueError: SimpleNamespace.mode='fast' must be one of ('eager', 'fused')
    """
    if not ok:
        raise ValueError(f"{type(config).__name__}.{field}={getattr(config, field)!r} {why}")


def check_min(config: object, **lows: int) -> None:
    """Raise ``ValueError`` naming the first field of ``config`` below its lower bound.

    Example:
        >>> from types import SimpleNamespace
        >>> check_min(SimpleNamespace(n=0), n=1)
        Traceback (most recent call last):
        ...
        ValueError: SimpleNamespace.n=0 must be >= 1
    """
    for field, low in lows.items():
        require(config, field, getattr(config, field) >= low, f"must be >= {low}")
