"""The README's multimodal example runs as written (in a scratch dir)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_multimodal_example_runs(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Multimodal MoE models", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "mm-ckpt" / "moezoo_config.json").is_file()
    assert (tmp_path / "llava-hf" / "config.json").is_file()
    capsys.readouterr()
