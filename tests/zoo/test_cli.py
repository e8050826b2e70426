"""``moezoo list --pretrained``, ``moezoo info NAME`` and ``moezoo zoo publish | verify | table``."""

from __future__ import annotations

import re

import pytest

from moezoo.cli import main
from moezoo.registry import PretrainedCfg, PretrainedFile, register_pretrained
from moezoo.registry.pretrained import unregister_pretrained
from moezoo.registry.shipped import read_manifest


@pytest.fixture
def hub_entry():
    cfg = register_pretrained(PretrainedCfg(
        "moe_lm_tiny.zoo_cli_test", "hf", "example/tiny-moe", revision="0" * 40, params_total=3_000_000_000,
        files=(PretrainedFile("model.safetensors", size=6_000_000_000),), license="apache-2.0"))
    yield cfg
    unregister_pretrained(cfg.name)


def test_list_pretrained_shows_source_modalities_and_headline(zoo, published, hub_entry, capsys):
    assert main(["list", "--pretrained"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "source", "modalities", "params", "headline"]
    mine = next(line for line in lines if line.startswith(published.name)).split()
    assert mine[1:3] == ["shipped", "image,text"] and mine[5] == "shapes_vqa"
    assert next(line for line in lines if line.startswith(hub_entry.name)).split()[1:5] == ["hf", "text", "3.0", "B"]
    assert main(["list", "no_such_*", "--pretrained"]) == 0
    assert "no pretrained models match 'no_such_*'" in capsys.readouterr().out


def test_info_shows_the_cards_facts(zoo, published, capsys):
    cfg = read_manifest(published.root / published.name)
    assert main(["info", published.name]) == 0
    out = capsys.readouterr().out
    weights = next(f for f in cfg.files if f.path == "model.safetensors")
    for text in (f"revision {cfg.revision}", f"{cfg.params_total:,}", "router", "softmax", "apache-2.0",
                 f"{weights.size:,} bytes, sha256 {weights.sha256[:16]}", "shapes_vqa vqa_accuracy",
                 f"(N={published.limit})", "majority", "configs/quickstart.yaml"):
        assert text in out, text


def test_info_on_a_hub_entry_says_whether_it_fits(hub_entry, capsys):
    assert main(["info", hub_entry.name]) == 0
    out = capsys.readouterr().out
    assert re.search(r"download size +6\.0 GB", out) and re.search(r"memory needed +6\.0 GB", out)
    assert "this machine" in out and "fit" in out
    assert main(["info", "moe_lm_tiny.zoo_cli_tst"]) == 2
    assert "Did you mean ['moe_lm_tiny.zoo_cli_test'" in capsys.readouterr().err  # the closest name first


def test_zoo_publish_verify_and_table_commands(trained_dir, tmp_path, monkeypatch, capsys):
    root = tmp_path / "zoo"
    assert main(["zoo", "publish", str(trained_dir), "--name", "mm_tiny_cnn.cli", "--tasks", "text_mc",
                 "--limit", "4", "--root", str(root), "--description", "From the CLI."]) == 0
    out = capsys.readouterr().out
    assert f"published mm_tiny_cnn.cli revision 1 in {root / 'mm_tiny_cnn.cli'}" in out
    assert "git add" in out
    assert read_manifest(root / "mm_tiny_cnn.cli").description == "From the CLI."
    monkeypatch.setenv("MOEZOO_CHECKPOINTS", str(root))
    assert main(["zoo", "verify"]) == 0
    assert "ok   text_mc acc" in capsys.readouterr().out
    assert main(["zoo", "table"]) == 0
    assert "`mm_tiny_cnn.cli` | shipped" in capsys.readouterr().out
    assert main(["zoo", "publish", str(trained_dir), "--name", "mm_tiny_cnn.cli", "--tasks", "text_mc",
                 "--limit", "4", "--bf16", "--root", str(root)]) == 2  # other bytes under a published name
    assert "--new-revision" in capsys.readouterr().err
