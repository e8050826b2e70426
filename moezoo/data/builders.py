"""The dataset generators by name, and fresh training data built once into a cache.

``moezoo data build NAME`` and :class:`~moezoo.train.datamodule.ShardDataModule`'s
``train_data`` option both build through :func:`build_named`. Generated data is deterministic
for its config, so a cached build is reused whenever the same config asks again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from moezoo.data.shards import INDEX_FILE, SHARD_FORMAT, DatasetIndex
from moezoo.utils.io import temporary_dir

# dataset -> the module that builds it: its ``DEFAULT_CONFIG`` and its builder function.
DATASETS = {
    "shapes-vqa": ("moezoo.data.scenes", "build_shapes_vqa"),
    "digits-vqa": ("moezoo.data.digits", "build_digits_vqa"),
    "tones-qa": ("moezoo.data.tones", "build_tones_qa"),
    "text": ("moezoo.data.text", "build_text"),
}


def build_config(name: str, **fields: Any) -> Any:
    """``name``'s ``DEFAULT_CONFIG`` with ``fields`` replaced; unknown names or fields are ``ValueError``s.

    Example:
        >>> build_config("shapes-vqa", n_train=10).n_train
        10
        >>> build_config("shapes-vqa", n_frames=3)
        Traceback (most recent call last):
        ...
        ValueError: n_frames does not apply to dataset 'shapes-vqa'; its fields: seed, n_train, n_val, n_test, samples_per_shard, n_captions, image_size, phrasings
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    default = importlib.import_module(DATASETS[name][0]).DEFAULT_CONFIG
    known = [f.name for f in dataclasses.fields(default)]
    unknown = sorted(set(fields) - set(known))
    if unknown:
        raise ValueError(f"{', '.join(unknown)} does not apply to dataset {name!r}; its fields: {', '.join(known)}")
    return dataclasses.replace(default, **fields)


def build_named(name: str, out: str | Path, **fields: Any) -> DatasetIndex:
    """Build dataset ``name`` (its default config with ``fields`` replaced) into ``out``."""
    config = build_config(name, **fields)
    module, builder = DATASETS[name]
    return getattr(importlib.import_module(module), builder)(out, config)


def cache_root() -> Path:
    """Where built training data is kept: ``$MOEZOO_CACHE/data``, else ``~/.cache/moezoo/data``."""
    return Path(os.environ.get("MOEZOO_CACHE") or Path.home() / ".cache" / "moezoo") / "data"


def cached_build(name: str, **fields: Any) -> Path:
    """The dir of dataset ``name`` built with ``fields``: built once (into a temporary dir renamed
    into place, so an interrupted build leaves nothing half-written), then reused.

    Example:
        >>> import tempfile; before = os.environ.get("MOEZOO_CACHE"); os.environ["MOEZOO_CACHE"] = tempfile.mkdtemp()
        >>> path = cached_build("shapes-vqa", n_train=4, n_val=0, n_test=0, n_captions=0)
        >>> path == cached_build("shapes-vqa", n_train=4, n_val=0, n_test=0, n_captions=0), DatasetIndex.load(path).splits["train"].samples
        (True, 4)
        >>> _ = os.environ.pop("MOEZOO_CACHE") if before is None else os.environ.update(MOEZOO_CACHE=before)
    """
    config = build_config(name, **fields)
    keyed = {**dataclasses.asdict(config), "shard_format": SHARD_FORMAT}  # a new format is a new build
    generator = getattr(importlib.import_module(DATASETS[name][0]), "GENERATOR_VERSION", 1)
    if generator > 1:  # so is a generator that writes other samples for the same config
        keyed["generator"] = generator
    key = hashlib.sha256(json.dumps(keyed, sort_keys=True).encode()).hexdigest()[:12]
    path = cache_root() / f"{name}-{key}"
    if (path / INDEX_FILE).is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_dir(path.parent, prefix=f".{name}-")  # becomes the cache dir: mkdir's mode, not 0700
    try:
        build_named(name, tmp, **fields)
        try:
            tmp.rename(path)
        except OSError:  # another process finished the same build first: keep theirs
            if not (path / INDEX_FILE).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path
