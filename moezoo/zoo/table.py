"""The README's zoo table, generated from the registry: every pretrained entry, shipped and downloaded.

``moezoo zoo table --write`` puts :func:`zoo_table` between the README's markers; a test fails when the
README's table is not what :func:`zoo_table` gives now.

Example:
    >>> print(readme_with_table("intro\\n<!-- zoo-table:start -->\\nold\\n<!-- zoo-table:end -->\\n", "| new |"))
    intro
    <!-- zoo-table:start -->
    | new |
    <!-- zoo-table:end -->
    <BLANKLINE>
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from moezoo.utils.io import atomic_write_text
from moezoo.zoo.results import headline

START, END = "<!-- zoo-table:start -->", "<!-- zoo-table:end -->"


def human_count(n: int | None) -> str:
    """``2_345_678`` -> ``'2.3 M'``, ``46_702_792_704`` -> ``'46.7 B'``; ``None`` -> ``'?'``.

    Example:
        >>> human_count(2_345_678), human_count(46_702_792_704), human_count(950)
        ('2.3 M', '46.7 B', '950')
    """
    if n is None:
        return "?"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return str(n)


def table_row(cfg: Any) -> list[str]:
    """One entry's cells: name, source, modalities, parameters (total / active), router, headline."""
    top = headline(cfg)
    where = "shipped" if cfg.source == "shipped" else \
        f"{cfg.source}: `{cfg.location}`" + (f" (`{cfg.subfolder}`)" if cfg.subfolder else "")
    return [f"`{cfg.name}`", where, ", ".join(cfg.modalities),
            f"{human_count(cfg.params_total)} / {human_count(cfg.params_active)}",
            cfg.architecture.get("router", "—"), f"{top[0]} {top[1]} {top[2]:.3f}" if top else "—"]


def zoo_table(entries: dict[str, Any] | None = None) -> str:
    """The zoo table (Markdown) of ``entries`` (default: every registered pretrained model), shipped first.

    Example:
        >>> print(zoo_table({}))
        No pretrained models are registered yet.
    """
    if entries is None:
        from moezoo.registry.pretrained import pretrained_entries

        entries = pretrained_entries()
    if not entries:
        return "No pretrained models are registered yet."
    ordered = sorted(entries.values(), key=lambda c: (c.source != "shipped", c.name))
    lines = ["| model | source | modalities | params (total / active) | router | headline |",
             "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(table_row(cfg)) + " |" for cfg in ordered]
    if not any(cfg.source == "shipped" for cfg in ordered):
        lines.append("\nNo model ships yet: the trained ones are added by `moezoo zoo publish`.")
    return "\n".join(lines)


def readme_with_table(text: str, table: str) -> str:
    """``text`` with what lies between the zoo-table markers replaced by ``table``.

    Raises:
        ValueError: the markers are missing or out of order.
    """
    start, end = text.find(START), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no zoo table markers: put {START} and {END} where the table goes")
    return f"{text[:start + len(START)]}\n{table}\n{text[end:]}"


def write_readme_table(readme: str | Path) -> bool:
    """Rewrite the zoo table in ``readme``; whether it changed."""
    readme = Path(readme)
    text = readme.read_text()
    new = readme_with_table(text, zoo_table())
    if new != text:
        atomic_write_text(readme, new)
    return new != text
