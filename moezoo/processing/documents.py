"""Plain documents as language-modelling windows (text corpora; conversations are :mod:`moezoo.processing.chat`'s).

:class:`TokenizerAdapter` puts one interface over ``tokenizers.Tokenizer`` and transformers
tokenizers, for the documents and for the padding id of the collate.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from moezoo.processing.tokens import BOS, EOS


@dataclass
class Encoded:
    """Token ids and labels of one window (plain lists; the collate makes tensors)."""

    input_ids: list[int]
    labels: list[int]


class TokenizerAdapter:
    """One interface over ``tokenizers.Tokenizer`` and transformers tokenizers (for documents and padding).

    Example:
        >>> from moezoo.data.tokenizer import TokenizerConfig, train_tokenizer
        >>> tok = TokenizerAdapter(train_tokenizer(["hello world"] * 5, TokenizerConfig(vocab_size=280)))
        >>> tok.decode(tok.encode("hello")), tok.pad_id
        ('hello', 0)
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.vocab: dict[str, int] = tokenizer.get_vocab()
        pad = getattr(tokenizer, "pad_token_id", None)
        self.pad_id: int = pad if pad is not None else self.vocab.get("<pad>", 0)
        self.bos_id: int | None = self.vocab.get(BOS, getattr(tokenizer, "bos_token_id", None))
        self.eos_id: int | None = self.vocab.get(EOS, getattr(tokenizer, "eos_token_id", None))

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with no special tokens added."""
        out = self.tokenizer.encode(text, add_special_tokens=False)
        return list(out.ids) if hasattr(out, "ids") else list(out)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)


def encode_document(text: str, tok: TokenizerAdapter, max_length: int) -> list[Encoded]:
    """Language-modelling windows of a document: ``<bos> text <eos>`` cut into ``max_length`` pieces.

    Every token carries loss (a model shifts labels itself, HF style); padding never does.

    Example:
        >>> from moezoo.data.tokenizer import TokenizerConfig, train_tokenizer
        >>> tok = TokenizerAdapter(train_tokenizer(["ab cd"] * 5, TokenizerConfig(vocab_size=270)))
        >>> [len(w.input_ids) for w in encode_document("ab cd ab cd", tok, 4)]
        [4, 3]
    """
    if max_length < 2:
        raise ValueError(f"max_length={max_length} must be >= 2")
    ids = ([tok.bos_id] if tok.bos_id is not None else []) + tok.encode(text)
    ids += [tok.eos_id] if tok.eos_id is not None else []
    windows = [ids[i : i + max_length] for i in range(0, len(ids), max_length)]
    return [Encoded(w, list(w)) for w in windows if len(w) >= 2]  # a 1-token window predicts nothing
