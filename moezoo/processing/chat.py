"""Conversations as training examples: the chat template's own rendering, loss on the assistant's answers.

A training example is rendered with the model's chat template, the one
:meth:`~moezoo.processing.processor.Processor.apply_chat_template` uses at inference (the
checkpoint's own Jinja template for an imported model), so fine-tuning sees the prompt
format the model is asked in. Labels follow the LLaVA recipe (Liu et al. 2023): ``-100``
(``torch.nn.CrossEntropyLoss``'s ignore index) everywhere except on the assistant's
answers, each with its end-of-turn tokens so the model learns to stop; every assistant
turn of a multi-turn conversation carries loss, modality placeholders never do.

Which tokens are the assistant's is read off the template, not from knowing its markers.
For assistant turn ``i``::

    prompt   = render(messages[:i], add_generation_prompt=True)   # what inference sends
    answered = render(messages[:i + 1])                            # the same turn answered

The turn's span in the whole rendering runs from the end of ``prompt`` to the end of
``answered``, less the whitespace the template puts after a turn (the separator before
the next one: the ``\\n`` after ``<|end|>`` or ChatML's ``<|im_end|>``), as the
``{% generation %}`` blocks of transformers' templates mark an answer. This holds for any
template whose generation prompt is the start of the answered turn (the zoo's, LLaVA's,
ChatML, Llama's); others are refused with :class:`ConversationError`. The characters
become tokens through a fast tokenizer's offsets (a token belongs to the span it starts
in), else through the ids of the text up to each boundary.

:class:`ChatEncoding` gives the :class:`~moezoo.processing.processor.Processor` its chat methods on
these: ``apply_chat_template``, ``encode_prompt`` (inference) and ``encode_example`` (training).
Plain documents (text corpora) are windowed by :mod:`moezoo.processing.documents`.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from moezoo.processing.tokens import MODALITIES

IGNORE_INDEX = -100
# LLaVA JSON names the roles "human"/"gpt"; transformers' messages say "user"/"assistant".
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


class ConversationError(ValueError):
    """A conversation that cannot become a training example (a bad turn, no answer, a template that does
    not render the generation prompt as the start of the answered turn)."""


def to_message(message: Any, index: int, placeholders: dict[str, str], keep_parts: bool) -> dict[str, Any]:
    """One turn as a ``{"role", "content"}`` message of the chat template.

    Args:
        message: transformers' ``{"role", "content"}`` (content a string or a list of parts) or
            LLaVA's ``{"from", "value"}``.
        index: the turn's position (for the error message).
        placeholders: modality -> its placeholder, written for each media part when parts are flattened.
        keep_parts: pass a list of parts to the template as it is (checkpoint templates read parts);
            else flatten it to text with placeholders (the zoo template reads text).

    Example:
        >>> to_message({"from": "gpt", "value": "red"}, 1, {}, keep_parts=False)
        {'role': 'assistant', 'content': 'red'}
        >>> to_message({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}, 0,
        ...            {"image": "<image>"}, keep_parts=False)
        {'role': 'user', 'content': '<image>Hi'}
    """
    if isinstance(message, dict) and "from" in message:
        message = {"role": message["from"], "content": message.get("value")}
    role = ROLES.get(message.get("role")) if isinstance(message, dict) else None
    if role is None:
        raise ConversationError(f"turn {index} must be {{'role': one of {sorted(ROLES)}, 'content': str or list "
                                f"of parts}} (or LLaVA's {{'from', 'value'}}), got {message!r}")
    content = message.get("content")
    if content is None:
        content = ""
    if not isinstance(content, (str, list)):
        raise ConversationError(f"turn {index} has content of type {type(content).__name__}; expected a string "
                                "or a list of {'type': 'text' | 'image' | 'audio' | 'video', ...} parts")
    if isinstance(content, list) and not keep_parts:  # parts -> text with placeholders
        content = "".join(part.get("text", "") if part.get("type") == "text"
                          else placeholders.get(part.get("type"), "") for part in content)
    return {"role": role, "content": content}


def media_in_parts(conversation: Sequence[Any], modality: str) -> list:
    """The ``modality`` items the conversation's parts carry, in order (transformers' ``{"type": "image",
    "image" | "path" | "url": ...}``; a part without one carries none).

    Example:
        >>> media_in_parts([{"role": "user", "content": [{"type": "image", "path": "a.png"}, {"type": "image"}]}],
        ...                "image")
        ['a.png']
    """
    found = []
    for message in conversation:
        content = message.get("content") if isinstance(message, dict) else None
        for part in content if isinstance(content, list) else []:
            if isinstance(part, dict) and part.get("type") == modality:
                source = next((part[k] for k in (modality, "path", "url") if part.get(k) is not None), None)
                if source is not None:
                    found.append(source)
    return found


def conversation_media(conversation: Sequence[Any], images: Sequence | None = None, audios: Sequence | None = None,
                       videos: Sequence | None = None) -> dict[str, list | None]:
    """``{"images", "audios", "videos"}``: the media given, or else those the conversation's parts carry
    (:func:`media_in_parts`; images read by :func:`~moezoo.processing.image.load_image`).

    Raises:
        ValueError: a modality given both ways.

    Example:
        >>> conversation_media([{"role": "user", "content": [{"type": "video", "video": "a.mp4"}]}])["videos"]
        ['a.mp4']
    """
    from moezoo.processing.image import load_image

    out = {}
    for modality, given in zip(MODALITIES, (images, audios, videos)):
        carried = media_in_parts(conversation, modality)
        if carried and given is not None:
            raise ValueError(f"the conversation's parts carry {len(carried)} {modality}(s) and {modality}s= "
                             f"gives {len(given)} more; give the {modality}s one way")
        if carried and modality == "image":
            carried = [load_image(source) for source in carried]
        out[f"{modality}s"] = given if given is not None else (carried or None)
    return out


def _common_prefix(a: Sequence, b: Sequence) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text")


def assistant_spans(messages: list[dict[str, Any]], render: Callable[[list, bool], str], text: str,
                    placeholders: Sequence[str] = ()) -> list[tuple[int, int]]:
    """The ``[start, end)`` character spans of the assistant turns in ``text``: each answer and its end of turn.

    Args:
        messages: the conversation as chat-template messages (:func:`to_message`).
        render: ``(messages, add_generation_prompt) -> str``, the chat template.
        text: ``render(messages, False)``.
        placeholders: placeholder strings (left out of the check that an answer's text is in its span).

    Raises:
        ConversationError: no assistant turn; the generation prompt is not the start of the
            answered turn; an answer renders to nothing or not to its own text.

    Example:
        >>> def render(messages, prompt):  # a toy template
        ...     body = "".join(f"[{m['role'][0]}]{m['content']}.\\n" for m in messages)
        ...     return body + ("[a]" if prompt else "")
        >>> msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
        >>> text = render(msgs, False)
        >>> [text[a:b] for a, b in assistant_spans(msgs, render, text)]  # "\\n" separates turns: no loss
        ['yo.']
    """
    turns = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    if not turns:
        raise ConversationError("the conversation has no assistant turn, so nothing to learn from")
    spans = []
    for i in turns:
        prompt = render(messages[:i], True)
        if not text.startswith(prompt):  # (startswith and the lengths below are C-speed: this runs per sample)
            at = _common_prefix(prompt, text)
            raise ConversationError(
                f"the chat template's generation prompt is not the start of the answered turn {i}: rendering the "
                f"turns before it with add_generation_prompt=True ends {prompt[max(0, at - 20):][:60]!r}, but the "
                f"conversation reads {text[max(0, at - 20):][:60]!r} there; training examples need a template "
                "whose generation prompt is a prefix of the assistant's turn (the zoo's, LLaVA's, ChatML do)")
        # The answered turn may render otherwise as the last message (an eos only at the very end, say):
        # its span is what it shares with the whole conversation.
        answered = text if i + 1 == len(messages) else render(messages[: i + 1], False)
        shared = len(answered) if text.startswith(answered) else _common_prefix(answered, text)
        end = len(text[:shared].rstrip())
        span = text[len(prompt):end]
        pieces = _text_of(messages[i]["content"])
        for placeholder in placeholders:
            pieces = pieces.replace(placeholder, "\0")
        missing = [p.strip() for p in pieces.split("\0") if p.strip() and p.strip() not in span]
        if not span.strip() or missing:
            raise ConversationError(
                f"assistant turn {i} renders as {span!r} after its generation prompt, which does not hold its "
                f"answer {_text_of(messages[i]['content'])!r}; does the chat template expect the content as a list "
                "of {'type': 'text', 'text': ...} parts?")
        spans.append((len(prompt), end))
    return spans


def token_spans_by_offsets(starts: Sequence[int], spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans as token spans, from each token's start offset (a fast tokenizer's ``offset_mapping``).

    A token belongs to the span it starts in, so one that merges an answer's last characters with what
    follows is trained on, and one that merges the generation prompt's end with the answer's start too.

    Example:
        >>> token_spans_by_offsets([0, 0, 3, 5, 8], [(3, 8)])  # a BOS (0, 0) never belongs to an answer
        [(2, 4)]
    """
    out = []
    for a, b in spans:
        inside = [t for t, s in enumerate(starts) if a <= s < b]
        out.append((inside[0], inside[-1] + 1) if inside else (0, 0))
    return out


def token_spans_by_prefix(ids_of: Callable[[str], list[int]], text: str, input_ids: Sequence[int],
                          spans: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Character spans as token spans for a tokenizer without offsets: each boundary is where the ids of
    the text up to it stop agreeing with ``input_ids`` (at most a token that merges across it is lost).

    Example:
        >>> ids_of = lambda t: [ord(c) for c in t]  # one token per character
        >>> token_spans_by_prefix(ids_of, "[u]hi.[a]yo.", ids_of("[u]hi.[a]yo."), [(9, 12)])
        [(9, 12)]
    """
    return [(_common_prefix(ids_of(text[:a]), input_ids), _common_prefix(ids_of(text[:b]), input_ids))
            for a, b in spans]


def span_labels(input_ids: Sequence[int], token_spans: Sequence[tuple[int, int]],
                ignore_ids: frozenset[int] = frozenset()) -> list[int]:
    """``input_ids`` inside the token spans, ``-100`` elsewhere and on ``ignore_ids`` (the placeholders).

    Example:
        >>> span_labels([1, 5, 6, 7, 9], [(2, 4)], ignore_ids=frozenset({7}))
        [-100, -100, 6, -100, -100]
    """
    labels = [IGNORE_INDEX] * len(input_ids)
    for a, b in token_spans:
        if b <= a:
            raise ConversationError(f"an assistant span covers no token ({a}, {b}); the tokenizer merges it "
                                    "into its neighbours")
        for t in range(a, b):
            if input_ids[t] not in ignore_ids:
                labels[t] = input_ids[t]
    return labels


def example_features(text: str, spans: Sequence[tuple[int, int]], input_ids: list[int], starts: list[int] | None,
                     expand: Callable[[str], str], ids_of: Callable[[str], list[int]], media_ids: frozenset[int],
                     return_tensors: str | None, **extra: list[int]) -> dict[str, Any]:
    """The text side of a training example: ``input_ids``, ``attention_mask``, ``labels`` (and ``extra``
    per-token lists), as flat lists or ``(1, T)`` long tensors (``return_tensors="pt"``).

    ``spans`` are the answers' character spans in the rendered ``text``; ``input_ids`` are the ids of
    ``expand(text)`` (placeholders expanded), ``starts`` their start offsets in it from a fast tokenizer,
    or ``None``: the spans are then found by tokenising prefixes with ``ids_of`` (:func:`token_spans_by_prefix`).
    ``media_ids`` (the placeholders) never carry a label.

    Example:
        >>> out = example_features("ab", [(1, 2)], [7, 8], [0, 1], str, list, frozenset(), None)
        >>> out["labels"], out["attention_mask"]
        ([-100, 8], [1, 1])
    """
    if starts is not None:
        token_spans = token_spans_by_offsets(starts, [(len(expand(text[:a])), len(expand(text[:b])))
                                                      for a, b in spans])
    else:
        token_spans = token_spans_by_prefix(ids_of, text, input_ids, spans)
    features = {"input_ids": input_ids, "attention_mask": [1] * len(input_ids),
                "labels": span_labels(input_ids, token_spans, media_ids), **extra}
    if return_tensors == "pt":
        import torch

        features = {k: torch.tensor([v], dtype=torch.long) for k, v in features.items()}
    return features


def adds_special_tokens(tokenizer: Any, text: str) -> bool:
    """Whether ``text`` is tokenised with ``tokenizer``'s special tokens: not when it already starts with
    the BOS (a template that writes it), so the BOS is never doubled; yes otherwise, so a tokenizer that
    adds its BOS itself (Llama's, LLaVA-1.5's) gets it. transformers' ``apply_chat_template(tokenize=True)``
    and lm-eval's ``tok_encode`` follow the same rule; every place moezoo tokenises a prompt uses this one.

    Example:
        >>> from moezoo.processing.tokenizer import zoo_tokenizer
        >>> adds_special_tokens(zoo_tokenizer(), "<bos><|user|>\\nHi"), adds_special_tokens(zoo_tokenizer(), "Hi")
        (False, True)
    """
    bos = getattr(tokenizer, "bos_token", None)
    return not (bos and text.startswith(bos))


class ChatEncoding:
    """The :class:`~moezoo.processing.processor.Processor`'s chat methods: one rendering and one
    tokenisation of conversations for inference (:meth:`encode_prompt`) and training (:meth:`encode_example`).

    A mixin over the processor's ``tokenizer``, ``chat_template``, ``placeholders``, ``num_tokens``,
    ``__call__``, ``expand_placeholders`` and ``placeholder_ids``.
    """

    def apply_chat_template(self, conversation: list[dict[str, Any]], add_generation_prompt: bool = True,
                            **kwargs: Any) -> str:
        """Render a conversation as the model's chat prompt (a string; pass it to ``__call__``).

        ``conversation`` is a list of ``{"role", "content"}`` messages (``content`` a string
        with placeholders, or transformers' list of ``{"type": "text" | "image" | ...}`` parts)
        or LLaVA's ``{"from", "value"}`` turns.

        Example:
            >>> from moezoo.processing.processor import Processor
            >>> from moezoo.processing.tokenizer import zoo_tokenizer
            >>> proc = Processor(zoo_tokenizer(), {})
            >>> proc.apply_chat_template([{"role": "user", "content": "Hi"}])
            '<bos><|user|>\\nHi<|end|>\\n<|assistant|>\\n'
        """
        return self._render(self._messages(conversation), add_generation_prompt, **kwargs)

    def encode_prompt(self, conversation: list[dict[str, Any]], images: Sequence | None = None,
                      audios: Sequence | None = None, videos: Sequence | None = None) -> Any:
        """The model's inputs for answering ``conversation``: its rendering with the generation prompt,
        tokenised as :meth:`encode_example` tokenises a training example, so these ids are the start of the
        example of the answered conversation.

        The rendering holds the template's special tokens, so the tokenizer adds its own (a BOS) only
        when the rendering does not start with the BOS already, as transformers'
        ``processor.apply_chat_template(..., tokenize=True)`` does. Media may be given here or in the
        parts (``{"type": "image", "image" | "path": ...}``), as :meth:`encode_example` takes them.

        Example:
            >>> from moezoo.processing.processor import Processor
            >>> from moezoo.processing.tokenizer import zoo_tokenizer
            >>> proc = Processor(zoo_tokenizer(), {})
            >>> proc.batch_decode(proc.encode_prompt([{"role": "user", "content": "Hi"}])["input_ids"], False)
            ['<bos><|user|>\\nHi<|end|>\\n<|assistant|>\\n']
        """
        text = self._render(self._messages(conversation), True)
        media = conversation_media(conversation, images, audios, videos)
        return self(text=text, **media, add_special_tokens=self.adds_special_tokens(text))

    def encode_example(self, conversation: list[dict[str, Any]], images: Sequence | None = None,
                       audios: Sequence | None = None, videos: Sequence | None = None,
                       return_tensors: str | None = "pt") -> Any:
        """A training example: the answered conversation as model inputs, with labels on the answers.

        Rendered with the template :meth:`apply_chat_template` uses (the checkpoint's own for an
        imported model) and tokenised as :meth:`encode_prompt` tokenises, so ``input_ids`` are the
        processor's ids of ``apply_chat_template(conversation, add_generation_prompt=False)`` and
        start with the ids of every one of its prompts. ``labels`` are ``-100`` except on each
        assistant turn's answer and end-of-turn tokens (placeholders excepted): see
        :mod:`moezoo.processing.chat` for how they are found from the template.

        Args:
            conversation: transformers' messages (or LLaVA's ``{"from", "value"}`` turns) whose
                assistant turns are the answers to learn.
            images / audios / videos: the media, in placeholder order over the conversation; or
                leave them out and put them in the parts (``{"type": "image", "image": PIL image or
                path}``, ``"audio"``, ``"video"``; a ``"path"`` key also works).
            return_tensors: ``"pt"``, or ``None`` for ``input_ids``, ``attention_mask`` and ``labels``
                as flat lists (the media stay tensors), as ``__call__`` gives one prompt; the training
                pipeline takes lists and makes one tensor per batch.

        Returns:
            a ``BatchFeature`` with the keys of ``__call__`` (``input_ids``, ``attention_mask``,
            ``pixel_values``, ``input_features``, ``pixel_values_videos`` as given) plus
            ``labels``, each with a batch dimension of 1: ``model(**example)`` trains on it.

        Raises:
            ConversationError: a bad turn, no assistant turn, or a template whose generation prompt
                is not the start of the answered turn (a ``ValueError``).
            ValueError: the placeholders and the media disagree (as ``__call__``).

        Example:
            >>> from moezoo.processing.processor import Processor
            >>> from moezoo.processing.tokenizer import zoo_tokenizer
            >>> from PIL import Image
            >>> proc = Processor(zoo_tokenizer(), {"image": 2}, image={"kind": "simple", "size": [8, 8],
            ...                  "mean": [0.5] * 3, "std": [0.5] * 3})
            >>> enc = proc.encode_example([{"role": "user", "content": "<image>\\nWhat colour?"},
            ...                            {"role": "assistant", "content": "red"}], images=[Image.new("RGB", (9, 9))])
            >>> sorted(enc)
            ['attention_mask', 'input_ids', 'labels', 'pixel_values']
            >>> proc.decode(enc["input_ids"][0], False)
            '<bos><|user|>\\n<image><image>\\nWhat colour?<|end|>\\n<|assistant|>\\nred<|end|>\\n'
            >>> proc.decode(enc["labels"][0][enc["labels"][0] != -100], False)
            'red<|end|>'
        """
        from transformers import BatchFeature

        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors={return_tensors!r}; encode_example gives 'pt' tensors or None (lists)")
        messages = self._messages(conversation)
        text = self._render(messages, False)
        placeholders = [self.placeholders[m] for m in self.num_tokens]
        # Before the media: a template that loses the text (and its placeholders) is named as such.
        spans = assistant_spans(messages, self._render, text, placeholders)
        media = conversation_media(conversation, images, audios, videos)
        data = self.media_inputs([text], **media)
        input_ids, starts = self._tokenize(text)
        self._check_expansion([input_ids], [text])
        text_data = example_features(text, spans, input_ids, starts, self.expand_placeholders, self._ids_of,
                                     frozenset(self.placeholder_ids().values()), return_tensors)
        return BatchFeature({**data, **text_data})

    def _tokenize(self, rendered: str) -> tuple[list[int], list[int] | None]:
        """The ids ``__call__`` gives one rendered chat (placeholders expanded) and, from a fast tokenizer,
        each token's start offset in the expanded text (else ``None``).

        This runs for every training sample, where ``__call__``'s batch machinery costs as much as the
        tokenisation itself: a fast tokenizer whose backend holds no truncation or padding (what
        ``__call__`` sets for one unpadded prompt) is asked directly, giving the same ids
        (``tests/processing/test_same_prompt.py`` pins them against ``apply_chat_template``).
        """
        expanded, special = self.expand_placeholders(rendered), self.adds_special_tokens(rendered)
        backend = getattr(self.tokenizer, "_tokenizer", None) if getattr(self.tokenizer, "is_fast", False) else None
        if backend is not None and backend.truncation is None and backend.padding is None:
            encoding = backend.encode(expanded, add_special_tokens=special)
            return encoding.ids, [start for start, _ in encoding.offsets]
        if backend is not None:
            tokens = self.tokenizer(expanded, add_special_tokens=special, return_offsets_mapping=True)
            return tokens["input_ids"], [start for start, _ in tokens["offset_mapping"]]
        return self.tokenizer(expanded, add_special_tokens=special)["input_ids"], None

    def _messages(self, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if not isinstance(conversation, (list, tuple)) or not conversation:
            raise ConversationError(f"a conversation is a non-empty list of {{'role', 'content'}} messages, got "
                                    f"{conversation!r}"[:300])
        keep_parts = self.chat_template is not None  # a checkpoint's template reads parts; the zoo's reads text
        return [to_message(m, i, self.placeholders, keep_parts) for i, m in enumerate(conversation)]

    def _render(self, messages: list[dict[str, Any]], add_generation_prompt: bool, **kwargs: Any) -> str:
        template = self.chat_template or getattr(self.tokenizer, "chat_template", None)
        if not template:
            raise ValueError("neither this processor nor its tokenizer has a chat template; pass the prompt "
                             "text directly")
        return self.tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt, **kwargs)

    def adds_special_tokens(self, rendered: str) -> bool:
        """Whether a rendered chat is tokenised with the tokenizer's special tokens (``add_special_tokens``):
        not when the template already wrote the BOS, so it is never doubled; yes when it did not, so a
        tokenizer that adds its BOS itself (Llama's, LLaVA-1.5's) gets it. transformers'
        ``processor.apply_chat_template(..., tokenize=True)`` follows the same rule; tokenise rendered
        prompts by it wherever they are tokenised, as :meth:`encode_prompt` and :meth:`encode_example` do.

        Example:
            >>> from moezoo.processing.processor import Processor
            >>> from moezoo.processing.tokenizer import zoo_tokenizer
            >>> proc = Processor(zoo_tokenizer(), {})
            >>> proc.adds_special_tokens("<bos><|user|>\\nHi"), proc.adds_special_tokens("USER: Hi")
            (False, True)
        """
        return adds_special_tokens(self.tokenizer, rendered)

    def _ids_of(self, rendered: str) -> list[int]:
        """The ids of a rendered chat, as ``__call__`` gives them for it (placeholders expanded)."""
        return self.tokenizer(self.expand_placeholders(rendered),
                              add_special_tokens=self.adds_special_tokens(rendered))["input_ids"]

