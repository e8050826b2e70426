"""Pretrained models by name: registering entries, looking them up, listing them.

An entry is a :class:`~moezoo.registry.entry.PretrainedCfg` (re-exported here with
:class:`~moezoo.registry.entry.PretrainedFile`). Two kinds are known:

* the shipped zoo, ``checkpoints/ARCH.TAG/pretrained.json``, read on the first lookup and again
  when a manifest changes (:mod:`moezoo.registry.shipped`), never on ``import moezoo``;
* entries registered in code with :func:`register_pretrained`: the hub entries of
  :mod:`moezoo.registry.hub_models`, which register when :mod:`moezoo.registry` is imported.

Example:
    >>> "moe_lm_tiny" in list_models("moe_lm_*")
    True
    >>> pretrained_cfg("moe_lm_tiny.nope")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: no pretrained model named 'moe_lm_tiny.nope'... `moezoo.create_model('moe_lm_tiny')` builds it untrained. ...
"""

from __future__ import annotations

import difflib
import fnmatch
from pathlib import Path

from moezoo.registry.core import architecture_names, split_name
from moezoo.registry.entry import PretrainedCfg, PretrainedFile
from moezoo.registry.shipped import shipped_entries, verify_shipped

__all__ = ["PretrainedCfg", "PretrainedFile", "check_pretrained", "list_models", "pretrained_cfg",
           "pretrained_dir", "pretrained_entries", "register_pretrained", "unregister_pretrained"]

_REGISTERED: dict[str, PretrainedCfg] = {}  # registered in code: the hub entries, a test's own


def register_pretrained(cfg: PretrainedCfg) -> PretrainedCfg:
    """Register ``cfg`` under ``cfg.name`` (the hub entries do this on import) and return it.

    Registering an equal entry again is a no-op; a different entry under a registered name is
    an error (a retrained model takes a new tag or a new revision).

    Example (registering is global, so it is not run as a doctest)::

        register_pretrained(PretrainedCfg("moe_lm_tiny.mine", "url", "https://example.org/w"))
    """
    if not isinstance(cfg, PretrainedCfg):
        raise TypeError(f"register_pretrained takes a PretrainedCfg, not {type(cfg).__name__}")
    previous = _REGISTERED.get(cfg.name)
    if previous is not None and previous != cfg:
        raise ValueError(f"pretrained model {cfg.name!r} is registered twice with different entries; "
                         "a retrained model takes a new tag or a new revision")
    _REGISTERED[cfg.name] = cfg
    return cfg


def unregister_pretrained(name: str) -> None:
    """Forget the code-registered entry ``name`` (a test's own entry cleans up); unknown names are ignored."""
    _REGISTERED.pop(name, None)


def pretrained_entries() -> dict[str, PretrainedCfg]:
    """Every pretrained entry by name: the shipped ones (re-read if a manifest changed) and the registered ones.

    Raises:
        ValueError: a name is both shipped and registered with another entry.
    """
    entries = dict(_REGISTERED)
    for name, cfg in shipped_entries().items():
        if name in entries and entries[name] != cfg:
            raise ValueError(f"pretrained model {name!r} is both shipped (checkpoints/{cfg.location}) and "
                             f"registered as a {entries[name].source!r} entry; one name, one set of weights")
        entries[name] = cfg
    return entries


def list_models(pattern: str = "*", pretrained: bool = False, downloadable: bool = False) -> list[str]:
    """Registered architecture names matching ``pattern`` (shell wildcards), sorted.

    Args:
        pattern: e.g. ``"*tiny*"``.
        pretrained: list the ``arch.tag`` names whose weights are here instead: the shipped zoo, which
            ``moezoo.load(name)`` reads offline.
        downloadable: with ``pretrained``, add the hub and URL entries, which ``moezoo.load(name)``
            downloads (or finds in a cache) first (``moezoo list --pretrained`` shows both).

    Example:
        >>> list_models("no_such_*"), list_models("no_such_*", pretrained=True)
        ([], [])
        >>> "mixtral_8x7b.v0_1" in list_models("mixtral_*", pretrained=True, downloadable=True)
        True
    """
    if not pretrained:
        return architecture_names(pattern)
    return sorted(n for n, cfg in pretrained_entries().items()
                  if fnmatch.fnmatchcase(n, pattern) and (downloadable or cfg.source == "shipped"))


def check_pretrained(name: str) -> None:
    """Raise a ValueError unless ``name`` has pretrained weights, naming the closest that do."""
    known = list_models(pretrained=True, downloadable=True)
    if name in known:
        return
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    if close:
        hint = f" Did you mean {close}?"
    elif known:
        hint = f" Known: {', '.join(known[:20])}{' ...' if len(known) > 20 else ''}."
    else:
        hint = " No pretrained weights are registered."
    arch = split_name(name)[0]
    if arch in architecture_names():
        hint += f" `moezoo.create_model({arch!r})` builds it untrained."
    raise ValueError(f"no pretrained model named {name!r}.{hint} (`moezoo list --pretrained` shows them all)")


def pretrained_cfg(name: str) -> PretrainedCfg:
    """The entry of pretrained model ``name``.

    Raises:
        ValueError: no such name; the message names the closest registered names.
    """
    entries = pretrained_entries()
    if name not in entries:
        check_pretrained(name)
    return entries[name]


def pretrained_dir(name: str) -> Path:
    """The checked dir of shipped pretrained model ``name`` (:func:`~moezoo.registry.shipped.verify_shipped`).

    Raises:
        ValueError: an unknown name (the closest are named), or a model that is downloaded rather than
            shipped (``moezoo.load(name)`` fetches it).
    """
    cfg = pretrained_cfg(name)
    if cfg.source != "shipped":
        raise ValueError(f"{name} is downloaded ({cfg.source}: {cfg.location}), not shipped: "
                         f"`moezoo.load({name!r})` fetches and loads it")
    return verify_shipped(cfg)
