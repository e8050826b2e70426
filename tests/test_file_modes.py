"""Files moezoo writes get the permissions ``open(path, "w")`` gives under the user's umask, and stay atomic."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import moezoo
from moezoo.utils.io import atomic_write_text, file_mode, temporary_dir


@pytest.fixture
def umask():
    """``umask(value)`` sets the process umask for this test; the old one is restored afterwards."""
    before = os.umask(0o022)
    os.umask(before)
    yield os.umask
    os.umask(before)


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in sorted(root.rglob("*"))}


def _plain_open_mode(root: Path) -> int:
    """The mode a file made with ``open(path, "w")`` gets here, now: the reference."""
    probe = root / "probe.txt"
    with open(probe, "w") as f:
        f.write("x")
    mode = stat.S_IMODE(probe.stat().st_mode)
    probe.unlink()
    return mode


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
@pytest.mark.parametrize("format", ["moezoo", "hf"])
def test_exported_model_files_have_the_umask_mode(tmp_path, umask, format, mask, expected):
    model = moezoo.create_model("moe_lm_tiny")
    umask(mask)
    assert _plain_open_mode(tmp_path) == expected  # the reference: what open(path, "w") gives
    out = model.save_pretrained(tmp_path / "model", format=format)
    files = {name: mode for name, mode in _modes(Path(out)).items() if (Path(out) / name).is_file()}
    assert "config.json" in files or "moezoo_config.json" in files
    assert any(name.endswith(".safetensors") for name in files)
    assert files == {name: expected for name in files}
    assert not [p for p in Path(out).iterdir() if p.name.endswith(".tmp")]  # no temporary file left behind
    assert moezoo.load(out) is not None


def test_a_replaced_file_keeps_its_mode_as_open_would(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "kept.json"
    atomic_write_text(path, "{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o640)
    with open(path, "w") as f:  # the reference: truncating keeps the bits
        f.write("{}")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    atomic_write_text(path, '{"a": 1}')
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == '{"a": 1}'


def test_file_mode_reads_the_umask_without_changing_it(umask):
    umask(0o027)
    assert file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # still what the test set


def test_a_built_dataset_dir_is_as_readable_as_mkdir_makes_it(tmp_path, umask, monkeypatch):
    from moezoo.data.builders import cached_build

    umask(0o022)
    built = temporary_dir(tmp_path, prefix=".x-")
    assert stat.S_IMODE(built.stat().st_mode) == 0o755
    monkeypatch.setenv("MOEZOO_CACHE", str(tmp_path / "cache"))
    path = cached_build("text", n_train=2, n_val=0)
    (tmp_path / "reference").mkdir()
    assert stat.S_IMODE(path.stat().st_mode) == stat.S_IMODE((tmp_path / "reference").stat().st_mode) == 0o755
    assert set(_modes(path).values()) <= {0o755, 0o644}
