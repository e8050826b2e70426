"""The shipped pretrained models: one ``checkpoints/ARCH.TAG/`` folder each, described by its manifest.

Each model dir holds its checkpoint (``model.safetensors``, ``moezoo_config.json``, the processor and
tokenizer files, or a ``tokenizer_ref.json`` naming the zoo tokenizer), its model card
(``README.md``) and ``pretrained.json``, the manifest::

    {"manifest_version": 1,
     "entry": {"name": "film_cnn_moe_small.quickstart", "source": "shipped",
               "location": "film_cnn_moe_small.quickstart", "revision": "1",
               "files": [{"path": "model.safetensors", "size": 4718592, "sha256": "9f2c..."}, ...],
               "license": "apache-2.0", "modalities": ["image", "text"], "metrics": {...}, ...}}

The entry is a :class:`~moezoo.registry.entry.PretrainedCfg` as JSON. The manifests are read on the
first lookup, not on ``import moezoo``, and read again when one changes (a stat per model dir).
:func:`verify_shipped` checks every file's size and sha256, and that the dir holds no file the
manifest does not list, before a byte of weights is read. ``$MOEZOO_CHECKPOINTS`` points the zoo
elsewhere (:func:`moezoo.shipped.checkpoints_root`).

Example:
    >>> import tempfile
    >>> shipped_entries(Path(tempfile.mkdtemp()))
    {}
"""

from __future__ import annotations

import json
from pathlib import Path

from moezoo.registry.entry import PretrainedCfg
from moezoo.shipped import checkpoints_root
from moezoo.utils.digest import check_file

MANIFEST_NAME = "pretrained.json"
MANIFEST_VERSION = 1

_CACHE: dict[str, tuple[tuple, dict[str, PretrainedCfg]]] = {}  # root -> (manifest stats, entries)


def read_manifest(model_dir: str | Path) -> PretrainedCfg:
    """The entry in ``model_dir/pretrained.json``, checked against the dir it sits in.

    Raises:
        ValueError: the manifest is not valid JSON, is of a newer version, is not a shipped entry, or
            names another dir.
    """
    model_dir = Path(model_dir)
    file = model_dir / MANIFEST_NAME
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON ({err}); restore it (`git checkout -- {file}` in a clone, "
                         "or reinstall moezoo)") from None
    version = data.get("manifest_version") if isinstance(data, dict) else None
    if not isinstance(version, int) or "entry" not in data:
        raise ValueError(f"{file} is not a moezoo pretrained manifest (expected keys manifest_version, entry)")
    if version > MANIFEST_VERSION:
        raise ValueError(f"{file} has manifest version {version}; this moezoo reads <= {MANIFEST_VERSION}: "
                         "upgrade moezoo")
    cfg = PretrainedCfg.from_dict(data["entry"])
    if cfg.source != "shipped" or cfg.location != model_dir.name:
        raise ValueError(f"{file} describes a {cfg.source!r} entry at {cfg.location!r}; a shipped manifest must "
                         f"have source 'shipped' and location {model_dir.name!r} (its own dir)")
    return cfg


def manifest_text(cfg: PretrainedCfg) -> str:
    """The ``pretrained.json`` text of ``cfg`` (what :func:`read_manifest` reads back).

    Example:
        >>> import json
        >>> json.loads(manifest_text(PretrainedCfg("a.b", "shipped", "a.b")))["entry"]["location"]
        'a.b'
    """
    return json.dumps({"manifest_version": MANIFEST_VERSION, "entry": cfg.to_dict()}, indent=2) + "\n"


def _model_dirs(root: Path) -> list[Path]:
    """The model dirs under ``root``: those with a manifest (publishing's hidden temporary dirs excluded)."""
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if not d.name.startswith(".") and (d / MANIFEST_NAME).is_file())


def shipped_entries(root: str | Path | None = None) -> dict[str, PretrainedCfg]:
    """Name -> entry of every model under ``root`` (default :func:`~moezoo.shipped.checkpoints_root`).

    Read once and again only when a manifest is added, removed or changed.

    Raises:
        ValueError: a manifest is malformed, or two dirs claim the same name.
    """
    root = Path(root) if root is not None else checkpoints_root()
    dirs = _model_dirs(root)
    key = tuple((d.name, *_stat(d / MANIFEST_NAME)) for d in dirs)
    cached = _CACHE.get(str(root))
    if cached is not None and cached[0] == key:
        return dict(cached[1])
    entries: dict[str, PretrainedCfg] = {}
    for model_dir in dirs:
        cfg = read_manifest(model_dir)
        if cfg.name in entries:
            raise ValueError(f"{model_dir} and {root / entries[cfg.name].location} both ship {cfg.name!r}")
        entries[cfg.name] = cfg
    _CACHE[str(root)] = (key, entries)
    return dict(entries)


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def restore_hint(path: Path) -> str:
    """How to get a shipped file back."""
    return (f"Restore it (in a clone: `git checkout -- {path}`; installed: `pip install --force-reinstall "
            "--no-deps moezoo`), or publish the retrained model as a new revision (`moezoo zoo publish ... "
            "--new-revision`).")


def verify_shipped(cfg: PretrainedCfg, root: str | Path | None = None) -> Path:
    """Check the files of shipped entry ``cfg`` and return its dir; nothing in it is read as weights first.

    Every listed file must have its recorded size and sha256; the dir may hold no other file than the
    manifest; a ``tokenizer_ref.json`` must name a shared tokenizer whose files have the digests it records.

    Raises:
        FileNotFoundError: the dir or a listed file is missing.
        moezoo.utils.digest.DigestMismatch: a size or sha256 differs (the path and both values are named).
        ValueError: an unlisted file is in the dir.
    """
    from moezoo.processing.tokenizer import TOKENIZER_REF, tokenizer_dir

    root = Path(root) if root is not None else checkpoints_root()
    model_dir = root / cfg.location
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{cfg.name}: its dir {model_dir} is missing; reinstall moezoo "
                                "(`pip install --force-reinstall --no-deps moezoo`)")
    for file in cfg.files:
        path = model_dir / file.path
        check_file(path, size=file.size, sha256=file.sha256, restore=restore_hint(path))
    listed = {f.path for f in cfg.files} | {MANIFEST_NAME}
    extra = sorted(p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*")
                   if p.is_file() and p.relative_to(model_dir).as_posix() not in listed)
    if extra:
        raise ValueError(f"{model_dir} holds files its manifest does not list: {extra}; remove them, or publish "
                         "the model again (`moezoo zoo publish ... --new-revision`) to record them")
    if TOKENIZER_REF in listed:
        tokenizer_dir(model_dir)  # checks the shared tokenizer's digests
    return model_dir
