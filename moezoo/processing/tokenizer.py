"""Loading tokenizers: a checkpoint's own, or the zoo's BPE tokenizer shipped in the package.

The zoo tokenizer (byte-level BPE, 4096 tokens, the special tokens of
:mod:`moezoo.processing.tokens` at ids 0-10) is trained by ``moezoo data tokenizer``
on the shipped corpora (``data/build.sh`` regenerates it byte for byte) and lives in
``moezoo/assets/tokenizer``, so ``moezoo.create_model`` works from an installed wheel.
Tokenizer files are JSON (or a sentencepiece model): nothing is unpickled.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

ZOO_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "assets" / "tokenizer"
ZOO_VOCAB_SIZE = 4096
_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")


def has_tokenizer(path: str | Path) -> bool:
    """Whether ``path`` holds tokenizer files."""
    return any((Path(path) / name).is_file() for name in _FILES)


def load_tokenizer(path: str | Path, required: bool = True) -> Any:
    """The tokenizer saved in ``path``, through transformers' ``AutoTokenizer``.

    Args:
        path: a tokenizer dir or a checkpoint dir holding tokenizer files.
        required: raise ``FileNotFoundError`` when there are none (else return ``None``).

    Example:
        >>> load_tokenizer(ZOO_TOKENIZER_DIR).convert_tokens_to_ids("<image>")
        4
    """
    path = Path(path)
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
