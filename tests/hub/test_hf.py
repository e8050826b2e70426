"""Hub snapshots: found offline in a hub-cache layout the test builds, verified once, then size-checked.

The layout is huggingface_hub's (``models--ORG--NAME/{blobs,snapshots/COMMIT,refs/main}``, blobs
named by sha256 or git blob id); the online path runs against a faked ``snapshot_download`` and
``HfApi.model_info`` that serve the same layout and metadata, so nothing reaches the network.
"""

from __future__ import annotations

import hashlib
import json
from types import SimpleNamespace

import huggingface_hub
import pytest
import torch
from huggingface_hub.hf_api import BlobLfsInfo, RepoSibling

import moezoo
from moezoo.hub import (DEFAULT_PATTERNS, SnapshotNotFoundError, VerificationError, fetch_snapshot,
                        find_snapshot)
from moezoo.hub.cache import marker_path


REPO = "toy-org/Tiny-MoE"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _marker(subfolder: str = ""):
    return marker_path(f"models--toy-org--Tiny-MoE/{COMMIT}" + (f"--{subfolder}" if subfolder else ""))


def git_blob_id(data: bytes) -> str:
    """The git object id of ``data``, as the hub reports a small file's ``blob_id``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def test_offline_finds_the_hub_cache_entry_and_it_loads(caches, tiny_checkpoint, make_hub_snapshot):
    snapshot = make_hub_snapshot(caches.hf, REPO, COMMIT, tiny_checkpoint.files)
    folder = fetch_snapshot(REPO, COMMIT)
    assert folder == snapshot
    model = moezoo.load(folder)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                  tiny_checkpoint.model.state_dict().values()))
    marker = json.loads(_marker().read_text())
    assert marker["revision"] == COMMIT and set(marker["files"]) == set(tiny_checkpoint.files)
    for rel, data in tiny_checkpoint.files.items():
        assert marker["files"][rel]["sha256"] == hashlib.sha256(data).hexdigest()
        assert marker["files"][rel]["checked"].endswith("(hub cache blob name)")
    assert fetch_snapshot(REPO, "main") == snapshot  # a branch resolves through refs/main


def test_moezoo_cache_is_searched_too(caches, tiny_checkpoint, make_hub_snapshot):
    snapshot = make_hub_snapshot(caches.moezoo / "models" / "hub", REPO, COMMIT, tiny_checkpoint.files)
    assert find_snapshot(REPO, COMMIT) == snapshot
    assert fetch_snapshot(REPO, COMMIT) == snapshot


def test_offline_and_not_cached_says_what_and_how(caches):
    with pytest.raises(SnapshotNotFoundError) as err:
        fetch_snapshot(REPO, COMMIT)
    message = str(err.value)
    assert REPO in message and COMMIT in message and "HF_HUB_OFFLINE" in message
    assert str(caches.hf) in message and str(caches.moezoo / "models" / "hub") in message
    assert f"python -m moezoo.hub {REPO} --revision {COMMIT}" in message


def test_an_incomplete_snapshot_names_the_missing_shard(caches, make_hub_snapshot):
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                       "b": "model-00002-of-00002.safetensors"}}).encode()
    make_hub_snapshot(caches.hf, REPO, COMMIT, {"config.json": b"{}", "model.safetensors.index.json": index,
                                            "model-00001-of-00002.safetensors": b"x" * 10})
    assert find_snapshot(REPO, COMMIT) is None
    with pytest.raises(SnapshotNotFoundError, match="model-00002-of-00002.safetensors"):
        fetch_snapshot(REPO, COMMIT)


def test_a_corrupt_blob_fails_with_both_digests(caches, tiny_checkpoint, make_hub_snapshot):
    snapshot = make_hub_snapshot(caches.hf, REPO, COMMIT, tiny_checkpoint.files)
    weights = (snapshot / "model.safetensors").resolve()
    good = hashlib.sha256(weights.read_bytes()).hexdigest()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(VerificationError) as err:
        fetch_snapshot(REPO, COMMIT)
    assert good in str(err.value) and hashlib.sha256(bytes(data)).hexdigest() in str(err.value)
    assert "model.safetensors" in str(err.value) and not _marker().exists()


def test_the_marker_spares_rehashing_but_catches_a_size_change(caches, tiny_checkpoint, make_hub_snapshot):
    snapshot = make_hub_snapshot(caches.hf, REPO, COMMIT, tiny_checkpoint.files)
    fetch_snapshot(REPO, COMMIT)
    recorded = _marker().read_text()
    weights = (snapshot / "model.safetensors").resolve()
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes: only a re-hash would notice
    weights.write_bytes(bytes(data))
    assert fetch_snapshot(REPO, COMMIT) == snapshot  # sizes only: passes, and nothing was re-verified
    assert _marker().read_text() == recorded
    weights.write_bytes(bytes(data) + b"\0")
    with pytest.raises(VerificationError, match=f"{len(data) + 1:,} bytes but {len(data):,}"):
        fetch_snapshot(REPO, COMMIT)


def test_subfolders_and_safetensors_only(caches, tiny_checkpoint, make_hub_snapshot):
    files = {f"llm/{rel}": data for rel, data in tiny_checkpoint.files.items()}
    files["pytorch_model.bin"] = b"pickled"
    files["llm/pytorch_model.bin"] = b"pickled"
    snapshot = make_hub_snapshot(caches.hf, REPO, COMMIT, files)
    folder = fetch_snapshot(REPO, COMMIT, subfolder="llm")
    assert folder == snapshot / "llm"
    recorded = json.loads(_marker("llm").read_text())["files"]
    assert set(recorded) == {f"llm/{rel}" for rel in tiny_checkpoint.files}  # no pickle, nothing outside llm/
    with pytest.raises(ValueError, match="safetensors only"):
        fetch_snapshot(REPO, COMMIT, allow_patterns=("*.bin",))


def test_entry_files_and_sizes_are_required(caches, tiny_checkpoint, make_hub_snapshot):
    make_hub_snapshot(caches.hf, REPO, COMMIT, tiny_checkpoint.files)
    with pytest.raises(SnapshotNotFoundError, match="tokenizer.json"):
        fetch_snapshot(REPO, COMMIT, files={"tokenizer.json": None})
    size = len(tiny_checkpoint.files["model.safetensors"])
    with pytest.raises(VerificationError, match=f"expected {size + 1:,}"):
        fetch_snapshot(REPO, COMMIT, files={"model.safetensors": size + 1})
    assert fetch_snapshot(REPO, COMMIT, files={"model.safetensors": size}).is_dir()


def test_no_revision_is_refused():
    with pytest.raises(ValueError, match="no pinned revision recorded"):
        fetch_snapshot(REPO, None)


@pytest.fixture
def fake_hub(caches, monkeypatch, tiny_checkpoint, make_hub_snapshot):
    """Online, with ``snapshot_download`` and ``HfApi.model_info`` answering from memory."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    hub = SimpleNamespace(calls=[], files=dict(tiny_checkpoint.files), sha256={})

    def snapshot_download(repo_id, *, revision, allow_patterns, ignore_patterns, cache_dir, **_):
        hub.calls.append(dict(repo_id=repo_id, revision=revision, allow_patterns=allow_patterns,
                              ignore_patterns=ignore_patterns, cache_dir=cache_dir))
        return str(make_hub_snapshot(caches.hf, repo_id, revision, hub.files, ref=None))

    def model_info(self, repo_id, *, revision, files_metadata, **_):
        assert files_metadata and revision == COMMIT
        siblings = []
        for rel, data in hub.files.items():
            if rel.endswith(".safetensors"):
                sha = hub.sha256.get(rel, hashlib.sha256(data).hexdigest())
                siblings.append(RepoSibling(rel, len(data), git_blob_id(data),
                                            BlobLfsInfo(size=len(data), sha256=sha, pointer_size=134)))
            else:
                siblings.append(RepoSibling(rel, len(data), git_blob_id(data)))
        return SimpleNamespace(siblings=siblings)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    return hub


def test_online_downloads_safetensors_only_and_verifies_against_the_hub(caches, fake_hub):
    folder = fetch_snapshot(REPO, COMMIT)
    (call,) = fake_hub.calls
    assert call["allow_patterns"] == list(DEFAULT_PATTERNS) and "*.bin" in call["ignore_patterns"]
    assert call["cache_dir"] == str(caches.hf)
    assert folder == caches.hf / "models--toy-org--Tiny-MoE" / "snapshots" / COMMIT
    checked = {rel: r["checked"] for rel, r in json.loads(_marker().read_text())["files"].items()}
    assert checked == {"model.safetensors": "sha256 (hub metadata)", "moezoo_config.json": "git-sha1 (hub metadata)"}
    fetch_snapshot(REPO, COMMIT)
    assert len(fake_hub.calls) == 1  # cached now


def test_online_digest_mismatch_with_the_hub(caches, fake_hub):
    fake_hub.sha256["model.safetensors"] = "f" * 64
    with pytest.raises(VerificationError, match="f" * 64 + r" \(hub metadata\)"):
        fetch_snapshot(REPO, COMMIT)


def test_the_printed_command_fetches_and_reports(caches, tiny_checkpoint, make_hub_snapshot, capsys):
    from moezoo.hub.__main__ import main

    assert main([REPO, "--revision", COMMIT]) == 1  # offline, not cached: the error, not a traceback
    assert "not in the hub caches" in capsys.readouterr().err
    snapshot = make_hub_snapshot(caches.hf, REPO, COMMIT, tiny_checkpoint.files)
    assert main([REPO, "--revision", COMMIT]) == 0
    assert capsys.readouterr().out.strip() == str(snapshot) and _marker().exists()
