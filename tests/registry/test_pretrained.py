"""Pretrained entries: the PretrainedCfg contract, registration, lookup errors, and the shipped manifests."""

from __future__ import annotations

import json

import pytest

import moezoo
from moezoo.registry import PretrainedCfg, PretrainedFile, pretrained_cfg, register_pretrained
from moezoo.registry.pretrained import pretrained_dir, unregister_pretrained
from moezoo.registry.shipped import manifest_text, read_manifest, shipped_entries, verify_shipped


@pytest.fixture
def hub_entry():
    cfg = register_pretrained(PretrainedCfg("moe_lm_tiny.registry_test", "hf", "example/moe", revision="a" * 40,
                                            params_total=10, files=(PretrainedFile("model.safetensors", 20),)))
    yield cfg
    unregister_pretrained(cfg.name)


def test_the_entry_checks_its_name_and_source_and_round_trips():
    with pytest.raises(ValueError, match=r"name 'moe_lm_tiny' must be 'arch.tag'"):
        PretrainedCfg("moe_lm_tiny", "shipped", "x")
    with pytest.raises(ValueError, match=r"source 'ftp' is not one of \('shipped', 'hf', 'url'\)"):
        PretrainedCfg("a.b", "ftp", "x")
    cfg = PretrainedCfg("a.b", "shipped", "a.b", files=(PretrainedFile("w", 3, "ab"),), modalities=("image", "text"),
                        metrics={"t": {"acc": 0.5}}, history=({"revision": "1", "files": {"w": "cd"}},))
    assert PretrainedCfg.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(ValueError, match=r"unknown keys \['sha'\]"):
        PretrainedCfg.from_dict({**cfg.to_dict(), "sha": 1})


def test_registering_listing_and_looking_up(hub_entry):
    assert hub_entry.name in moezoo.list_models("moe_lm_tiny.*", pretrained=True, downloadable=True)
    assert hub_entry.name not in moezoo.list_models("moe_lm_tiny.*", pretrained=True)  # no weights here
    assert pretrained_cfg(hub_entry.name) is hub_entry
    register_pretrained(hub_entry)  # the same entry again: a no-op
    with pytest.raises(ValueError, match="registered twice with different entries"):
        register_pretrained(PretrainedCfg(hub_entry.name, "hf", "example/other"))
    with pytest.raises(ValueError, match=r"no pretrained model named 'moe_lm_tiny.registry_tst'\. Did you mean "
                                         r"\['moe_lm_tiny.registry_test'"):  # the closest name first
        pretrained_cfg("moe_lm_tiny.registry_tst")
    with pytest.raises(ValueError, match=r"moezoo\.load\('moe_lm_tiny.registry_test'\)"):
        moezoo.create_model(hub_entry.name, pretrained=True)  # downloads go through moezoo.load
    with pytest.raises(ValueError, match="is downloaded .*, not shipped"):
        pretrained_dir(hub_entry.name)


def test_unknown_names_and_paths_in_load():
    with pytest.raises(ValueError, match=r"no pretrained model named 'mm_tiny_clip.v9'.*create_model\('mm_tiny_clip'\)"):
        moezoo.load("mm_tiny_clip.v9")
    with pytest.raises(FileNotFoundError, match=r"no such directory: no_dir/model"):
        moezoo.load("no_dir/model")
    with pytest.raises(FileNotFoundError, match="no such directory"):
        moezoo.load(".hidden_model")


def _write(root, cfg):
    (root / cfg.location).mkdir(parents=True, exist_ok=True)
    (root / cfg.location / "pretrained.json").write_text(manifest_text(cfg))


def test_manifests_are_read_lazily_and_again_when_they_change(tmp_path):
    cfg = PretrainedCfg("moe_lm_tiny.m1", "shipped", "moe_lm_tiny.m1", description="first")
    _write(tmp_path, cfg)
    (tmp_path / ".moe_lm_tiny.m2.tmp-abc").mkdir()  # a publish in progress is not an entry
    (tmp_path / "README.md").write_text("the zoo")
    assert shipped_entries(tmp_path) == {cfg.name: cfg}
    changed = PretrainedCfg("moe_lm_tiny.m1", "shipped", "moe_lm_tiny.m1", description="second, longer")
    _write(tmp_path, changed)
    assert shipped_entries(tmp_path)[cfg.name].description == "second, longer"


def test_malformed_manifests_say_what_is_wrong(tmp_path):
    _write(tmp_path, PretrainedCfg("moe_lm_tiny.a", "shipped", "moe_lm_tiny.b"))
    (tmp_path / "moe_lm_tiny.b").rename(tmp_path / "moe_lm_tiny.a")
    with pytest.raises(ValueError, match=r"must have source 'shipped' and location 'moe_lm_tiny.a'"):
        read_manifest(tmp_path / "moe_lm_tiny.a")
    (tmp_path / "moe_lm_tiny.a" / "pretrained.json").write_text('{"manifest_version": 9, "entry": {}}')
    with pytest.raises(ValueError, match="manifest version 9; this moezoo reads <= 1"):
        read_manifest(tmp_path / "moe_lm_tiny.a")
    (tmp_path / "moe_lm_tiny.a" / "pretrained.json").write_text("{")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_manifest(tmp_path / "moe_lm_tiny.a")


def test_a_missing_file_or_dir_is_named(tmp_path):
    cfg = PretrainedCfg("moe_lm_tiny.c", "shipped", "moe_lm_tiny.c", files=(PretrainedFile("model.safetensors", 4),))
    with pytest.raises(FileNotFoundError, match="its dir .*moe_lm_tiny.c is missing"):
        verify_shipped(cfg, tmp_path)
    _write(tmp_path, cfg)
    with pytest.raises(FileNotFoundError, match=r"moe_lm_tiny.c/model.safetensors: missing\. Restore it"):
        verify_shipped(cfg, tmp_path)
