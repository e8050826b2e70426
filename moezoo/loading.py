"""``moezoo.load``: one call from a name or a checkpoint dir to a model ready for inference;
``moezoo.upcycle``, which takes a checkpoint dir as well as a model.

It recognises a moezoo checkpoint (``moezoo_config.json``), a transformers
checkpoint of a supported family (``config.json``), so users can bring the MoE
models they already have (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE), a dense Llama /
Qwen2 / StableLM / Phi-2 / Phi-3 to upcycle, or a LLaVA built on any of them, and a registered pretrained name
(``arch.tag``): a shipped model (its files checked by sha256 first, computed in fp32) or a
hub / URL entry (downloaded and verified by :mod:`moezoo.hub`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from moezoo.checkpoint.files import CONFIG_NAME
from moezoo.models.spec import importable_model_types, importer_for


def load(name_or_path: str | Path, device: str | torch.device = "cpu",
         dtype: torch.dtype | str | None = None) -> nn.Module:
    """Load a model in eval mode, with its tokenizer (and processor, for multimodal models).

    Args:
        name_or_path: a moezoo checkpoint dir, a transformers checkpoint dir of a supported
            family, or a pretrained name (``moezoo.list_models(pretrained=True)``). A shipped
            model's files are checked (size and sha256) before a byte of weights is read; a hub
            or URL entry is downloaded (and verified) first.
        device: where to put the weights.
        dtype: e.g. ``torch.bfloat16`` or ``"bfloat16"``; ``None`` keeps a dir's or a downloaded
            checkpoint's dtype, and computes a shipped model in fp32 (bf16-stored weights upcast).

    Raises:
        FileNotFoundError: a path (it has a ``/`` or starts with ``.``) that does not exist, or a dir
            that is no checkpoint.
        ValueError: an unknown pretrained name (the closest names are given).
        moezoo.utils.digest.DigestMismatch: a shipped file is not the one its manifest records.

    Example:
        >>> import tempfile
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> path = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2,
        ...                                ffn_dim=32)).save_pretrained(tempfile.mkdtemp())
        >>> type(load(path)).__name__, load(path, dtype="bfloat16").embed_tokens.weight.dtype
        ('MoEForCausalLM', torch.bfloat16)
    """
    path = Path(name_or_path)
    if (path / CONFIG_NAME).is_file():
        from moezoo.checkpoint.reader import load as load_moezoo

        return load_moezoo(path, device=device, dtype=dtype).eval()
    if (path / "config.json").is_file():
        return hf_importer(path / "config.json")(path, device=device, dtype=dtype).eval()
    if path.exists():
        raise FileNotFoundError(f"{path} holds neither {CONFIG_NAME} (a moezoo checkpoint) nor config.json "
                                "(a transformers checkpoint)")
    if looks_like_path(name_or_path):
        raise FileNotFoundError(f"no such directory: {path}; moezoo.load takes a moezoo or transformers "
                                "checkpoint dir, or a pretrained name from moezoo.list_models(pretrained=True)")
    return load_pretrained(str(name_or_path), device=device, dtype=dtype)


def looks_like_path(name: str | Path) -> bool:
    """Whether ``name`` is meant as a path rather than a pretrained name: a ``Path``, or a string with a
    ``/`` (or the OS separator), or one starting with ``.`` or ``~``.

    Example:
        >>> looks_like_path("runs/model"), looks_like_path("./m"), looks_like_path("film_cnn_moe_small.v1")
        (True, True, False)
    """
    if isinstance(name, Path):
        return True
    return any(sep in name for sep in {"/", os.sep}) or name.startswith((".", "~"))


def load_pretrained(name: str, device: str | torch.device = "cpu",
                    dtype: torch.dtype | str | None = None) -> nn.Module:
    """The pretrained model ``name`` (an ``arch.tag``, or an architecture with one tag); see :func:`load`.

    A shipped model is read from ``checkpoints/`` after its files are checked; a hub or URL entry is
    fetched (or found in a cache) and verified by :func:`moezoo.hub.fetch_pretrained`, then read as the
    checkpoint dir it is.
    """
    from moezoo.registry.create import default_pretrained, load_shipped

    cfg = default_pretrained(name)
    if cfg.source == "shipped":
        return load_shipped(cfg, device=device, dtype=dtype)
    from moezoo.hub import fetch_pretrained

    return load(fetch_pretrained(cfg), device=device, dtype=dtype)


def hf_importer(config_file: Path) -> Callable[..., Any]:
    """The importer registered for a transformers ``config.json``'s ``model_type`` (by the family's
    conversion module, against its :class:`~moezoo.models.spec.ArchitectureSpec`).

    Raises:
        ValueError: the file is not JSON, or no family imports its ``model_type`` (the supported ones
            are listed).

    Example:
        >>> import tempfile
        >>> file = Path(tempfile.mkdtemp()) / "config.json"
        >>> _ = file.write_text('{"model_type": "llava"}')
        >>> hf_importer(file).__name__
        'import_llava'
    """
    import moezoo.convert  # noqa: F401  (the families' importers register on import)

    try:
        cfg = json.loads(config_file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_file} is not valid JSON ({err})") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    importer = importer_for(model_type)
    if importer is None:
        raise ValueError(f"{config_file}: unsupported model_type {model_type!r}; moezoo reads "
                         f"{', '.join(importable_model_types())}")
    return importer


def upcycle(model_or_path: nn.Module | str | Path, num_experts: int = 8, top_k: int = 2, router: str = "softmax",
            **kwargs: Any) -> nn.Module:
    """Sparse upcycling (:func:`moezoo.models.upcycle.upcycle`) of a model or of the dir :func:`load` reads.

    Example:
        >>> import tempfile
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> path = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=2, num_heads=2,
        ...                                ffn_dim=32)).save_pretrained(tempfile.mkdtemp())
        >>> upcycle(path, num_experts=4).config.sparse_layers()
        [0, 1]
    """
    from moezoo.models.upcycle import upcycle as upcycle_model

    model = load(model_or_path) if isinstance(model_or_path, (str, Path)) else model_or_path
    return upcycle_model(model, num_experts=num_experts, top_k=top_k, router=router, **kwargs)

