"""Loading tokenizers: a checkpoint's own, or the zoo's BPE tokenizer shipped in the package.

The zoo tokenizer (byte-level BPE, 4096 tokens, the special tokens of
:mod:`moezoo.processing.tokens` at ids 0-10) is trained by ``moezoo data tokenizer``
on the shipped corpora (``data/build.sh`` regenerates it byte for byte) and lives in
``moezoo/assets/tokenizer``, so ``moezoo.create_model`` works from an installed wheel.
Tokenizer files are JSON (or a sentencepiece model): nothing is unpickled.

A checkpoint on the zoo tokenizer may hold ``tokenizer_ref.json`` instead of a copy of it
(the shipped models do: one tokenizer file for all of them): ``{"tokenizer": "zoo", "sha256":
{file: digest}}``; :func:`tokenizer_dir` resolves it, checking that the package's tokenizer files
are still the ones the model was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZOO_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"
ZOO_VOCAB_SIZE = 4096
_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")
TOKENIZER_REF = "tokenizer_ref.json"
SHARED_TOKENIZERS = {"zoo": ZOO_TOKENIZER_DIR}


def has_tokenizer(path: str | Path) -> bool:
    """Whether ``path`` holds tokenizer files (or a ``tokenizer_ref.json``)."""
    return any((Path(path) / name).is_file() for name in (*_FILES, TOKENIZER_REF))


def tokenizer_dir(path: str | Path) -> Path:
    """The dir with ``path``'s tokenizer files: ``path``, or the shared tokenizer its ``tokenizer_ref.json`` names.

    Raises:
        ValueError: the reference names an unknown tokenizer, or a referenced file's sha256 is not the
            recorded one (the message names the file and both digests).

    Example:
        >>> tokenizer_dir(ZOO_TOKENIZER_DIR) == ZOO_TOKENIZER_DIR
        True
    """
    from moezoo.utils.digest import sha256_file

    path = Path(path)
    ref = path / TOKENIZER_REF
    if any((path / name).is_file() for name in _FILES) or not ref.is_file():
        return path
    data = json.loads(ref.read_text())
    shared = SHARED_TOKENIZERS.get(data.get("tokenizer"))
    if shared is None:
        raise ValueError(f"{ref} names tokenizer {data.get('tokenizer')!r}; known: {sorted(SHARED_TOKENIZERS)}")
    for name, expected in data.get("sha256", {}).items():
        actual = sha256_file(shared / name) if (shared / name).is_file() else "no file"
        if actual != expected:
            raise ValueError(f"{shared / name}: sha256 {actual}, but {ref} records {expected}: this moezoo's "
                             f"{data['tokenizer']} tokenizer is not the one the model was trained with; install "
                             "the moezoo release that shipped the model")
    return shared


def load_tokenizer(path: str | Path, required: bool = True) -> Any:
    """The tokenizer saved in ``path``, through transformers' ``AutoTokenizer``.

    Args:
        path: a tokenizer dir or a checkpoint dir holding tokenizer files.
        required: raise ``FileNotFoundError`` when there are none (else return ``None``).

    Example:
        >>> load_tokenizer(ZOO_TOKENIZER_DIR).convert_tokens_to_ids("<image>")
        4
    """
    path = tokenizer_dir(path)
    if not has_tokenizer(path):
        if not required:
            return None
        raise FileNotFoundError(f"no tokenizer in {path} (expected one of {', '.join(_FILES)}): pass a tokenizer "
                                "dir made by `moezoo data tokenizer` or a checkpoint dir that holds one")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


def zoo_tokenizer() -> Any:
    """The zoo's own BPE tokenizer (a fresh ``PreTrainedTokenizerFast``).

    Example:
        >>> tok = zoo_tokenizer()
        >>> len(tok), tok.pad_token_id, tok.decode(tok.encode("a red circle", add_special_tokens=False))
        (4096, 0, 'a red circle')
    """
    return load_tokenizer(ZOO_TOKENIZER_DIR)
