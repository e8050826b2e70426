"""The model registry: timm-style ``register_model``, ``list_models`` and ``create_model``.

An architecture is registered by decorating a function that returns its typed config
(an :class:`~moezoo.models.lm.LMConfig` or a
:class:`~moezoo.models.multimodal.MultimodalConfig`); the function's name is the
architecture's name, as in timm. ``create_model(name, **overrides)`` builds that
config with the overrides applied (nested configs take dicts) and the model class
that takes it, with its tokenizer and processor attached.

Pretrained weights are tags of an architecture, ``arch.tag`` (timm's naming), each a
:class:`~moezoo.registry.pretrained.PretrainedCfg`: the shipped zoo under ``checkpoints/``
(:mod:`moezoo.registry.shipped`) and the hub entries (:mod:`moezoo.registry.hub_models`),
looked up by :mod:`moezoo.registry.pretrained`. This module holds only the architectures'
machinery; they live in :mod:`moezoo.registry.text` and :mod:`moezoo.registry.multimodal`.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
from typing import Any, Callable

_ENTRYPOINTS: dict[str, Callable[..., Any]] = {}


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``fn`` (returning the architecture's config) under ``fn.__name__``.

    Example (registering is global, so it is not run as a doctest)::

        @register_model
        def moe_lm_deep():
            return model_config("moe_lm_tiny", num_layers=8)

        moezoo.create_model("moe_lm_deep")
    """
    name = fn.__name__
    previous = _ENTRYPOINTS.get(name)
    # The same function again (its module re-imported, as doctest collection may do) replaces itself.
    if previous is not None and (previous.__module__, previous.__qualname__) != (fn.__module__, fn.__qualname__):
        raise ValueError(f"architecture {name!r} is registered twice ({previous.__module__} and {fn.__module__})")
    _ENTRYPOINTS[name] = fn
    return fn


def unregister_model(name: str) -> None:
    """Forget architecture ``name`` (a test's toy family cleans up after itself); an unknown name is ignored."""
    _ENTRYPOINTS.pop(name, None)


def architecture_names(pattern: str = "*") -> list[str]:
    """Registered architecture names matching ``pattern`` (shell wildcards), sorted (``moezoo.list_models``
    lists these and, with ``pretrained=True``, the pretrained names instead).

    Example:
        >>> architecture_names("no_such_*")
        []
    """
    return sorted(n for n in _ENTRYPOINTS if fnmatch.fnmatchcase(n, pattern))


def split_name(name: str) -> tuple[str, str | None]:
    """``"arch.tag"`` -> ``("arch", "tag")``; a bare architecture -> ``(name, None)``."""
    arch, _, tag = name.partition(".")
    return arch, tag or None


def _unknown(name: str, known: list[str], what: str) -> ValueError:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f" Did you mean {close}?" if close else f" Known: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}"
    return ValueError(f"unknown {what} {name!r}.{hint} (`moezoo list` shows them all)")


def model_config(name: str, **overrides: Any) -> Any:
    """The config of architecture ``name`` with ``overrides`` applied (nested configs take dicts).

    Example:
        >>> model_config("moe_lm_tiny", num_layers=3).num_layers
        3
    """
    arch, _ = split_name(name)
    if arch not in _ENTRYPOINTS:
        raise _unknown(arch, architecture_names(), "architecture")
    return apply_overrides(_ENTRYPOINTS[arch](), overrides)


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """``config`` with ``overrides`` applied; a dict for a nested config updates its fields.

    A dict holding a different ``kind`` than the nested config replaces it (e.g.
    ``image_connector={"kind": "moe", "num_experts": 4}``). Unknown fields are an error
    naming the known ones.

    Example:
        >>> from moezoo.moe import MoEConfig
        >>> apply_overrides(MoEConfig(dim=8, expert_dim=8, num_experts=4, top_k=2), {"top_k": 1}).top_k
        1
    """
    if not overrides:
        return config
    known = {f.name: f for f in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in known:
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise ValueError(f"{type(config).__name__} has no field {key!r}.{hint} Fields: {sorted(known)}")
        current = getattr(config, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(current) and \
                value.get("kind", getattr(current, "kind", None)) == getattr(current, "kind", None):
            value = apply_overrides(current, {k: v for k, v in value.items() if k != "kind"})
        changes[key] = value
    return dataclasses.replace(config, **changes)
