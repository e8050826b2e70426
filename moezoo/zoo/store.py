"""Writing a model dir for the zoo: the checkpoint (optionally in bf16), the shared tokenizer reference,
the files' digests, and the swap into ``checkpoints/`` that never leaves a half-written model dir.

Example:
    >>> import tempfile, moezoo
    >>> d = Path(tempfile.mkdtemp())
    >>> stage_checkpoint(moezoo.create_model("moe_lm_tiny"), d, bf16=True)
    'bfloat16'
    >>> sorted(f.path for f in file_entries(d))
    ['model.safetensors', 'moezoo_config.json', 'tokenizer_ref.json']
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from moezoo.checkpoint.files import WEIGHTS_NAME, read_safetensors, save_safetensors
from moezoo.processing.tokenizer import TOKENIZER_REF, ZOO_TOKENIZER_DIR, load_tokenizer, zoo_tokenizer
from moezoo.registry.entry import PretrainedFile
from moezoo.registry.shipped import MANIFEST_NAME
from moezoo.utils.digest import sha256_file
from moezoo.utils.io import atomic_write_text

# What a tokenizer's save_pretrained may write; the zoo tokenizer's own files are among them.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json",
                   "added_tokens.json")


def stage_checkpoint(model: nn.Module, dest: Path, bf16: bool = False) -> str:
    """Save ``model`` into ``dest`` (moezoo format) and return the dtype its parameters are stored in.

    ``bf16`` stores the floating parameters in bfloat16 (buffers keep their dtype); a tokenizer equal
    to the zoo's is replaced by a ``tokenizer_ref.json``.
    """
    model.save_pretrained(dest)
    params = {name for name, p in model.named_parameters() if p.is_floating_point()}
    if bf16:
        state = read_safetensors(dest)
        state = {k: v.to(torch.bfloat16) if k in params else v for k, v in state.items()}
        save_safetensors(state, dest / WEIGHTS_NAME)
    share_zoo_tokenizer(dest)
    dtypes = {p.dtype for name, p in model.named_parameters() if name in params}
    return "bfloat16" if bf16 else "mixed" if len(dtypes) != 1 else str(dtypes.pop()).removeprefix("torch.")


def same_tokenizer(a: Any, b: Any) -> bool:
    """Whether two tokenizers tokenise, decode and template alike: the same backend (vocabulary, merges,
    normalisation, added tokens), special tokens, chat template and padding side.

    Example:
        >>> same_tokenizer(zoo_tokenizer(), zoo_tokenizer())
        True
    """
    def facts(tok: Any) -> tuple:
        backend = json.loads(tok.backend_tokenizer.to_str())
        backend.pop("truncation", None), backend.pop("padding", None)  # call-time settings, not the tokenizer
        return backend, tok.special_tokens_map, tok.chat_template, tok.padding_side

    return facts(a) == facts(b)


def share_zoo_tokenizer(model_dir: Path) -> bool:
    """Replace ``model_dir``'s tokenizer files by a ``tokenizer_ref.json`` naming the zoo tokenizer (with its
    files' sha256) when that tokenizer is the zoo's; whether it did."""
    present = [model_dir / n for n in TOKENIZER_FILES if (model_dir / n).is_file()]
    if not present or not same_tokenizer(load_tokenizer(model_dir), zoo_tokenizer()):
        return False
    digests = {p.name: sha256_file(p) for p in sorted(ZOO_TOKENIZER_DIR.iterdir()) if p.is_file()}
    atomic_write_text(model_dir / TOKENIZER_REF, json.dumps({"tokenizer": "zoo", "sha256": digests}, indent=2) + "\n")
    for path in present:
        path.unlink()
    return True


def file_entries(model_dir: Path) -> tuple[PretrainedFile, ...]:
    """Every file under ``model_dir`` but the manifest, with its size and sha256, sorted by path."""
    files = sorted(p for p in model_dir.rglob("*") if p.is_file() and p.name != MANIFEST_NAME)
    return tuple(PretrainedFile(p.relative_to(model_dir).as_posix(), p.stat().st_size, sha256_file(p)) for p in files)


def swap_into_place(staging: Path, target: Path) -> None:
    """Rename the finished ``staging`` dir to ``target``; an existing ``target`` is moved aside first and
    removed after, so ``target`` is at every moment either the old model dir or the new one (or, between
    two renames, absent: never a mix)."""
    if not target.exists():
        os.rename(staging, target)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    aside.rmdir()
    os.rename(target, aside)
    try:
        os.rename(staging, target)
    except OSError:
        os.rename(aside, target)
        raise
    shutil.rmtree(aside)
