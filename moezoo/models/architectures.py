"""The model classes moezoo builds, saves and loads, by name.

A checkpoint names its architecture (the class name); the reader and the registry
look it up here, and every class says which typed config it takes
(``config_class``). This table is the one place that lists them.
"""

from __future__ import annotations

import difflib
from typing import Any

from moezoo.models.lm.model import MoEForCausalLM
from moezoo.models.multimodal.model import MultimodalMoEForCausalLM

ARCHITECTURES: dict[str, type] = {cls.__name__: cls for cls in (MoEForCausalLM, MultimodalMoEForCausalLM)}


def architecture(name: str) -> type:
    """The model class registered as ``name``.

    Example:
        >>> architecture("MoEForCausalLM").__name__
        'MoEForCausalLM'
    """
    if name not in ARCHITECTURES:
        close = difflib.get_close_matches(str(name), ARCHITECTURES, n=3)
        hint = f" Did you mean {close}?" if close else ""
        raise ValueError(f"unknown architecture {name!r}; moezoo builds {sorted(ARCHITECTURES)}.{hint}")
    return ARCHITECTURES[name]


def model_class_for(config: Any) -> type:
    """The model class whose ``config_class`` is ``type(config)``.

    Example:
        >>> from moezoo.models.lm import LMConfig
        >>> model_class_for(LMConfig(vocab_size=8, dim=8, num_layers=1, num_heads=2, ffn_dim=8)).__name__
        'MoEForCausalLM'
    """
    for cls in ARCHITECTURES.values():
        if type(config) is cls.config_class:
            return cls
    raise ValueError(f"no model class takes a {type(config).__name__}; configs moezoo builds: "
                     f"{sorted(c.config_class.__name__ for c in ARCHITECTURES.values())}")
