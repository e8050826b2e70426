"""A small English text corpus from the docstrings of the Python standard library.

The zoo must train its tiny LMs with no network, so the corpus comes from text that
every Python install carries: the module, class and function docstrings of the
standard library (read with :mod:`ast`, so nothing is imported or executed). They are
real, edited English prose about programming, which suits a code-flavoured tiny LM.
The bytes depend on the Python version, which ``index.json`` records.
"""

from __future__ import annotations

import ast
import itertools
import random
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from moezoo.data.shards import BuildConfig, DatasetIndex, build_dataset, encode_json
from moezoo.utils.checks import check_min

# Test suites are mostly code, not prose; site-packages is not part of the stdlib.
_EXCLUDED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages", "__pycache__"})
_DOC_NODES = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass
class TextBuildConfig(BuildConfig):
    """Sizes and seed of the text corpus (the fields of :class:`~moezoo.data.shards.BuildConfig`, counted
    in documents, plus ``min_chars``: shorter docstrings are left out, as one-liners teach little).

    Example:
        >>> TextBuildConfig(n_train=0)
        Traceback (most recent call last):
        ...
        ValueError: TextBuildConfig.n_train=0 must be >= 1
    """

    n_train: int = 1500
    n_test: int = 0
    samples_per_shard: int = 500
    min_chars: int = 200

    def __post_init__(self) -> None:
        super().__post_init__()
        check_min(self, n_train=1, min_chars=0)


DEFAULT_CONFIG = TextBuildConfig()


def stdlib_root() -> Path:
    """The directory of the running interpreter's standard library."""
    return Path(sysconfig.get_paths()["stdlib"])


def iter_docstrings(root: str | Path | None = None, min_chars: int = 200) -> Iterator[tuple[str, str]]:
    """Yield ``(qualified name, docstring)`` from the ``.py`` files under ``root``, in sorted order.

    Example:
        >>> name, doc = next(iter_docstrings())
        >>> isinstance(name, str) and len(doc) >= 200
        True
    """
    root = Path(root) if root is not None else stdlib_root()
    files = sorted(p for p in root.rglob("*.py") if not _EXCLUDED_DIRS & set(p.relative_to(root).parts))
    for path in files:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue  # a few stdlib files are deliberately broken (e.g. lib2to3 test data)
        module = ".".join(path.relative_to(root).with_suffix("").parts)
        # Walk with qualified names so "json.decoder.JSONDecoder.decode" names its source.
        stack: list[tuple[ast.AST, str]] = [(tree, module)]
        while stack:
            node, name = stack.pop(0)
            doc = ast.get_docstring(node, clean=True)
            if doc and len(doc) >= min_chars:
                yield name, doc
            for child in ast.iter_child_nodes(node):
                if isinstance(child, _DOC_NODES):
                    stack.append((child, f"{name}.{child.name}"))


def build_text(out_dir: str | Path, cfg: TextBuildConfig | None = None, root: str | Path | None = None) -> DatasetIndex:
    """Build the text corpus: ``txt`` + ``json`` (source name) shards per split and ``index.json``.

    Example:
        >>> import tempfile
        >>> index = build_text(tempfile.mkdtemp(), TextBuildConfig(n_train=3, n_val=1))
        >>> index.splits["train"].samples, index.splits["val"].samples
        (3, 1)
    """
    cfg = cfg or DEFAULT_CONFIG
    sizes = cfg.split_sizes()
    wanted = sum(sizes.values())
    docs: list[tuple[str, str]] = []
    for item in iter_docstrings(root, cfg.min_chars):  # stop reading files once we have enough
        docs.append(item)
        if len(docs) == wanted:
            break
    if len(docs) < wanted:
        raise ValueError(f"the corpus has only {len(docs)} docstrings of >= {cfg.min_chars} chars; asked for {wanted}")
    random.Random(f"text/{cfg.seed}").shuffle(docs)
    starts = dict(zip(sizes, itertools.accumulate(sizes.values(), initial=0)))

    def make_split(split: str, n: int) -> Iterator[dict[str, Any]]:
        for i, (name, doc) in enumerate(docs[starts[split] : starts[split] + n]):
            yield {"__key__": f"{split}-{i:06d}", "txt": doc, "json": encode_json({"source": name})}

    extra = {"source": "Python standard library docstrings", "python": sys.version.split()[0]}
    return build_dataset(out_dir, "text", cfg, make_split, extra)
