"""``download_url`` against a loopback server: good, corrupt, interrupted-and-resumed, Range ignored."""

from __future__ import annotations

import hashlib

import pytest
import torch
from safetensors.torch import load_file, save

from moezoo.hub import DownloadError, VerificationError, download_url


@pytest.fixture
def payload():
    """A ~3 MB safetensors file (several 1 MB read chunks) and its sha256."""
    tensors = {"w": torch.randn(768, 1024), "b": torch.arange(5, dtype=torch.bfloat16)}
    raw = save(tensors)
    return tensors, raw, hashlib.sha256(raw).hexdigest()


def _cache_files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_good_download_loads_and_is_not_fetched_again(server, tmp_path, payload):
    tensors, raw, digest = payload
    server.files["/w/model.safetensors"] = raw
    dest = tmp_path / "cache" / "toy" / "model.safetensors"
    path = download_url(server.url("/w/model.safetensors"), dest, digest, size=len(raw), progress=False)
    assert path == dest and _cache_files(tmp_path / "cache") == ["toy/model.safetensors"]
    loaded = load_file(path)
    assert all(torch.equal(loaded[k], tensors[k]) for k in tensors)
    assert server.requests == [{"path": "/w/model.safetensors", "range": None}]
    download_url(server.url("/w/model.safetensors"), dest, digest, size=len(raw), progress=False)
    assert len(server.requests) == 1  # the right bytes are there already


def test_wrong_sha256_names_both_digests_and_leaves_nothing(server, tmp_path, payload):
    _, raw, digest = payload
    server.files["/w/model.safetensors"] = raw
    wanted = hashlib.sha256(b"other bytes").hexdigest()
    url = server.url("/w/model.safetensors")
    with pytest.raises(VerificationError) as err:
        download_url(url, tmp_path / "cache" / "model.safetensors", wanted, progress=False)
    message = str(err.value)
    assert wanted in message and digest in message and url in message and "model.safetensors" in message
    assert _cache_files(tmp_path / "cache") == []  # neither the file nor its .part


def test_truncated_transfer_resumes_with_a_range_request(server, tmp_path, payload):
    tensors, raw, digest = payload
    server.files["/w/model.safetensors"] = raw
    cut = len(raw) // 3
    server.cuts = [cut]  # the first response stops a third of the way in
    path = download_url(server.url("/w/model.safetensors"), tmp_path / "model.safetensors", digest, progress=False)
    assert [r["range"] for r in server.requests] == [None, f"bytes={cut}-"]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert torch.equal(load_file(path)["w"], tensors["w"])
    assert not (tmp_path / "model.safetensors.part").exists()


def test_a_part_left_by_an_earlier_run_is_resumed(server, tmp_path, payload):
    _, raw, digest = payload
    server.files["/w/model.safetensors"] = raw
    server.cuts = [100_000, 100_000, 100_000]
    dest = tmp_path / "model.safetensors"
    with pytest.raises(DownloadError, match="stopped after"):  # three tries, each cut short
        download_url(server.url("/w/model.safetensors"), dest, digest, retries=2, progress=False)
    part = tmp_path / "model.safetensors.part"
    assert part.stat().st_size == 300_000 and not dest.exists()
    download_url(server.url("/w/model.safetensors"), dest, digest, progress=False)  # a later run
    assert server.requests[-1]["range"] == "bytes=300000-"
    assert dest.read_bytes() == raw and not part.exists()


def test_a_server_ignoring_range_restarts_cleanly(server, tmp_path, payload):
    _, raw, digest = payload
    server.files["/w/model.safetensors"] = raw
    server.ignore_range = True
    (tmp_path / "model.safetensors.part").write_bytes(b"\0" * 1000)  # not even a prefix of the file
    path = download_url(server.url("/w/model.safetensors"), tmp_path / "model.safetensors", digest, progress=False)
    assert server.requests[0]["range"] == "bytes=1000-"  # asked, answered with the whole file (200)
    assert path.read_bytes() == raw


def test_a_part_that_is_not_a_prefix_fails_the_digest_then_restarts(server, tmp_path, payload):
    _, raw, digest = payload
    server.files["/w/model.safetensors"] = raw
    (tmp_path / "model.safetensors.part").write_bytes(b"\0" * 1000)
    with pytest.raises(VerificationError, match=digest):
        download_url(server.url("/w/model.safetensors"), tmp_path / "model.safetensors", digest, progress=False)
    assert _cache_files(tmp_path) == []
    assert download_url(server.url("/w/model.safetensors"), tmp_path / "model.safetensors", digest,
                        progress=False).read_bytes() == raw


def test_http_errors_name_the_url_and_leave_nothing(server, tmp_path):
    url = server.url("/missing.safetensors")
    with pytest.raises(DownloadError, match="404") as err:
        download_url(url, tmp_path / "x.safetensors", "0" * 64, retries=0, progress=False)
    assert url in str(err.value) and _cache_files(tmp_path) == []


def test_progress_bar_only_when_asked_or_on_a_terminal(server, tmp_path, payload, capsys):
    _, raw, digest = payload
    server.files["/w/model.safetensors"] = raw
    download_url(server.url("/w/model.safetensors"), tmp_path / "a.safetensors", digest)  # stderr is no tty here
    assert capsys.readouterr().err == ""
    download_url(server.url("/w/model.safetensors"), tmp_path / "b.safetensors", digest, progress=True)
    assert "b.safetensors" in capsys.readouterr().err
