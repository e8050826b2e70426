"""Typed configs that serialise to plain JSON, and registries of config *kinds*.

Encoders and connectors come in kinds (``timm``, ``hf_vision``, ``mlp2x_gelu``, ...),
each a dataclass with its own fields. A :class:`KindRegistry` maps a kind to its
config class and the module it builds, so a saved ``{"kind": "timm", ...}`` dict
turns back into the right config, and ``registry.build(config)`` into the module,
with no ``if kind == ...`` chains anywhere else.

Example:
    >>> from dataclasses import dataclass
    >>> from typing import ClassVar
    >>> from torch import nn
    >>> shapes = KindRegistry("shape")
    >>> @shapes.register(nn.Identity)
    ... @dataclass
    ... class SquareConfig(Config):
    ...     kind: ClassVar[str] = "square"
    ...     side: int = 1
    >>> shapes.config_from_dict({"kind": "square", "side": 3})
    SquareConfig(side=3)
    >>> SquareConfig(side=3).to_dict()
    {'kind': 'square', 'side': 3}
    >>> shapes.config_from_dict({"kind": "sqare"})
    Traceback (most recent call last):
    ...
    ValueError: unknown shape kind 'sqare'; known kinds: ['square']. Did you mean ['square']?
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, ClassVar, TypeVar

T = TypeVar("T")


class Config:
    """Mixin for config dataclasses: ``to_dict`` / ``from_dict`` / ``replace``.

    Nested configs serialise to dicts; a config class with a ``kind`` class variable
    writes it as the ``"kind"`` key, so a :class:`KindRegistry` can read it back.
    """

    kind: ClassVar[str | None] = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``from_dict`` (or a :class:`KindRegistry`) inverts it."""
        out: dict[str, Any] = {"kind": self.kind} if self.kind else {}
        for f in dataclasses.fields(self):
            out[f.name] = to_plain(getattr(self, f.name))
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        """Build from :meth:`to_dict`'s output; unknown keys are an error that lists the known ones."""
        data = {k: v for k, v in data.items() if k != "kind"}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"{cls.__name__} got unknown keys {unknown}; known keys: {sorted(known)}")
        return cls(**data)

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` applied (and re-validated by ``__post_init__``)."""
        return dataclasses.replace(self, **changes)


def to_plain(value: Any) -> Any:
    """``value`` with configs turned into dicts and tuples into lists (JSON-ready)."""
    if hasattr(value, "to_dict") and dataclasses.is_dataclass(value):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


class KindRegistry:
    """Kind name -> (config class, module class) for one family of pluggable parts.

    Args:
        what: what the kinds are, for error messages (``"encoder"``, ``"connector"``).
    """

    def __init__(self, what: str):
        self.what = what
        self._configs: dict[str, type] = {}
        self._modules: dict[str, Callable[..., Any]] = {}

    def register(self, module_cls: Callable[..., Any]) -> Callable[[type[T]], type[T]]:
        """Class decorator for a config class (with a ``kind`` class variable) built into ``module_cls``."""

        def add(config_cls: type[T]) -> type[T]:
            kind = getattr(config_cls, "kind", None)
            if not kind:
                raise TypeError(f"{config_cls.__name__} needs a `kind: ClassVar[str]` to be registered")
            previous = self._configs.get(kind)
            # The same class again (its module re-imported, as doctest collection may do) replaces itself.
            if previous is not None and (previous.__module__, previous.__qualname__) != \
                    (config_cls.__module__, config_cls.__qualname__):
                raise ValueError(f"{self.what} kind {kind!r} is already registered by {previous.__name__}")
            self._configs[kind] = config_cls
            self._modules[kind] = module_cls
            return config_cls

        return add

    def kinds(self) -> list[str]:
        """The registered kind names, sorted."""
        return sorted(self._configs)

    def _check(self, kind: Any) -> str:
        if kind not in self._configs:
            close = difflib.get_close_matches(str(kind), self._configs, n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(f"unknown {self.what} kind {kind!r}; known kinds: {self.kinds()}.{hint}")
        return kind

    def config_class(self, kind: str) -> type:
        """The config class registered for ``kind``."""
        return self._configs[self._check(kind)]

    def module_class(self, kind: str) -> Callable[..., Any]:
        """The module class registered for ``kind``."""
        return self._modules[self._check(kind)]

    def config_from_dict(self, data: dict[str, Any] | Any) -> Any:
        """A config from ``{"kind": ..., **fields}``; a config object is returned unchanged."""
        if not isinstance(data, dict):
            self._check(getattr(data, "kind", None))
            return data
        if "kind" not in data:
            raise ValueError(f"a {self.what} config dict needs a 'kind' key (one of {self.kinds()}); got {sorted(data)}")
        return self.config_class(data["kind"]).from_dict(data)

    def build(self, config: Any, *args: Any, **kwargs: Any) -> Any:
        """The module for ``config`` (a config object or a dict with ``kind``)."""
        config = self.config_from_dict(config)
        return self._modules[config.kind](config, *args, **kwargs)
