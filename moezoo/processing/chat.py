"""The chat template, tokenisation and label masking for training on conversations.

Follows the LLaVA recipe (Liu et al. 2023): conversations are rendered turn by turn,
every token of the prompt side (system, user turns, role markers) and every modality
placeholder gets the label ``-100`` (``torch.nn.CrossEntropyLoss``'s ignore index),
and only the assistant's answers, with their end marker so the model learns to stop,
carry loss. The rendering is::

    <bos><|system|>\\n{system}<|end|>\\n<|user|>\\n{user}<|end|>\\n<|assistant|>\\n{answer}<|end|>\\n

Each ``<image>`` in a turn becomes ``image_tokens`` copies of the ``<image>`` token,
the slots the model fills with the image encoder's output (likewise audio and video).
Works with our BPE tokenizer and with any HF tokenizer that has the placeholder tokens.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from moezoo.processing.tokens import ASSISTANT, AUDIO, BOS, END, EOS, IMAGE, PLACEHOLDERS, SYSTEM, USER, VIDEO
from moezoo.utils.checks import check_min

IGNORE_INDEX = -100
# LLaVA JSON names the roles "human"/"gpt"; OpenAI-style data says "user"/"assistant".
ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT, "system": SYSTEM}
_PLACEHOLDER_RE = re.compile("(" + "|".join(map(re.escape, PLACEHOLDERS)) + ")")


@dataclass
class Encoded:
    """Token ids and labels of one sample (plain lists; the collate makes tensors)."""

    input_ids: list[int]
    labels: list[int]
    placeholders: dict[str, int] = field(default_factory=dict)  # placeholder -> how many in the text


class TokenizerAdapter:
    """One interface over ``tokenizers.Tokenizer`` and transformers tokenizers.

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
        # Used on every turn of every sample: encoded once here.
        self.newline: list[int] = self.encode("\n")
        self._markers = {token: self._encode_marker(token) for token in (SYSTEM, USER, ASSISTANT, END)}
        self.placeholder_ids = frozenset(self.vocab[p] for p in PLACEHOLDERS if p in self.vocab)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` with no special tokens added."""
        out = self.tokenizer.encode(text, add_special_tokens=False)
        return list(out.ids) if hasattr(out, "ids") else list(out)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def marker(self, token: str) -> list[int]:
        """A special token's id, or its text encoding if this tokenizer lacks it (HF models)."""
        return self._markers[token] if token in self._markers else self._encode_marker(token)

    def _encode_marker(self, token: str) -> list[int]:
        return [self.vocab[token]] if token in self.vocab else self.encode(token)

    def placeholder_id(self, token: str) -> int:
        if token not in self.vocab:
            raise ValueError(
                f"the tokenizer has no {token!r} token; multimodal samples need it as one special token "
                "(add it with tokenizer.add_special_tokens or use `moezoo data tokenizer`)"
            )
        return self.vocab[token]


@dataclass
class ChatTemplate:
    """Render conversations to token ids with labels masked outside assistant answers.

    Args:
        system: an optional system prompt put before the first turn.
        image_tokens, audio_tokens, video_tokens: slots each placeholder expands to.
        add_bos: start every sequence with ``<bos>`` (when the tokenizer has one).

    Example:
        >>> from moezoo.data.tokenizer import TokenizerConfig, train_tokenizer
        >>> tok = TokenizerAdapter(train_tokenizer(["What colour? red"] * 9, TokenizerConfig(vocab_size=300)))
        >>> enc = ChatTemplate(image_tokens=2).encode(
        ...     [{"from": "human", "value": "<image>\\nWhat colour?"}, {"from": "gpt", "value": "red"}], tok)
        >>> tok.decode([i for i, l in zip(enc.input_ids, enc.labels) if l != -100])
        'red<|end|>'
        >>> enc.input_ids.count(tok.vocab["<image>"]), enc.placeholders
        (2, {'<image>': 1})
    """

    system: str | None = None
    image_tokens: int = 1
    audio_tokens: int = 1
    video_tokens: int = 1
    add_bos: bool = True

    def __post_init__(self) -> None:
        check_min(self, image_tokens=1, audio_tokens=1, video_tokens=1)

    def _slots(self, placeholder: str) -> int:
        return {IMAGE: self.image_tokens, AUDIO: self.audio_tokens, VIDEO: self.video_tokens}[placeholder]

    def _content(self, text: str, tok: TokenizerAdapter, counts: dict[str, int]) -> list[int]:
        ids: list[int] = []
        for piece in _PLACEHOLDER_RE.split(text):
            if piece in PLACEHOLDERS:
                ids += [tok.placeholder_id(piece)] * self._slots(piece)
                counts[piece] = counts.get(piece, 0) + 1
            elif piece:
                ids += tok.encode(piece)
        return ids

    def _turns(self, conversations: list[dict[str, str]]) -> list[tuple[str, str]]:
        if not isinstance(conversations, list) or not conversations:
            raise ValueError("'conversations' must be a non-empty list of {'from': ..., 'value': ...} turns")
        turns = [(SYSTEM, self.system)] if self.system else []
        for i, turn in enumerate(conversations):
            role = ROLES.get(turn.get("from") if isinstance(turn, dict) else None)
            if role is None or not isinstance(turn.get("value"), str):
                raise ValueError(f"turn {i} must be {{'from': one of {sorted(ROLES)}, 'value': str}}, got {turn!r}")
            turns.append((role, turn["value"]))
        return turns

    def encode(self, conversations: list[dict[str, str]], tok: TokenizerAdapter) -> Encoded:
        """Token ids of the whole conversation; labels are ``-100`` except on assistant answers."""
        turns = self._turns(conversations)
        if not any(role == ASSISTANT for role, _ in turns):
            raise ValueError("the conversation has no assistant ('gpt') turn, so nothing to learn from")
        ids, labels, counts = self._start(tok)
        for role, head, body in self._render(turns, tok, counts):
            ids += head + body + tok.newline
            if role == ASSISTANT:  # the answer and its end marker carry loss; placeholders never do
                labels += [IGNORE_INDEX] * len(head) + [IGNORE_INDEX if t in tok.placeholder_ids else t for t in body]
                labels += [IGNORE_INDEX] * len(tok.newline)
            else:
                labels += [IGNORE_INDEX] * (len(head) + len(body) + len(tok.newline))
        return Encoded(ids, labels, counts)

    def encode_prompt(self, conversations: list[dict[str, str]] | str, tok: TokenizerAdapter) -> list[int]:
        """Ids of a prompt for generation: the turns (minus a final answer), then ``<|assistant|>\\n``.

        A plain string is one user turn.
        """
        if isinstance(conversations, str):
            conversations = [{"from": "human", "value": conversations}]
        turns = self._turns(conversations)
        if turns[-1][0] == ASSISTANT:
            turns = turns[:-1]
        ids, _, counts = self._start(tok)
        for _, head, body in self._render(turns, tok, counts):
            ids += head + body + tok.newline
        return ids + tok.marker(ASSISTANT) + tok.newline

    def _render(self, turns: list[tuple[str, str]], tok: TokenizerAdapter,
                counts: dict[str, int]) -> Iterator[tuple[str, list[int], list[int]]]:
        """``(role, head, body)`` per turn, the one rendering training and generation share:
        ``head`` is the role marker and newline, ``body`` the content and end marker (a
        newline follows each turn)."""
        for role, text in turns:
            yield role, tok.marker(role) + tok.newline, self._content(text, tok, counts) + tok.marker(END)

    def _start(self, tok: TokenizerAdapter) -> tuple[list[int], list[int], dict[str, int]]:
        ids = [tok.bos_id] if self.add_bos and tok.bos_id is not None else []
        return ids, [IGNORE_INDEX] * len(ids), {}


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
