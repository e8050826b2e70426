"""Deterministic webdataset shards and the ``index.json`` of a dataset directory.

Shards follow the webdataset layout (``KEY.png``, ``KEY.json`` ... in one tar) and
are written with :class:`webdataset.TarWriter`. Every source of run-to-run noise is
pinned so the same seed gives the same bytes: tar members carry mtime 0 and a fixed
owner, members are sorted by key (TarWriter sorts the fields of a sample), PNGs are
written without time chunks, JSON with sorted keys, and the gzip header has mtime 0.

A dataset directory holds the shards of each split plus ``index.json``::

    {"name": "shapes-vqa", "seed": 0, "splits": {"train": {"shards": [...], "samples": N}}}
"""

from __future__ import annotations

import gzip
import io
import json
import math
import tarfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from moezoo.shipped import data_root
from moezoo.utils.checks import check_min
from moezoo.utils.io import atomic_write_bytes, atomic_write_text

INDEX_FILE = "index.json"
# Bumped when the bytes written for the same samples change (2: ustar headers, no PAX), so caches rebuild.
SHARD_FORMAT = 2
# webdataset's key/extension split (``base_plus_ext``) cuts at the first dot of the
# member name, so keys must not contain dots; these are also safe on every filesystem.
KEY_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")


def encode_png(image) -> bytes:
    """Encode a PIL image as PNG bytes with no time or text chunks (reproducible).

    Example:
        >>> from PIL import Image
        >>> encode_png(Image.new("RGB", (2, 2)))[:8]
        b'\\x89PNG\\r\\n\\x1a\\n'
    """
    buf = io.BytesIO()
    # PIL writes no tIME chunk unless asked; compress_level is fixed so zlib output is too.
    image.save(buf, format="PNG", compress_level=9)
    return buf.getvalue()


def encode_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, UTF-8.

    Example:
        >>> encode_json({"b": 1, "a": [1, 2]})
        b'{"a":[1,2],"b":1}'
    """
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def check_key(key: str) -> str:
    """Return ``key`` if it is a valid sample key, else raise ``ValueError``.

    Example:
        >>> check_key("train-000001")
        'train-000001'
        >>> check_key("a.b")
        Traceback (most recent call last):
        ...
        ValueError: sample key 'a.b' may only contain letters, digits, '_' and '-'
    """
    if not key or not set(key) <= KEY_CHARS:
        raise ValueError(f"sample key {key!r} may only contain letters, digits, '_' and '-'")
    return key


def tar_bytes(samples: Iterable[dict[str, Any]]) -> bytes:
    """Serialise samples (``{"__key__": str, EXT: bytes | str}``) into reproducible tar bytes.

    Example:
        >>> data = tar_bytes([{"__key__": "a", "txt": "hi"}])
        >>> data == tar_bytes([{"__key__": "a", "txt": "hi"}])
        True
    """
    import webdataset as wds

    buf = io.BytesIO()
    # encoder=False: fields are already bytes/str, so TarWriter adds no guessing of its own.
    # mtime an int: a float one makes tarfile write a PAX header before every member, which doubles
    # the header parsing each read pays (about 0.1 ms a sample).
    writer = wds.TarWriter(buf, encoder=False, mtime=0, user="moezoo", group="moezoo", mode=0o444)
    for sample in samples:
        check_key(sample["__key__"])
        writer.write({k: v.encode("utf-8") if isinstance(v, str) and k != "__key__" else v for k, v in sample.items()})
    writer.close()
    return buf.getvalue()


def write_shard(path: str | Path, samples: Iterable[dict[str, Any]]) -> int:
    """Write one shard atomically; gzip it (with a zero mtime) when ``path`` ends in ``.gz``.

    Returns the size in bytes.
    """
    data = tar_bytes(samples)
    if str(path).endswith(".gz"):
        data = gzip.compress(data, compresslevel=9, mtime=0)
    atomic_write_bytes(path, data)
    return len(data)


@dataclass
class SplitInfo:
    """The shards of one split and how many samples they hold."""

    shards: list[str]
    samples: int


def write_split(
    out_dir: str | Path, split: str, samples: Iterable[dict[str, Any]], samples_per_shard: int = 500
) -> SplitInfo:
    """Write ``samples`` as ``out_dir/{split}-NNNNNN.tar.gz`` shards of ``samples_per_shard`` each.

    Example:
        >>> import tempfile
        >>> info = write_split(tempfile.mkdtemp(), "val", ({"__key__": f"k{i}", "txt": "x"} for i in range(5)), 2)
        >>> info.shards, info.samples
        (['val-000000.tar.gz', 'val-000001.tar.gz', 'val-000002.tar.gz'], 5)
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard={samples_per_shard} must be >= 1")
    out_dir = Path(out_dir)
    shards: list[str] = []
    total = 0
    for chunk in _chunks(samples, samples_per_shard):
        name = f"{split}-{len(shards):06d}.tar.gz"
        write_shard(out_dir / name, chunk)
        shards.append(name)
        total += len(chunk)
    return SplitInfo(shards=shards, samples=total)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def shard_count(n: int, samples_per_shard: int) -> int:
    """Number of shards ``write_split`` makes for ``n`` samples.

    Example:
        >>> shard_count(1000, 300)
        4
    """
    return math.ceil(n / samples_per_shard)


@dataclass
class DatasetIndex:
    """The ``index.json`` of a dataset directory.

    Args:
        name: dataset name, e.g. ``"shapes-vqa"``.
        splits: split name -> its shards and sample count.
        seed: the generator seed (``None`` for converted data).
        extra: free-form provenance (generator arguments, source files).
        root: the directory, set by :meth:`load`; shard paths are relative to it.

    Example:
        >>> index = DatasetIndex("toy", {"train": SplitInfo(["train-000000.tar.gz"], 3)})
        >>> index.urls("train", root="/d")
        ['/d/train-000000.tar.gz']
        >>> index.urls("test", root="/d")
        Traceback (most recent call last):
        ...
        KeyError: "dataset 'toy' has no split 'test'; it has: train"
    """

    name: str
    splits: dict[str, SplitInfo]
    seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    root: Path | None = None

    def urls(self, split: str, root: str | Path | None = None) -> list[str]:
        """Absolute shard paths of ``split``."""
        if split not in self.splits:
            raise KeyError(f"dataset {self.name!r} has no split {split!r}; it has: {', '.join(self.splits)}")
        base = Path(root if root is not None else self.root or ".")
        return [str(base / s) for s in self.splits[split].shards]

    def save(self, out_dir: str | Path) -> Path:
        """Write ``out_dir/index.json`` (sorted keys, so it is reproducible too)."""
        body = {
            "name": self.name,
            "seed": self.seed,
            "splits": {k: {"shards": v.shards, "samples": v.samples} for k, v in self.splits.items()},
            "extra": self.extra,
        }
        path = Path(out_dir) / INDEX_FILE
        atomic_write_text(path, json.dumps(body, indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def load(cls, root: str | Path) -> DatasetIndex:
        """Read ``root/index.json``; a clear error says what is missing."""
        root = Path(root)
        path = root / INDEX_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} not found: a dataset dir needs an {INDEX_FILE} (make one with `moezoo data build` "
                "or `moezoo data from-llava`)"
            )
        try:
            body = json.loads(path.read_text())
            splits = {k: SplitInfo(list(v["shards"]), int(v["samples"])) for k, v in body["splits"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path} is not a valid dataset index ({err!r}); rebuild the dataset") from err
        return cls(body.get("name", root.name), splits, body.get("seed"), body.get("extra", {}), root)


def read_split(root: str | Path, split: str, limit: int | None = None) -> Iterator[dict[str, Any]]:
    """The samples of ``split`` in shard order: ``{"__key__": key, ext: bytes, ...}``.

    Plain ``tarfile`` (no webdataset), for evaluation and tools that read a split once, in
    order; training streams through :mod:`moezoo.data.pipeline` instead. ``limit`` stops early.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = write_shard(d / "test-000000.tar.gz", [{"__key__": "a", "txt": b"hi"}, {"__key__": "b", "txt": b"yo"}])
        >>> _ = DatasetIndex("toy", {"test": SplitInfo(["test-000000.tar.gz"], 2)}).save(d)
        >>> [s["txt"] for s in read_split(d, "test")]
        [b'hi', b'yo']
    """
    index = DatasetIndex.load(root)
    count = 0
    for url in index.urls(split, root):
        sample: dict[str, Any] = {}
        with tarfile.open(url) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if sample and key != sample["__key__"]:  # members of one sample are adjacent
                    yield sample
                    count += 1
                    if limit is not None and count >= limit:
                        return
                    sample = {}
                sample.setdefault("__key__", key)
                sample[ext] = tar.extractfile(member).read()
        if sample:
            yield sample
            count += 1
            if limit is not None and count >= limit:
                return


def shipped_dataset(name: str) -> Path:
    """The directory of a shipped dataset: under the repository's ``data/``, the installed
    package's copy of it, or ``$MOEZOO_DATA`` (see :mod:`moezoo.shipped`).

    Example:
        >>> shipped_dataset("shapes-vqa").name
        'shapes-vqa'
    """
    root = data_root()
    path = root / name
    if not (path / INDEX_FILE).is_file():
        known = sorted(p.name for p in root.glob("*") if (p / INDEX_FILE).is_file()) if root.is_dir() else []
        raise FileNotFoundError(
            f"no shipped dataset {name!r} under {root} (found: {', '.join(known) or 'none'}); build it with "
            f"`moezoo data build {name} --out {path}` or set MOEZOO_DATA to the folder holding it"
        )
    return path


@dataclass
class BuildConfig:
    """Seed, split sizes and shard size: what every generated dataset's config holds.

    Each dataset subclasses it with its own fields and defaults
    (:class:`~moezoo.data.vqa.VQABuildConfig`, :class:`~moezoo.data.text.TextBuildConfig`).

    Args:
        seed: the generator seed; the same seed gives the same bytes.
        n_train, n_val, n_test: samples per split; a split of 0 is not written.
        samples_per_shard: samples per ``.tar.gz`` shard.

    Example:
        >>> BuildConfig(n_test=0).split_sizes()
        {'train': 1000, 'val': 100}
    """

    seed: int = 0
    n_train: int = 1000
    n_val: int = 100
    n_test: int = 200
    samples_per_shard: int = 250

    def __post_init__(self) -> None:
        check_min(self, n_train=0, n_val=0, n_test=0, samples_per_shard=1)

    def split_sizes(self) -> dict[str, int]:
        """Split name -> number of samples, in build order; empty splits are left out."""
        sizes = {"train": self.n_train, "val": self.n_val, "test": self.n_test}
        return {k: v for k, v in sizes.items() if v > 0}


def build_dataset(
    out_dir: str | Path,
    name: str,
    cfg: BuildConfig,
    make_split: Callable[[str, int], Iterable[dict[str, Any]]],
    extra: dict[str, Any] | None = None,
    after_split: Callable[[str, list[dict[str, Any]]], None] | None = None,
) -> DatasetIndex:
    """Write every split of ``cfg`` with ``make_split(split, n)``, then ``index.json``.

    ``after_split(split, records)`` runs after each split's shards are written (e.g.
    to write evaluation JSON beside them). The index records ``cfg`` under
    ``extra["config"]``, so a dataset dir says how it was made.

    Example:
        >>> import tempfile
        >>> make = lambda split, n: ({"__key__": f"{split}-{i}", "txt": "hi"} for i in range(n))
        >>> index = build_dataset(tempfile.mkdtemp(), "toy", BuildConfig(n_train=3, n_val=0, n_test=1), make)
        >>> {k: v.samples for k, v in index.splits.items()}
        {'train': 3, 'test': 1}
    """
    splits = {}
    for split, n in cfg.split_sizes().items():
        records = list(make_split(split, n))
        splits[split] = write_split(out_dir, split, records, cfg.samples_per_shard)
        if after_split is not None:
            after_split(split, records)
    index = DatasetIndex(name, splits, cfg.seed, {"config": asdict(cfg), **(extra or {})})
    index.save(out_dir)
    return index
