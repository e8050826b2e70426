"""Shared helpers: atomic saves and the config checks' wording."""

import pytest

from moezoo.utils.checks import check_min, require
from moezoo.utils.io import atomic_save_pretrained


class _Saver:
    """Writes two files with ``save_pretrained``; optionally fails after the first."""

    def __init__(self, text: str, fail: bool = False):
        self.text, self.fail = text, fail

    def save_pretrained(self, out_dir):
        from pathlib import Path

        (Path(out_dir) / "a.json").write_text(self.text)
        if self.fail:
            raise OSError("disk full")
        (Path(out_dir) / "b.json").write_text(self.text)


def test_atomic_save_pretrained_keeps_the_old_files_when_saving_fails(tmp_path):
    atomic_save_pretrained(_Saver("old"), tmp_path)
    with pytest.raises(OSError, match="disk full"):
        atomic_save_pretrained(_Saver("new", fail=True), tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.json": "old", "b.json": "old"}
    atomic_save_pretrained(_Saver("new"), tmp_path)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.json": "new", "b.json": "new"}


def test_config_checks_name_the_class_field_and_value():
    from moezoo.moe import MoEConfig

    with pytest.raises(ValueError, match=r"^MoEConfig\.top_k=9 must be in \[1, num_experts=8\]$"):
        MoEConfig(dim=8, expert_dim=8, num_experts=8, top_k=9)
    cfg = MoEConfig(dim=8, expert_dim=8, num_experts=8, top_k=2)
    with pytest.raises(ValueError, match=r"^MoEConfig\.top_k=2 must be >= 3$"):
        check_min(cfg, num_experts=1, top_k=3)
    require(cfg, "top_k", True, "unused")  # no error when the condition holds
