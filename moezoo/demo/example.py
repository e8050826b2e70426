"""The demo's preloaded examples, drawn by the shipped datasets' own generators (the same every time).

- The image: the first scene of the shapes-vqa test split (:func:`moezoo.data.scenes.posed_split`,
  seed 0), asked its question with the short-answer instruction, as ``moezoo eval shapes_vqa`` asks
  it: "What colour is the triangle?" (a blue triangle beside two squares).
- The audio, for a model that hears: the first clip of the tones-qa test split
  (:func:`moezoo.data.tones.generate_split`), "How many beeps are there?".

Example:
    >>> import tempfile
    >>> files = write_examples(tempfile.mkdtemp())
    >>> files.image_question.splitlines()[0], files.image.endswith(".png")
    ('What colour is the triangle?', True)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from moezoo.data.phrasing import render
from moezoo.data.scenes import TRAIN_PHRASINGS, draw_scene, posed_split
from moezoo.data.tones import DEFAULT_CONFIG as TONES
from moezoo.data.tones import generate_split as tones_split
from moezoo.data.vqa import vqa_prompt


@dataclass(frozen=True)
class ExampleFiles:
    """The example files written to a folder and their questions (each with the short-answer instruction)."""

    image: str
    image_question: str
    image_answer: str
    audio: str
    audio_question: str
    audio_answer: str


def write_examples(folder: str | Path) -> ExampleFiles:
    """Write ``example_shapes.png`` and ``example_tones.wav`` into ``folder``; return their paths and questions."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    scene, _, posed = next(posed_split("test", 1, seed=0))
    image = folder / "example_shapes.png"
    draw_scene(scene).save(image)
    sample = next(tones_split("test", 1, TONES))
    audio = folder / "example_tones.wav"
    audio.write_bytes(sample["wav"])
    body = json.loads(sample["json"])
    question = render(TRAIN_PHRASINGS[posed.form][0], posed.slots)  # the test split's template
    return ExampleFiles(str(image), vqa_prompt(question), posed.answer,
                        str(audio), vqa_prompt(body["question"]), body["answer"])
