"""What the demo page does, without Gradio: the models it offers, their cards, and one answered question.

:class:`DemoSession` keeps the last models it loaded (each load reads a checkpoint, so switching
back and forth stays quick) and answers through :func:`moezoo.eval.chat.reply`, the code path of
``moezoo chat``: the same prompt and files give the same answer in the shell and on the page. Each
answer comes with its routing view (:mod:`moezoo.demo.routing`).

Example:
    >>> "film_cnn_moe_small.flagship" in demo_models()
    True
    >>> first_model_reading("audio", demo_models())
    'uni_moe_tiny_image_audio.shapes_tones'
    >>> check_model("film_cnn_moe_smal.flagship")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: no pretrained model named 'film_cnn_moe_smal.flagship'. Did you mean ['film_cnn_moe_small.flagship', ...
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from moezoo.demo.routing import RoutedExchange, routed_exchange, routing_html
from moezoo.eval.chat import reply
from moezoo.eval.tasks import model_modalities


def demo_models() -> list[str]:
    """The shipped zoo, which loads offline: the names the page's dropdown offers."""
    import moezoo

    return moezoo.list_models(pretrained=True)


def first_model_reading(modality: str, names: list[str]) -> str | None:
    """The first of ``names`` whose registry entry reads ``modality`` (``"audio"``, say), or None."""
    from moezoo.registry.pretrained import pretrained_entries

    entries = pretrained_entries()
    return next((n for n in names if n in entries and modality in entries[n].modalities), None)


def check_model(name: str) -> str:
    """``name`` if it is a checkpoint dir or a pretrained name, else a ValueError naming the closest names."""
    from moezoo.registry.pretrained import check_pretrained

    if Path(name).is_dir():
        return name
    if "/" in name or "\\" in name:  # pretrained names are ARCH.TAG: this was meant as a folder
        raise FileNotFoundError(f"no such checkpoint dir: {name} (or give a pretrained name: "
                                "`moezoo list --pretrained`)")
    check_pretrained(name)
    return name


def strip_front_matter(card: str) -> str:
    """A model card without its YAML front matter (the Hub's metadata block between ``---`` lines).

    Example:
        >>> strip_front_matter("---\\nlicense: mit\\n---\\n# Title\\n")
        '# Title\\n'
    """
    if card.startswith("---\n") and "\n---\n" in card[3:]:
        return card[card.index("\n---\n", 3) + 5:].lstrip("\n")
    return card


def model_card(name: str) -> str:
    """The model card of ``name`` as Markdown: a shipped model's ``README.md``, a dir's own, else its facts."""
    from moezoo.registry.pretrained import pretrained_entries

    entry = pretrained_entries().get(name)
    if entry is not None and entry.source == "shipped":
        from moezoo.registry.pretrained import pretrained_dir

        path = pretrained_dir(name) / "README.md"
    else:
        path = Path(name) / "README.md"
    if path.is_file():
        return strip_front_matter(path.read_text(encoding="utf-8"))
    if entry is not None:
        from moezoo.zoo.info import pretrained_facts

        return f"# {name}\n\n" + "\n".join(f"- **{k}**: {v}" for k, v in pretrained_facts(entry).items())
    return f"# {name}\n\nThis checkpoint dir has no model card (README.md)."


@dataclass
class DemoAnswer:
    """One answered question: the text ``moezoo chat`` would print, the routing and its HTML table."""

    text: str
    routing: RoutedExchange
    html: str


class DemoSession:
    """Loads models by name (keeping the last ``keep``) and answers questions with them.

    Args:
        keep: how many loaded models to keep in memory.
    """

    def __init__(self, keep: int = 2) -> None:
        self.keep = keep
        self._models: OrderedDict[str, nn.Module] = OrderedDict()
        self._lock = threading.Lock()  # one forward at a time: the page's requests come on several threads

    def model(self, name: str) -> nn.Module:
        """The model ``name``, loaded on first use."""
        import moezoo

        if name not in self._models:
            self._models[name] = moezoo.load(check_model(name))
            while len(self._models) > self.keep:
                self._models.popitem(last=False)
        self._models.move_to_end(name)
        return self._models[name]

    def modalities(self, name: str) -> list[str]:
        """The media model ``name`` reads (``[]`` for a text model)."""
        with self._lock:
            return model_modalities(self.model(name))

    def answer(self, name: str, question: str, image: str | None = None, audio: str | None = None,
               max_new_tokens: int = 64) -> DemoAnswer:
        """Answer ``question`` about the image and audio files (paths) the model reads; media it does not
        read are left out, as the page hides their inputs.

        Raises:
            ValueError: an empty question, or a model or file the chat path refuses.
        """
        if not question or not question.strip():
            raise ValueError("ask a question")
        with self._lock:
            model = self.model(name)
            reads = model_modalities(model)
            images = [image] if image and "image" in reads else []
            audios = [audio] if audio and "audio" in reads else []
            answer = reply(model, question, images, audios, max_new_tokens=max_new_tokens)
            view = routed_exchange(model, answer)
        return DemoAnswer(answer.text, view, routing_html(view))
