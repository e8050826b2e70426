"""``fetch_pretrained``: url entries from a loopback server, hf entries from a hub-cache layout."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

import moezoo
from moezoo.hub import SnapshotNotFoundError, VerificationError, fetch_pretrained
from moezoo.hub.cache import marker_path
from moezoo.registry.pretrained import PretrainedCfg, PretrainedFile


def _url_entry(server, files: dict[str, bytes], name: str = "toy_arch.v1") -> PretrainedCfg:
    for rel, data in files.items():
        server.files[f"/zoo/{name}/{rel}"] = data
    return PretrainedCfg(name=name, source="url", location=server.url(f"/zoo/{name}"),
                         files=tuple(PretrainedFile(rel, len(data), hashlib.sha256(data).hexdigest())
                                     for rel, data in files.items()))


def test_url_entry_downloads_verifies_and_loads(caches, server, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # URL entries download unless offline
    cfg = _url_entry(server, tiny_checkpoint.files)
    folder = fetch_pretrained(cfg, progress=False)
    assert folder == caches.moezoo / "models" / "url" / cfg.name
    model = moezoo.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  tiny_checkpoint.model.state_dict().values()))
    asked = len(server.requests)
    assert asked == len(tiny_checkpoint.files)
    assert fetch_pretrained(cfg, progress=False) == folder and len(server.requests) == asked  # marker: no requests
    recorded = json.loads(marker_path(f"url/{cfg.name}").read_text())["files"]
    assert {rel: r["sha256"] for rel, r in recorded.items()} == {f.path: f.sha256 for f in cfg.files}


def test_url_entry_repinned_downloads_again(caches, server, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    fetch_pretrained(_url_entry(server, tiny_checkpoint.files), progress=False)
    files = dict(tiny_checkpoint.files, **{"moezoo_config.json": tiny_checkpoint.files["moezoo_config.json"] + b"\n"})
    folder = fetch_pretrained(_url_entry(server, files), progress=False)
    assert (folder / "moezoo_config.json").read_bytes() == files["moezoo_config.json"]


def test_url_entry_serving_other_bytes_fails(caches, server, tiny_checkpoint, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    cfg = _url_entry(server, tiny_checkpoint.files)
    server.files[f"/zoo/{cfg.name}/model.safetensors"] = b"not the pinned bytes"
    with pytest.raises(VerificationError, match="model.safetensors"):
        fetch_pretrained(cfg, progress=False)
    assert not (caches.moezoo / "models" / "url" / cfg.name / "model.safetensors").exists()


def test_url_entry_offline_and_uncached(caches, server, tiny_checkpoint):
    cfg = _url_entry(server, tiny_checkpoint.files)
    with pytest.raises(SnapshotNotFoundError, match=f"moezoo.load\\('{cfg.name}'\\)"):
        fetch_pretrained(cfg)
    assert server.requests == []


def test_url_entry_needs_every_sha256(caches):
    cfg = PretrainedCfg(name="toy_arch.v1", source="url", location="http://127.0.0.1:9/none",
                        files=(PretrainedFile("model.safetensors", 3),))
    with pytest.raises(ValueError, match="needs a sha256 for every file"):
        fetch_pretrained(cfg)


def test_hf_entry_found_in_the_hub_cache(caches, tiny_checkpoint, make_hub_snapshot):
    commit = "a" * 40
    snapshot = make_hub_snapshot(caches.hf, "toy-org/Tiny", commit, tiny_checkpoint.files)
    size = len(tiny_checkpoint.files["model.safetensors"])
    cfg = PretrainedCfg(name="toy_arch.hub", source="hf", location="toy-org/Tiny", revision=commit,
                        files=(PretrainedFile("moezoo_config.json"), PretrainedFile("model.safetensors", size)))
    assert fetch_pretrained(cfg) == snapshot
    assert isinstance(moezoo.load(fetch_pretrained(cfg)), torch.nn.Module)


def test_hf_entry_without_revision_is_refused(caches):
    cfg = PretrainedCfg(name="toy_arch.hub", source="hf", location="toy-org/Tiny")
    with pytest.raises(ValueError, match="toy_arch.hub: no pinned revision recorded for hub repo toy-org/Tiny"):
        fetch_pretrained(cfg)


def test_shipped_entries_are_not_downloaded():
    with pytest.raises(ValueError, match="not downloaded"):
        fetch_pretrained(PretrainedCfg(name="toy_arch.shipped", source="shipped", location="toy_arch.shipped"))
