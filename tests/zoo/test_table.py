"""The README's zoo table is generated from the registry and must be current."""

from __future__ import annotations

from pathlib import Path

from moezoo.zoo.table import END, START, readme_with_table, zoo_table

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_zoo_table_is_current(monkeypatch):
    monkeypatch.delenv("MOEZOO_CHECKPOINTS", raising=False)
    text = README.read_text()
    assert START in text and END in text
    current = text[text.index(START) + len(START):text.index(END)].strip("\n")
    assert current == zoo_table(), "the README's zoo table is stale: run `moezoo zoo table --write README.md`"
    assert readme_with_table(text, zoo_table()) == text


def test_a_published_model_gets_its_row(zoo, published):
    table = zoo_table()
    row = next(line for line in table.splitlines() if f"`{published.name}`" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["shipped", "image, text", cells[3], "softmax"]
    assert cells[3].endswith("K") and " / " in cells[3]  # tens of thousands of parameters, total / active
    assert cells[5].startswith("shapes_vqa vqa_accuracy ")
    assert f"`{published.name}`" in table.splitlines()[2]  # shipped rows first
