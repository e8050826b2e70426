"""``model.save_pretrained(path, format="hf")``: one entry, one exporter per architecture.

Text LMs are written as their transformers family (:mod:`moezoo.convert.hf_export`),
multimodal models as a LLaVA checkpoint (:mod:`moezoo.convert.llava_export`).
Exporters import no model class, so the models' ``save_pretrained`` can hand over to
this module without an import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from moezoo.convert import hf_export, llava_export

# Architecture (model class name) -> ``export_hf(model, path, **kwargs)`` that writes it.
EXPORTERS: dict[str, Callable[..., Path]] = {
    "MoEForCausalLM": hf_export.export_hf,
    "MultimodalMoEForCausalLM": llava_export.export_llava,
}


def export_hf(model: Any, path: str | Path, **kwargs: Any) -> Path:
    """Write ``model`` as a transformers checkpoint that ``from_pretrained`` loads with the same outputs.

    Raises:
        ValueError: the model has no transformers equivalent (the message says what stands in the way).
    """
    name = type(model).__name__
    if name not in EXPORTERS:
        raise ValueError(f"{name} has no transformers format; moezoo exports {sorted(EXPORTERS)}")
    return EXPORTERS[name](model, path, **kwargs)
