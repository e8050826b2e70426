"""Write a model in moezoo's checkpoint format (see :mod:`moezoo.checkpoint`).

Every file is written atomically (a temporary file renamed into place) and the header
last, so an interrupted save never leaves a dir that looks like a complete checkpoint
over a good one. The writer works on any model with a typed ``config`` (``to_dict``),
weights, and optionally a ``processor`` or ``tokenizer``; the header names the model's registered
architecture (:func:`moezoo.models.spec.spec_for`). It registers itself as the ``"moezoo"`` format,
which ``model.save_pretrained`` finds through :func:`moezoo.models.spec.save_format`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moezoo.checkpoint.files import CONFIG_NAME, FORMAT_VERSION, WEIGHTS_NAME, save_safetensors
from moezoo.models.spec import register_format, spec_for
from moezoo.utils.io import atomic_save_pretrained, atomic_write_text


def save(model: Any, path: str | Path) -> Path:
    """Write ``model`` to ``path``; :func:`moezoo.load` reads it back exactly.

    Args:
        model: a moezoo model (what ``model.save_pretrained(path)`` passes).
        path: the checkpoint dir (created if needed).

    Example:
        >>> import tempfile, torch, moezoo
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
        >>> path = save(model, tempfile.mkdtemp())
        >>> torch.equal(moezoo.load(path).embed_tokens.weight, model.embed_tokens.weight)
        True
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    save_safetensors(model.state_dict(), path / WEIGHTS_NAME)
    processor = getattr(model, "processor", None)
    if processor is not None:
        processor.save_pretrained(path)  # the tokenizer and the preprocessing
    elif getattr(model, "tokenizer", None) is not None:
        atomic_save_pretrained(model.tokenizer, path)
    config = model.config.for_checkpoint() if hasattr(model.config, "for_checkpoint") else model.config
    header = {"format": "moezoo", "version": FORMAT_VERSION, "architecture": spec_for(model).name,
              "config": config.to_dict()}
    atomic_write_text(path / CONFIG_NAME, json.dumps(header, indent=2) + "\n")
    return path


register_format("moezoo", save)
