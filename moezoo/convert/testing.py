"""Tiny random transformers checkpoints of every supported family, for tests and benchmarks.

Each is built with the family's own transformers config class and written with
``save_pretrained`` (so the files are exactly what transformers produces: the
per-expert key layout, ``config.json``, ``generation_config.json``), together with a
small word-level tokenizer. Nothing is downloaded. The overrides of each family's
tiny model live in its entry in :mod:`moezoo.convert.families`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moezoo.convert.families import FAMILIES

TINY_VOCAB = 96
_COMMON = dict(vocab_size=TINY_VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               num_key_value_heads=2, max_position_embeddings=256, bos_token_id=1, eos_token_id=2,
               pad_token_id=0)
# Per family: (config class name, overrides that exercise its peculiarities), from its entry's `tiny`.
TINY_FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    name: (f.config_class, dict(f.tiny)) for name, f in FAMILIES.items()
}


def tiny_tokenizer(vocab_size: int = TINY_VOCAB) -> Any:
    """A word-level ``PreTrainedTokenizerFast`` with ``<pad> <s> </s> <unk>`` at ids 0-3."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {tok: i for i, tok in enumerate(specials + [f"w{i}" for i in range(vocab_size - len(specials))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_hf_config(family: str, **overrides: Any) -> Any:
    """The transformers config object of the tiny ``family`` model."""
    import transformers

    cls_name, extra = TINY_FAMILIES[family]
    return getattr(transformers, cls_name)(**{**_COMMON, **extra, **overrides})


def tiny_hf_model(family: str, seed: int = 0, std: float = 0.02, **overrides: Any) -> Any:
    """A random transformers ``*ForCausalLM`` of ``family`` in eval mode.

    Norm weights are randomised too, so a wrongly placed norm cannot hide behind ones.
    """
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_hf_config(family, **overrides), attn_implementation="sdpa")
    return randomize_(model, lambda name: std).eval()


def randomize_(model: Any, std_of: Any) -> Any:
    """Draw every weight of ``model`` in place: norms ``1 + 0.1 N``, biases ``0.1 N``, the rest
    ``std_of(name) N``, so that a wrongly placed norm or bias cannot hide behind ones and zeros."""
    import torch

    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):  # CLIP spells one `pre_layrnorm`
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(std_of(name) * torch.randn_like(p))
    return model


def tiny_hf_checkpoint(family: str, path: str | Path, seed: int = 0, **save_kwargs: Any) -> Any:
    """Write a tiny random ``family`` checkpoint (model + tokenizer) to ``path``; return the model."""
    model = tiny_hf_model(family, seed=seed)
    model.save_pretrained(str(path), **save_kwargs)
    tiny_tokenizer().save_pretrained(str(path))
    return model
