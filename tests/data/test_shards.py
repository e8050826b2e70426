"""Shard writing is byte-for-byte reproducible, and a dataset index fails clearly."""

from __future__ import annotations

import hashlib
import tarfile

import pytest

from moezoo.data.digits import build_digits_vqa
from moezoo.data.scenes import build_shapes_vqa
from moezoo.data.shards import DatasetIndex, tar_bytes, write_split
from moezoo.data.text import TextBuildConfig, build_text
from moezoo.data.vqa import VQABuildConfig


def _digest(root) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir())}


SMALL = dict(n_train=12, n_val=3, n_test=5, n_captions=4, samples_per_shard=5)


@pytest.mark.parametrize(
    "build, cfg",
    [
        (build_shapes_vqa, VQABuildConfig(seed=1, **SMALL)),
        (build_digits_vqa, VQABuildConfig(seed=1, image_size=32, **SMALL)),
        (build_text, TextBuildConfig(seed=1, n_train=6, n_val=2, samples_per_shard=4)),
    ],
    ids=["shapes-vqa", "digits-vqa", "text"],
)
def test_same_seed_same_bytes(tmp_path, build, cfg):
    build(tmp_path / "a", cfg)
    build(tmp_path / "b", cfg)
    a, b = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert a == b
    assert any(name.endswith(".tar.gz") for name in a)
    cfg.seed = 2
    build(tmp_path / "c", cfg)
    assert _digest(tmp_path / "c") != a


def test_tar_members_are_pinned():
    data = tar_bytes([{"__key__": "b", "json": b"{}", "png": b"x"}, {"__key__": "a", "txt": "hi"}])
    import io

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == ["b.json", "b.png", "a.txt"]  # fields sorted, samples in given order
    assert {(m.mtime, m.uname, m.gname, m.mode) for m in members} == {(0, "moezoo", "moezoo", 0o444)}
    assert not any(m.pax_headers for m in members)  # plain ustar headers: a PAX one per member doubles reading


def test_write_split_and_index_roundtrip(tmp_path):
    info = write_split(tmp_path, "train", ({"__key__": f"s{i}", "txt": str(i)} for i in range(7)), 3)
    assert info.samples == 7 and len(info.shards) == 3
    DatasetIndex("toy", {"train": info}, seed=4).save(tmp_path)
    index = DatasetIndex.load(tmp_path)
    assert index.seed == 4 and index.urls("train") == [str(tmp_path / s) for s in info.shards]


def test_bad_keys_and_indexes_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="may only contain"):
        tar_bytes([{"__key__": "a.b", "txt": "x"}])
    with pytest.raises(FileNotFoundError, match="index.json"):
        DatasetIndex.load(tmp_path)
    (tmp_path / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid dataset index"):
        DatasetIndex.load(tmp_path)
