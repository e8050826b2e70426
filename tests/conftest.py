"""Shared pytest fixtures: seeds, threads, and small generated datasets with a tokenizer trained on them."""

from __future__ import annotations

import json
import tarfile

import pytest
import torch

from moezoo.data.scenes import build_shapes_vqa
from moezoo.data.text import TextBuildConfig, build_text
from moezoo.data.tokenizer import TokenizerConfig, build_tokenizer
from moezoo.data.vqa import VQABuildConfig

SHAPES_CFG = VQABuildConfig(seed=3, n_train=60, n_val=10, n_test=15, n_captions=10, samples_per_shard=20)


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("shapes-vqa")
    build_shapes_vqa(out, SHAPES_CFG)
    return out


@pytest.fixture(scope="session")
def text_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("text")
    build_text(out, TextBuildConfig(n_train=20, n_val=4, samples_per_shard=10))
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory, shapes_dir, text_dir):
    out = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer([shapes_dir, text_dir], out, TokenizerConfig(vocab_size=600))
    return out


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from moezoo.processing.tokenizer import load_tokenizer

    return load_tokenizer(tokenizer_dir)


def _read_split(root, split) -> dict[str, dict[str, bytes]]:
    """Key -> {extension: bytes} of every sample of ``split``, read with plain ``tarfile``."""
    samples: dict[str, dict[str, bytes]] = {}
    for shard in json.loads((root / "index.json").read_text())["splits"][split]["shards"]:
        with tarfile.open(root / shard) as tar:
            for member in tar.getmembers():
                key, ext = member.name.split(".", 1)
                samples.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="session")
def read_split():
    """The shard reader the generator tests check against (independent of webdataset)."""
    return _read_split


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def set_threads():
    """``set_threads(n)`` sets torch's intra-op threads for this test; restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def deterministic():
    """``torch.use_deterministic_algorithms(True)`` for this test (the MoE dispatch's fixed thread split,
    which bitwise comparisons need; see moezoo.moe.threads); restored afterwards."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)
