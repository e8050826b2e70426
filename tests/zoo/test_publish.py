"""Publishing a trained model into the zoo, loading it by name, and the checks that stand before its weights."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
import torch
from safetensors import safe_open

import moezoo
from moezoo.processing.tokenizer import ZOO_TOKENIZER_DIR, load_tokenizer, zoo_tokenizer
from moezoo.registry.shipped import read_manifest
from moezoo.utils.digest import DigestMismatch
from moezoo.zoo.publish import publish

NAME, TASKS, LIMIT = "mm_tiny_cnn.zootest", ("shapes_vqa", "text_mc"), 6  # as tests/zoo/conftest.py publishes it


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_publish_writes_every_file_with_its_digest(zoo_root, trained_dir, published):
    model_dir = zoo_root / NAME
    assert sorted(p.name for p in model_dir.iterdir()) == [
        "README.md", "model.safetensors", "moezoo_config.json", "moezoo_processor.json", "pretrained.json",
        "tokenizer_ref.json"]  # the zoo tokenizer is referenced, not copied
    cfg = read_manifest(model_dir)
    assert {f.path: (f.size, f.sha256) for f in cfg.files} == {
        p.name: (p.stat().st_size, _sha256(p)) for p in model_dir.iterdir() if p.name != "pretrained.json"}
    source = moezoo.load(trained_dir)
    assert cfg.params_total == sum(p.numel() for p in source.parameters())
    assert cfg.params_active < cfg.params_total  # top-2 of 4 experts
    assert (cfg.source, cfg.location, cfg.revision, cfg.history) == ("shipped", NAME, "1", ())
    assert cfg.modalities == ("image", "text") and cfg.tasks == TASKS and cfg.eval_limit == LIMIT
    assert (cfg.architecture["num_experts"], cfg.architecture["top_k"], cfg.architecture["router"]) == (4, 2, "softmax")
    assert cfg.recipe["config"] == "configs/quickstart.yaml" and cfg.recipe["datasets"] == ["shapes-vqa"]
    assert cfg.recipe["weights_dtype"] == "bfloat16" and cfg.recipe["seeds"] == published.facts["seeds"]
    assert cfg.counts["shapes_vqa"]["vqa_accuracy"] == LIMIT and cfg.counts["text_mc"]["acc"] == LIMIT
    assert set(cfg.baselines["shapes_vqa"]) == {"blank", "majority"}
    assert not [p for p in zoo_root.iterdir() if p.name.startswith(".")]  # no staging dir left behind


def test_load_by_name_computes_the_bf16_bytes_in_fp32(zoo, trained_dir):
    model = moezoo.load(NAME)
    assert not model.training
    source = moezoo.load(trained_dir).state_dict()
    params = {n for n, _ in model.named_parameters()}
    for key, value in model.state_dict().items():
        if key in params and value.is_floating_point():
            assert value.dtype == torch.float32, key
            assert torch.equal(value, source[key].to(torch.bfloat16).float()), key
    with safe_open(str(zoo / NAME / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys() if k in params} == {"BF16"}
    assert model.processor.tokenizer.get_vocab() == zoo_tokenizer().get_vocab()
    assert moezoo.load(NAME, dtype="bfloat16").llm.embed_tokens.weight.dtype == torch.bfloat16
    created = moezoo.create_model("mm_tiny_cnn", pretrained=True)  # the architecture's one tag
    assert torch.equal(created.llm.embed_tokens.weight, model.llm.embed_tokens.weight)
    assert NAME in moezoo.list_models("mm_tiny_cnn.*", pretrained=True)


def test_bf16_halves_the_weights(zoo_root, trained_dir):
    fp32, bf16 = (trained_dir / "model.safetensors").stat().st_size, (zoo_root / NAME / "model.safetensors").stat().st_size
    assert 0.45 < bf16 / fp32 < 0.55


@pytest.fixture
def zoo_copy(zoo_root, tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    shutil.copytree(zoo_root, root)
    monkeypatch.setenv("MOEZOO_CHECKPOINTS", str(root))
    return root


def test_a_corrupt_file_fails_with_its_path_and_both_digests_before_loading(zoo_copy):
    weights = zoo_copy / NAME / "model.safetensors"
    expected = _sha256(weights)
    weights.write_bytes(b"\xff" * weights.stat().st_size)  # same size; not even a safetensors header
    with pytest.raises(DigestMismatch) as err:  # a read would fail as "not a readable safetensors file"
        moezoo.load(NAME)
    message = str(err.value)
    assert str(weights) in message and expected in message and _sha256(weights) in message
    assert "git checkout --" in message
    weights.write_bytes(b"\xff" * 10)
    with pytest.raises(DigestMismatch, match=r"size mismatch: expected \d+ bytes \(sha256 [0-9a-f]{64}\), found 10"):
        moezoo.create_model(NAME, pretrained=True)


def test_an_unlisted_file_in_a_model_dir_fails(zoo_copy):
    (zoo_copy / NAME / "tokenizer.json").write_text("{}")
    with pytest.raises(ValueError, match=r"holds files its manifest does not list: \['tokenizer.json'\]"):
        moezoo.load(NAME)


def test_unknown_names_and_missing_paths(zoo):
    with pytest.raises(ValueError, match=r"no pretrained model named 'mm_tiny_cnn.zootst'\. Did you mean "
                                         r"\['mm_tiny_cnn.zootest'\]"):
        moezoo.load("mm_tiny_cnn.zootst")
    for path in ("./no_such_dir", "runs/no_such_model", "../x"):
        with pytest.raises(FileNotFoundError, match="no such directory"):
            moezoo.load(path)


def test_other_bytes_are_refused_and_a_new_revision_keeps_the_old_digests(zoo_copy, trained_dir, published):
    before = read_manifest(zoo_copy / NAME)
    again = publish(trained_dir, NAME, TASKS, config="configs/quickstart.yaml", limit=LIMIT, bf16=True,
                    train_facts=published.facts, description="A tiny test model.", root=zoo_copy)
    assert again == before  # the same bytes: the same entry, nothing bumped
    with pytest.raises(ValueError, match=r"holds other bytes: model\.safetensors [0-9a-f]{64} -> [0-9a-f]{64}.*"
                                         r"--new-revision"):
        publish(trained_dir, NAME, TASKS, limit=LIMIT, bf16=False, root=zoo_copy)  # fp32: other bytes
    assert read_manifest(zoo_copy / NAME) == before  # untouched
    assert not [p for p in zoo_copy.iterdir() if p.name.startswith(".")]
    bumped = publish(trained_dir, NAME, TASKS, limit=LIMIT, bf16=False, new_revision=True, root=zoo_copy)
    old = {f.path: f.sha256 for f in before.files if f.path != "README.md"}
    assert bumped.revision == "2" and bumped.history == ({"revision": "1", "files": old},)
    assert read_manifest(zoo_copy / NAME) == bumped
    assert "Revision 1 (replaced)" in (zoo_copy / NAME / "README.md").read_text()
    assert moezoo.load(NAME).llm.embed_tokens.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="identical to revision 2's; nothing to bump"):
        publish(trained_dir, NAME, TASKS, limit=LIMIT, new_revision=True, root=zoo_copy)


def test_publish_rejects_bad_names_tasks_and_facts(trained_dir, tmp_path):
    with pytest.raises(ValueError, match="must be 'arch.tag'"):
        publish(trained_dir, "mm_tiny_cnn", TASKS, root=tmp_path)
    with pytest.raises(ValueError, match=r"unknown architecture 'mm_tiny_cnm'\. Did you mean \['mm_tiny_cnn'"):
        publish(trained_dir, "mm_tiny_cnm.x", TASKS, root=tmp_path)
    with pytest.raises(ValueError, match=r"train facts: unknown keys \['wall_time'\]"):
        publish(trained_dir, "mm_tiny_cnn.x", TASKS, train_facts={"wall_time": 3}, root=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_tokenizer_reference_checks_the_shared_files(tmp_path):
    digest = _sha256(ZOO_TOKENIZER_DIR / "tokenizer.json")
    (tmp_path / "tokenizer_ref.json").write_text(json.dumps({"tokenizer": "zoo", "sha256": {"tokenizer.json": digest}}))
    assert load_tokenizer(tmp_path).get_vocab() == zoo_tokenizer().get_vocab()
    (tmp_path / "tokenizer_ref.json").write_text(json.dumps({"tokenizer": "zoo", "sha256": {"tokenizer.json": "0" * 64}}))
    with pytest.raises(ValueError, match=f"sha256 {digest}, but .* records {'0' * 64}"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer_ref.json").write_text(json.dumps({"tokenizer": "other"}))
    with pytest.raises(ValueError, match=r"names tokenizer 'other'; known: \['zoo'\]"):
        load_tokenizer(tmp_path)
