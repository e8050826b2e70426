"""``moezoo.load``: one call from a checkpoint dir to a model ready for inference.

It recognises a moezoo checkpoint (``moezoo_config.json``) or a transformers
checkpoint of a supported family (``config.json``), so users can bring the MoE
models they already have (Mixtral, OLMoE, Qwen2-MoE, Qwen3-MoE) or a dense Llama /
Qwen2 to upcycle. Named pretrained models come with the registry.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


def load(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None) -> nn.Module:
    """Load a model in eval mode, with ``model.tokenizer`` set when the dir has tokenizer files.

    Args:
        path: a moezoo checkpoint dir, or a transformers checkpoint dir of a supported family.
        device: where to put the weights.
        dtype: e.g. ``torch.bfloat16`` or ``"bfloat16"``; ``None`` keeps the checkpoint's.

    Example:
        >>> import tempfile
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> path = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2,
        ...                                ffn_dim=32)).save_pretrained(tempfile.mkdtemp())
        >>> type(load(path)).__name__, load(path, dtype="bfloat16").embed_tokens.weight.dtype
        ('MoEForCausalLM', torch.bfloat16)
    """
    from moezoo.models.lm.checkpoint import CONFIG_NAME

    path = Path(path)
    if (path / CONFIG_NAME).is_file():
        from moezoo.models.lm.checkpoint import load as load_native

        return load_native(path, device=device, dtype=dtype).eval()
    if (path / "config.json").is_file():
        from moezoo.convert import import_hf

        return import_hf(path, device=device, dtype=dtype).eval()
    if path.exists():
        raise FileNotFoundError(f"{path} holds neither {CONFIG_NAME} (a moezoo checkpoint) nor config.json "
                                "(a transformers checkpoint)")
    raise FileNotFoundError(f"no checkpoint dir at {path}; moezoo.load takes a moezoo or transformers "
                            "checkpoint dir")
