"""The pretrained entry: where the weights of an ``arch.tag`` name are and what they must hash to.

A :class:`PretrainedCfg` names one set of weights (timm's ``arch.tag``) and says where they
come from: ``"shipped"`` (a folder under ``checkpoints/``, carried by the wheel), ``"hf"`` (a
Hugging Face Hub repo at a pinned commit) or ``"url"`` (plain downloads). Each file is a
:class:`PretrainedFile` with its size and sha256, checked before a byte of weights is read.
The rest are the facts a model card gives. :mod:`moezoo.registry.pretrained` registers and
looks them up.

Example:
    >>> cfg = PretrainedCfg(name="toy_arch.demo", source="url", location="https://example.org/toy",
    ...                     files=(PretrainedFile("model.safetensors", size=4, sha256="0" * 64),))
    >>> cfg.arch, cfg.tag, cfg.download_size
    ('toy_arch', 'demo', 4)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

SOURCES = ("shipped", "hf", "url")


@dataclass(frozen=True)
class PretrainedFile:
    """One file of a pretrained entry.

    Attributes:
        path: relative to the model dir / repo root (or its ``subfolder``).
        size: in bytes.
        sha256: hex digest; ``None`` for hub entries (recorded from the hub's metadata at download).
    """

    path: str
    size: int | None = None
    sha256: str | None = None


@dataclass(frozen=True)
class PretrainedCfg:
    """A named set of pretrained weights (one ``arch.tag``) and the facts a card gives about it.

    Attributes:
        name: timm-style ``"arch.tag"``.
        source: ``"shipped"``, ``"hf"`` or ``"url"``.
        location: shipped: the dir under ``checkpoints/``; hf: the repo id; url: the base URL.
        files: every file with its size and sha256.
        revision: hf: the pinned 40-hex commit, or a branch (``"main"``) for a release no public source pins a
            commit of: its first fetch locks the commit it gets (:mod:`moezoo.hub.lock`); shipped: ``"1"``,
            ``"2"``, ... (bumped on retraining).
        subfolder: a folder inside the repo / URL that holds the files.
        license: the weights' licence (an SPDX id where there is one).
        modalities: e.g. ``("image", "text")``.
        params_total: all parameters.
        params_active: parameters used per token (top-k experts).
        metrics: task -> metric -> value, as ``moezoo eval`` gives them on the stored bytes.
        description: one line.
        tasks: the eval tasks the metrics come from (``moezoo eval --tasks``).
        eval_limit: the ``--limit`` the metrics were measured with (``None``: the whole split).
        counts: task -> metric -> the number of questions behind that figure (its tolerance is 1/N).
        baselines: task -> baseline name (``"blank"``, ``"majority"``) -> metric -> value.
        architecture: facts for the zoo table and the card: experts, top_k, router, moe_sites, ...
        recipe: how it was trained and stored: config, seed, steps, wall_time_s, final_train_loss, machine,
            datasets, seeds (per-seed metrics), notes, weights_dtype.
        history: earlier revisions, newest last: ``{"revision": ..., "files": {path: sha256}}``.
    """

    name: str
    source: str
    location: str
    files: tuple[PretrainedFile, ...] = ()
    revision: str | None = None
    subfolder: str | None = None
    license: str = ""
    modalities: tuple[str, ...] = ("text",)
    params_total: int | None = None
    params_active: int | None = None
    metrics: dict = field(default_factory=dict)
    description: str = ""
    tasks: tuple[str, ...] = ()
    eval_limit: int | None = None
    counts: dict = field(default_factory=dict)
    baselines: dict = field(default_factory=dict)
    architecture: dict = field(default_factory=dict)
    recipe: dict = field(default_factory=dict)
    history: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"PretrainedCfg {self.name!r}: source {self.source!r} is not one of {SOURCES}")
        arch, dot, tag = self.name.partition(".")
        if not (arch and dot and tag):
            raise ValueError(f"PretrainedCfg name {self.name!r} must be 'arch.tag' (timm's naming)")

    @property
    def arch(self) -> str:
        """The architecture part of the name."""
        return self.name.partition(".")[0]

    @property
    def tag(self) -> str:
        """The tag part of the name."""
        return self.name.partition(".")[2]

    @property
    def download_size(self) -> int | None:
        """The files' total size in bytes, ``None`` when any size is unknown."""
        sizes = [f.size for f in self.files]
        return None if not sizes or None in sizes else sum(sizes)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples as lists); :meth:`from_dict` reads it back."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PretrainedCfg":
        """The entry a :meth:`to_dict` dict describes; unknown keys are an error naming the known ones.

        Example:
            >>> cfg = PretrainedCfg("a.b", "shipped", "a.b", files=(PretrainedFile("x", 1, "ab"),))
            >>> PretrainedCfg.from_dict(cfg.to_dict()) == cfg
            True
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"pretrained entry {data.get('name')!r} has unknown keys {unknown}; known: {sorted(known)}")
        data = dict(data)
        data["files"] = tuple(PretrainedFile(**f) for f in data.get("files", ()))
        for key in ("modalities", "tasks", "history"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)
