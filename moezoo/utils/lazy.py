"""Package attributes imported on first use (PEP 562), so importing a package stays cheap."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_attributes(package: str, table: dict[str, str],
                    namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` whose names in ``table`` come from the modules it maps them to.

    Example:
        >>> ns = {}
        >>> getattr_, dir_ = lazy_attributes("pkg", {"dedent": "textwrap"}, ns)
        >>> getattr_("dedent")("  x"), "dedent" in ns, "dedent" in dir_()
        ('x', True, True)
    """

    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(importlib.import_module(table[name]), name)
            namespace[name] = value  # imported once: later lookups find it in the package
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__
