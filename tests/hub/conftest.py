"""Fixtures of the download tests: private caches, a loopback HTTP server, a hub-cache layout.

Nothing here reaches the network: the server listens on 127.0.0.1 only, ``HF_HUB_OFFLINE`` is
set unless a test turns it off around a faked ``snapshot_download``, and every cache variable
points into the test's own temporary folder.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest


@pytest.fixture
def caches(tmp_path, monkeypatch):
    """Private moezoo and hub caches, offline: ``.moezoo`` ($MOEZOO_CACHE) and ``.hf`` ($HF_HUB_CACHE)."""
    dirs = SimpleNamespace(moezoo=tmp_path / "moezoo-cache", hf=tmp_path / "hf-cache")
    monkeypatch.setenv("MOEZOO_CACHE", str(dirs.moezoo))
    monkeypatch.setenv("HF_HUB_CACHE", str(dirs.hf))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return dirs


@dataclass
class FileServer:
    """What the loopback server serves, how it misbehaves, and what it was asked."""

    base: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    cuts: list[int] = field(default_factory=list)  # the next responses stop after this many bytes
    ignore_range: bool = False  # answer every request with 200 and the whole file

    def url(self, path: str) -> str:
        return self.base + path


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802  (http.server's name)
        state: FileServer = self.server.state
        wanted = self.headers.get("Range")
        state.requests.append({"path": self.path, "range": wanted})
        body = state.files.get(self.path)
        if body is None:
            self.send_error(404, "no such file")
            return
        start, status = 0, 200
        if wanted and not state.ignore_range:
            start, status = int(wanted.removeprefix("bytes=").split("-")[0]), 206
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        payload = body[start:]
        self.send_response(status)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        if state.cuts:  # send part of the body, then drop the connection
            self.wfile.write(payload[:state.cuts.pop(0)])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args):  # keep the test output clean
        pass


@pytest.fixture
def server():
    """A ``FileServer`` on 127.0.0.1 (an ephemeral port), shut down after the test."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = FileServer(base=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def git_blob_id(data: bytes) -> str:
    """The git object id of ``data``, computed independently of moezoo.hub."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def make_snapshot(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], ref: str | None = "main") -> Path:
    """Lay out ``files`` as huggingface_hub's cache does; return ``snapshots/COMMIT``.

    Blobs are named by their ETag: the sha256 of an LFS file (here: ``.safetensors``), the git
    blob id of a small one; the snapshot holds relative links to them, and ``refs/REF`` the commit.
    """
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for rel, data in files.items():
        name = hashlib.sha256(data).hexdigest() if rel.endswith(".safetensors") else git_blob_id(data)
        blob = repo / "blobs" / name
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref).write_text(commit)
    return snapshot


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A tiny moezoo checkpoint's files (path -> bytes) and the model they hold."""
    from moezoo.models.lm import LMConfig, MoEForCausalLM

    model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
    folder = Path(model.save_pretrained(tmp_path / "tiny"))
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
    return SimpleNamespace(files=files, model=model)


@pytest.fixture
def make_hub_snapshot():
    """:func:`make_snapshot`, for tests (conftest modules are not importable under importlib mode)."""
    return make_snapshot
