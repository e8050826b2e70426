"""The hub entries: pinned, named after registered architectures, with the counts those architectures have;
the released MoE VLMs' entries resolve offline from a hub-cache layout at their pinned commit, and ``moezoo info``
says what each needs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

import moezoo
from moezoo.cli import main
from moezoo.hub import SnapshotNotFoundError, fetch_pretrained, gpu_need, memory_report
from moezoo.hub.lock import lock_path
from moezoo.registry.hub_models import HUB_ENTRIES, LIBMOE_ENTRIES, MOE_LLAVA_ENTRIES
from moezoo.registry.pretrained import pretrained_cfg, pretrained_entries

REQUIRED = {"mixtral_8x7b.v0_1": "mistralai/Mixtral-8x7B-v0.1", "olmoe_1b_7b.0924": "allenai/OLMoE-1B-7B-0924",
            "qwen2_moe_a2_7b.qwen1_5": "Qwen/Qwen1.5-MoE-A2.7B", "qwen3_moe_30b_a3b.2504": "Qwen/Qwen3-30B-A3B",
            "llava_1_5_7b.hf": "llava-hf/llava-1.5-7b-hf",
            "qwen3_vl_moe_30b_a3b.instruct": "Qwen/Qwen3-VL-30B-A3B-Instruct",
            "moe_llava_stablelm_1_6b_4e.languagebind": "LanguageBind/MoE-LLaVA-StableLM-1.6B-4e"}
# Released models no public source records a commit of: they follow `main` (their first fetch locks a commit).
FOLLOW_MAIN = {"moe_llava_phi2_2_7b_4e.languagebind": ("LanguageBind/MoE-LLaVA-Phi2-2.7B-4e", None),
               "moe_llava_stablelm_1_6b_4e_384.languagebind": ("LanguageBind/MoE-LLaVA-StableLM-1.6B-4e-384", None),
               "moe_llava_phi2_2_7b_4e_384.languagebind": ("LanguageBind/MoE-LLaVA-Phi2-2.7B-4e-384", None),
               **{f"libmoe_phi3_5_siglip_{arch}.fsoft": ("Fsoft-AIC/Phi3.5-Siglip-MoE", f"sft_full/{moe_name}")
                  for arch, moe_name in (("smoe", "smoe"), ("cosine", "smoe_cosinegating"), ("hyper", "hyperrouter"),
                                         ("perturbed", "smoe_perturbed"))}}
BRANCH_ENTRIES = MOE_LLAVA_ENTRIES + LIBMOE_ENTRIES
ALL_ENTRIES = HUB_ENTRIES + BRANCH_ENTRIES
# The upload's weight layout (one file or an index of shards) is not recorded for these: only config.json is listed.
LAYOUT_UNRECORDED = {"moe_llava_stablelm_1_6b_4e.languagebind", *FOLLOW_MAIN}


def test_the_required_models_are_registered_and_pinned():
    assert {cfg.name: cfg.location for cfg in HUB_ENTRIES if cfg.name in REQUIRED} == REQUIRED
    entries = pretrained_entries()  # the registry lists them (it imports hub_models on first lookup)
    assert all(entries[name] == cfg for cfg in HUB_ENTRIES for name in [cfg.name])
    assert {cfg.name: (cfg.location, cfg.subfolder) for cfg in BRANCH_ENTRIES} == FOLLOW_MAIN
    assert all(entries[cfg.name] == cfg for cfg in BRANCH_ENTRIES)
    for cfg in ALL_ENTRIES:
        pinned = re.fullmatch(r"[0-9a-f]{40}", cfg.revision) is not None
        assert cfg.source == "hf" and (pinned if cfg.name not in FOLLOW_MAIN else cfg.revision == "main"), cfg.name
        assert cfg.arch in moezoo.list_models(), f"{cfg.name}: architecture {cfg.arch!r} is not registered"
        paths = {f.path for f in cfg.files}
        assert "config.json" in paths and ("model.safetensors.index.json" in paths or cfg.name in LAYOUT_UNRECORDED)
        assert all(f.sha256 is None for f in cfg.files)  # recorded from the hub's metadata at download
        assert cfg.license and cfg.params_total and cfg.params_active


@pytest.mark.parametrize("cfg", ALL_ENTRIES, ids=lambda cfg: cfg.name)
def test_parameter_counts_are_the_architectures(cfg):
    from moezoo.cli.models import describe

    facts = describe(cfg.arch)
    assert (cfg.params_total, cfg.params_active) == (facts["parameters"], facts["active_parameters_per_token"])
    if facts.get("num_experts"):
        assert (cfg.architecture["num_experts"], cfg.architecture["top_k"]) == (facts["num_experts"], facts["top_k"])
        assert cfg.architecture["router"] == facts["router"]
    if "tokens_per_input" in cfg.architecture and isinstance(facts["tokens_per_input"], dict):  # Qwen3-VL's vary
        assert cfg.architecture["tokens_per_input"] == facts["tokens_per_input"]


def test_download_sizes_and_memory():
    entries = {cfg.name: cfg for cfg in HUB_ENTRIES}
    olmoe = memory_report(entries["olmoe_1b_7b.0924"], machine={"total_bytes": 16 * 10**9, "available_bytes": None})
    assert (olmoe["download_bytes"], olmoe["download_estimated"]) == (13_838_721_960, False)
    assert olmoe["fits"] == {"bfloat16": True, "float32": False}
    mixtral = memory_report(entries["mixtral_8x7b.v0_1"], machine={"total_bytes": 24 * 10**9, "available_bytes": None})
    assert mixtral["download_bytes"] == 2 * 46_702_792_704 and mixtral["download_estimated"]
    assert mixtral["summary"].endswith("this machine has 24.0 GB of memory: they will not fit")


def test_the_released_vlm_architectures_are_their_configs():
    """The registered shapes are the releases': Qwen3-VL-30B-A3B's count is transformers' own for its config.json,
    and MoE-LLaVA-StableLM's LLM has the paper's 2.9 B parameters, 2.0 B active (Lin et al. 2024, Table 1)."""
    import transformers

    from moezoo.registry.multimodal import QWEN3_VL_30B_A3B

    qwen = moezoo.create_model("qwen3_vl_moe_30b_a3b", device="meta")
    hf_config = transformers.Qwen3VLMoeConfig(**{k: v for k, v in QWEN3_VL_30B_A3B.items()
                                                 if k not in ("model_type", "architectures")})
    with torch.device("meta"):
        reference = transformers.Qwen3VLMoeForConditionalGeneration(hf_config)
    assert sum(p.numel() for p in qwen.parameters()) == sum(p.numel() for p in reference.parameters())
    assert (qwen.config.vision.depth, qwen.config.vision.deepstack_visual_indexes) == (27, [8, 16, 24])
    assert qwen.config.llm.mrope_section == [24, 20, 20]

    moe_llava = moezoo.create_model("moe_llava_stablelm_1_6b_4e", device="meta")
    llm = {n: p.numel() for n, p in moe_llava.named_parameters() if n.startswith("llm.")}
    experts = sum(v for n, v in llm.items() if ".mlp.experts." in n)
    total, active = sum(llm.values()), sum(llm.values()) - experts // 2  # top-2 of 4 experts
    assert round(total / 1e9, 1) == 2.9 and round(active / 1e9, 1) == 2.1  # the paper rounds 2.06 down to 2.0
    assert moe_llava.config.llm.moe_layers == list(range(0, 24, 2)) and moe_llava.config.llm.moe.num_experts == 4


def _hub_layout(folder: Path, shards: int) -> dict[str, bytes]:
    """A checkpoint dir's files as a hub upload holds them: ``shards`` > 1 splits ``model.safetensors`` into
    ``model-0000i-of-0000n.safetensors`` files with ``model.safetensors.index.json``, as transformers shards."""
    from safetensors.torch import load_file, save_file

    files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file() and p.name != "model.safetensors"}
    state = load_file(str(folder / "model.safetensors"))
    if shards <= 1:
        files["model.safetensors"] = (folder / "model.safetensors").read_bytes()
        return files
    names, weight_map = sorted(state), {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[i::shards]}
        save_file(part, str(folder / shard), metadata={"format": "pt"})
        files[shard] = (folder / shard).read_bytes()
        weight_map.update({k: shard for k in part})
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    files["model.safetensors.index.json"] = json.dumps(index, indent=2).encode()
    return files


def _qwen3_vl_upload(folder: Path) -> dict[str, bytes]:
    """A tiny Qwen3-VL-MoE in the pinned upload's layout: hub-transposed experts, 3 shards, and the older
    processor files (preprocessor_config.json, video_preprocessor_config.json) instead of processor_config.json."""
    from moezoo.convert.qwen3_vl_testing import tiny_qwen3_vl_checkpoint

    tiny_qwen3_vl_checkpoint(folder, layout="hub")
    settings = json.loads((folder / "processor_config.json").read_text())
    (folder / "processor_config.json").unlink()
    (folder / "preprocessor_config.json").write_text(json.dumps(settings["image_processor"]))
    (folder / "video_preprocessor_config.json").write_text(json.dumps(settings["video_processor"]))
    return _hub_layout(folder, shards=3)


def _moe_llava_upload(folder: Path, shards: int) -> dict[str, bytes]:
    from moezoo.convert.moe_llava_testing import tiny_moe_llava_checkpoint

    tiny_moe_llava_checkpoint(folder, "stablelm")
    return _hub_layout(folder, shards=shards)


@pytest.mark.parametrize("name,upload", [
    ("qwen3_vl_moe_30b_a3b.instruct", _qwen3_vl_upload),
    ("moe_llava_stablelm_1_6b_4e.languagebind", lambda folder: _moe_llava_upload(folder, shards=1)),
    ("moe_llava_stablelm_1_6b_4e.languagebind", lambda folder: _moe_llava_upload(folder, shards=2)),
], ids=["qwen3_vl", "moe_llava_one_file", "moe_llava_sharded"])
def test_released_vlm_entries_resolve_offline_at_their_pinned_commit(name, upload, caches, make_hub_snapshot,
                                                                    tmp_path):
    """``moezoo.load(NAME)`` finds the entry's repo at its pinned commit in the hub cache, offline, verifies it
    against the cache's blob names, and imports it as that family; a snapshot at another commit is not taken."""
    cfg = pretrained_cfg(name)
    files = upload(tmp_path / "upload")
    make_hub_snapshot(caches.hf, cfg.location, "f" * 40, files)  # another commit of the same repo
    with pytest.raises(SnapshotNotFoundError, match=f"--revision {cfg.revision}"):
        moezoo.load(name)
    snapshot = make_hub_snapshot(caches.hf, cfg.location, cfg.revision, files)
    model = moezoo.load(name)
    assert fetch_pretrained(cfg) == snapshot  # the pinned commit's snapshot, not refs/main's latest
    direct = moezoo.load(tmp_path / "upload")
    assert type(model) is type(direct) and model.processor is not None
    assert model.spec.language_config(model.config).moe.router == cfg.architecture["router"]
    mine, theirs = model.state_dict(), direct.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    marker = next((caches.moezoo / "models" / "verified").rglob(f"{cfg.revision}*.json"))
    recorded = json.loads(marker.read_text())
    assert recorded["revision"] == cfg.revision and set(recorded["files"]) == set(files)


def _libmoe_upload(folder: Path, moe_name: str) -> dict[str, bytes]:
    """A tiny LibMoE checkpoint in the release's sub-folder, in v1.1's router layout (the uploads' era)."""
    from moezoo.convert.libmoe_testing import tiny_libmoe_checkpoint

    layout = "v1" if moe_name in ("smoe_cosinegating", "smoe_perturbed") else "v2"
    tiny_libmoe_checkpoint(folder, moe_name, scales=(1, 3), layout=layout, topk_max=2, topk_min=1)
    return {f"sft_full/{moe_name}/{rel}": data for rel, data in _hub_layout(folder, shards=1).items()}


def _moe_llava_release(folder: Path, base: str, tower: str) -> dict[str, bytes]:
    from moezoo.convert.moe_llava_testing import tiny_moe_llava_checkpoint

    tiny_moe_llava_checkpoint(folder, base, tower=tower)
    return _hub_layout(folder, shards=2)


BRANCH_UPLOADS = {
    "moe_llava_phi2_2_7b_4e.languagebind": lambda folder: _moe_llava_release(folder, "phi", "clip"),
    "moe_llava_stablelm_1_6b_4e_384.languagebind": lambda folder: _moe_llava_release(folder, "stablelm", "siglip"),
    "moe_llava_phi2_2_7b_4e_384.languagebind": lambda folder: _moe_llava_release(folder, "phi", "siglip"),
    **{f"libmoe_phi3_5_siglip_{arch}.fsoft": (lambda folder, m=moe_name: _libmoe_upload(folder, m))
       for arch, moe_name in (("smoe", "smoe"), ("cosine", "smoe_cosinegating"), ("hyper", "hyperrouter"),
                              ("perturbed", "smoe_perturbed"))},
}


@pytest.mark.parametrize("name", sorted(BRANCH_UPLOADS))
def test_released_vlm_entries_without_a_pinned_commit_resolve_offline_and_lock_it(name, caches, make_hub_snapshot,
                                                                                   tmp_path):
    """An entry that follows `main` resolves from a hub-cache layout offline, down to its router sub-folder for
    LibMoE, imports as its family with the entry's router, and locks the commit: when `main` moves on, the name
    still loads the locked snapshot."""
    cfg = pretrained_cfg(name)
    files = BRANCH_UPLOADS[name](tmp_path / "upload")
    make_hub_snapshot(caches.hf, cfg.location, "c" * 40, files)  # refs/main -> c...
    with pytest.warns(UserWarning, match=f"this first fetch got {'c' * 40}, now locked"):
        model = moezoo.load(name)
    direct = moezoo.load(tmp_path / "upload")
    assert type(model) is type(direct)
    assert next(iter(model.moe_sites().values())).config.router == cfg.architecture["router"]
    mine, theirs = model.state_dict(), direct.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert json.loads(lock_path(name).read_text())["commit"] == "c" * 40
    make_hub_snapshot(caches.hf, cfg.location, "d" * 40, files)  # main moves on
    assert fetch_pretrained(cfg).relative_to(caches.hf).parts[2] == "c" * 40  # models--ORG--NAME/snapshots/COMMIT


def test_info_says_what_each_released_vlm_needs(capsys):
    """``moezoo info`` gives the download size, the memory of the bfloat16 weights and whether a GPU is needed."""
    expected = {"qwen3_vl_moe_30b_a3b.instruct": ("62.1 GB", "needed"),
                "moe_llava_stablelm_1_6b_4e.languagebind": ("6.4 GB", "recommended")}
    for name, (size, gpu) in expected.items():
        assert gpu_need(pretrained_cfg(name))["verdict"] == gpu
        assert main(["info", name]) == 0
        out = capsys.readouterr().out
        assert re.search(rf"download size +{re.escape(size)} \(estimated\)", out), out
        assert re.search(rf"memory needed +{re.escape(size)} in bfloat16", out), out
        assert re.search(rf"GPU +{gpu}", out) and "this machine" in out
        assert pretrained_cfg(name).revision in out and pretrained_cfg(name).license in out


def test_gpu_need_follows_its_rule_for_every_entry():
    verdicts = {cfg.name: gpu_need(cfg)["verdict"] for cfg in ALL_ENTRIES}
    assert verdicts["mixtral_8x7b.v0_1"] == verdicts["qwen3_moe_30b_a3b.2504"] == "needed"  # > 32 GB of weights
    assert verdicts["llava_1_5_7b.hf"] == "needed"  # 7 B parameters active per token
    assert verdicts["olmoe_1b_7b.0924"] == "recommended"  # 13.8 GB, 1.3 B active
    assert verdicts["moe_llava_stablelm_1_6b_4e.languagebind"] == "recommended"  # 6.4 GB, 2.4 B active
    shipped = [cfg for cfg in pretrained_entries().values() if cfg.source == "shipped"]  # quickstart-size models
    assert all(gpu_need(cfg)["verdict"] == "not needed" for cfg in shipped)


@pytest.mark.parametrize("name,total,active,layers,tokens", [
    ("moe_llava_stablelm_1_6b_4e", 2.9, 2.1, 24, 576),
    ("moe_llava_stablelm_1_6b_4e_384", 2.9, 2.1, 24, 728),
    ("moe_llava_phi2_2_7b_4e", 5.3, 3.6, 32, 576),
    ("moe_llava_phi2_2_7b_4e_384", 5.3, 3.6, 32, 728),
])
def test_the_moe_llava_releases_have_the_papers_counts(name, total, active, layers, tokens):
    """Each MoE-LLaVA release's LLM has the paper's total and activated parameters (Lin et al. 2024, Table 1 and the
    README's model zoo: StableLM 1.6B x 4 -> 2.9 B / 2.0 B, the paper rounding 2.06 down; Phi-2 2.7B x 4 -> 5.3 B /
    3.6 B), 4 experts in every other layer; CLIP-L/336 gives 576 image tokens, SigLIP-so400m/384 gives 728 (27 * 27,
    the first dropped as MoE-LLaVA's SigLIP tower drops it). The LLM is transformers' own base model for the
    release's config.json (no lm_head bias, as MoELLaVA*ForCausalLM has none) plus, in each MoE layer, three more
    copies of its MLP and a 4-row gate."""
    import transformers

    from moezoo.convert.moe_llava import text_config
    from moezoo.registry import moe_llava

    model = moezoo.create_model(name, device="meta")
    llm = {n: p.numel() for n, p in model.named_parameters() if n.startswith("llm.")}
    experts = sum(v for n, v in llm.items() if ".mlp.experts." in n)
    assert round(sum(llm.values()) / 1e9, 1) == total and round((sum(llm.values()) - experts // 2) / 1e9, 1) == active
    text = text_config(getattr(moe_llava, name.upper()))
    with torch.device("meta"):
        base = transformers.AutoModelForCausalLM.from_config(transformers.AutoConfig.for_model(**text))
    dense = sum(p.numel() for n, p in base.named_parameters() if n != "lm_head.bias")
    mlp = sum(p.numel() for p in base.model.layers[0].mlp.parameters())
    assert sum(llm.values()) == dense + len(range(0, layers, 2)) * (3 * mlp + 4 * text["hidden_size"])
    assert model.config.llm.moe_layers == list(range(0, layers, 2)) and model.config.llm.moe.num_experts == 4
    assert model.num_tokens == {"image": tokens}
    tower = model.config.vision.vision_config
    assert tower["model_type"] == ("siglip_vision_model" if name.endswith("_384") else "clip_vision_model")
    assert tower["image_size"] == (384 if name.endswith("_384") else 336)
