"""A byte-level BPE tokenizer for the zoo's from-scratch models, trained with ``tokenizers``.

Byte-level BPE as in GPT-2 (Radford et al. 2019): every string encodes, with no
unknown token. The special tokens are the ones the chat template and the multimodal
models need: padding, sequence bounds, one placeholder per modality, and chat-role
markers. The result is saved as ``tokenizer.json`` + ``tokenizer_config.json``, so
``transformers.PreTrainedTokenizerFast.from_pretrained(dir)`` loads it and it can be
saved next to every checkpoint. Imported HF models keep their own tokenizer. The
special tokens live in :mod:`moezoo.processing.tokens`; loading a tokenizer is
:func:`moezoo.processing.tokenizer.load_tokenizer`.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from moezoo.processing.tokens import AUDIO, ASSISTANT, BOS, CHAT_TEMPLATE, END, EOS, IMAGE, PAD, SPECIAL_TOKENS, SYSTEM, UNK, USER, VIDEO
from moezoo.utils.checks import check_min, require
from moezoo.utils.io import atomic_save_pretrained

@dataclass
class TokenizerConfig:
    """How to train the BPE tokenizer.

    Args:
        vocab_size: total vocabulary, special tokens and the 256 byte symbols included.
        min_frequency: a merge needs this many occurrences in the corpus.

    Example:
        >>> TokenizerConfig(vocab_size=100)
        Traceback (most recent call last):
        ...
        ValueError: TokenizerConfig.vocab_size=100 must be >= 267 (256 bytes + 11 special tokens)
    """

    vocab_size: int = 4096
    min_frequency: int = 2

    def __post_init__(self) -> None:
        floor = 256 + len(SPECIAL_TOKENS)
        require(self, "vocab_size", self.vocab_size >= floor,
                f"must be >= {floor} (256 bytes + {len(SPECIAL_TOKENS)} special tokens)")
        check_min(self, min_frequency=1)


def iter_corpus_text(paths: list[str | Path]) -> Iterator[str]:
    """Yield training text from shard dirs or files: ``txt`` members and the conversation turns in ``json``.

    Reading VQA shards too means the question and answer words get their own merges.
    Shards are read in sorted order, so the tokenizer is reproducible.
    """
    import json

    shards: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            shards += sorted(q for q in p.rglob("*") if q.name.endswith((".tar", ".tar.gz", ".tgz")))
        elif p.is_file():
            shards.append(p)
        else:
            raise FileNotFoundError(f"corpus path {p} does not exist; pass shard dirs or .tar/.tar.gz files")
    if not shards:
        raise FileNotFoundError(f"no .tar/.tar.gz shards under {', '.join(map(str, paths))}")
    for shard in shards:
        with tarfile.open(shard, "r:*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                data = tar.extractfile(member).read()
                if member.name.endswith(".txt"):
                    yield data.decode("utf-8", errors="replace")
                elif member.name.endswith(".json"):
                    try:
                        body = json.loads(data)
                    except ValueError:
                        continue  # the tokenizer does not care about a broken sample
                    for turn in body.get("conversations", []) if isinstance(body, dict) else []:
                        yield str(turn.get("value", "")).replace(IMAGE, "")


def train_tokenizer(texts, cfg: TokenizerConfig | None = None):
    """Train a byte-level BPE ``tokenizers.Tokenizer`` on an iterable of strings.

    Example:
        >>> tok = train_tokenizer(["the cat sat on the mat"] * 20, TokenizerConfig(vocab_size=300))
        >>> tok.token_to_id("<pad>"), tok.decode(tok.encode("the cat").ids)
        (0, 'the cat')
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    cfg = cfg or TokenizerConfig()
    tok = Tokenizer(models.BPE(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        min_frequency=cfg.min_frequency,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: nothing is ever unknown
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def to_hf(tok):
    """Wrap a ``tokenizers.Tokenizer`` as a ``PreTrainedTokenizerFast`` with our special tokens set."""
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        bos_token=BOS,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=[IMAGE, AUDIO, VIDEO, SYSTEM, USER, ASSISTANT, END],
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def save_tokenizer(tok, out_dir: str | Path) -> Path:
    """Save as a transformers tokenizer dir (``tokenizer.json`` + config); each file is written atomically.

    ``tok`` is a ``tokenizers.Tokenizer`` or a transformers fast tokenizer.
    """
    return atomic_save_pretrained(tok if hasattr(tok, "save_pretrained") else to_hf(tok), out_dir)


def build_tokenizer(corpus: list[str | Path], out_dir: str | Path, cfg: TokenizerConfig | None = None):
    """Train on the shards under ``corpus`` and save to ``out_dir``; returns the HF tokenizer."""
    hf = to_hf(train_tokenizer(iter_corpus_text(corpus), cfg))
    save_tokenizer(hf, out_dir)
    return hf
