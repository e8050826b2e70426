"""The hub entries: pinned, named after registered architectures, with the counts those architectures have."""

from __future__ import annotations

import re

import pytest

import moezoo
from moezoo.hub import memory_report
from moezoo.registry.hub_models import HUB_ENTRIES
from moezoo.registry.pretrained import pretrained_entries

REQUIRED = {"mixtral_8x7b.v0_1": "mistralai/Mixtral-8x7B-v0.1", "olmoe_1b_7b.0924": "allenai/OLMoE-1B-7B-0924",
            "qwen2_moe_a2_7b.qwen1_5": "Qwen/Qwen1.5-MoE-A2.7B", "qwen3_moe_30b_a3b.2504": "Qwen/Qwen3-30B-A3B",
            "llava_1_5_7b.hf": "llava-hf/llava-1.5-7b-hf"}


def test_the_required_models_are_registered_and_pinned():
    assert {cfg.name: cfg.location for cfg in HUB_ENTRIES if cfg.name in REQUIRED} == REQUIRED
    entries = pretrained_entries()  # the registry lists them (it imports hub_models on first lookup)
    assert all(entries[name] == cfg for cfg in HUB_ENTRIES for name in [cfg.name])
    for cfg in HUB_ENTRIES:
        assert cfg.source == "hf" and re.fullmatch(r"[0-9a-f]{40}", cfg.revision), cfg.name
        assert cfg.arch in moezoo.list_models(), f"{cfg.name}: architecture {cfg.arch!r} is not registered"
        assert {"config.json", "model.safetensors.index.json"} <= {f.path for f in cfg.files}
        assert all(f.sha256 is None for f in cfg.files)  # recorded from the hub's metadata at download
        assert cfg.license and cfg.params_total and cfg.params_active


@pytest.mark.parametrize("cfg", HUB_ENTRIES, ids=lambda cfg: cfg.name)
def test_parameter_counts_are_the_architectures(cfg):
    from moezoo.cli.models import describe

    facts = describe(cfg.arch)
    assert (cfg.params_total, cfg.params_active) == (facts["parameters"], facts["active_parameters_per_token"])
    if facts.get("num_experts"):
        assert (cfg.architecture["num_experts"], cfg.architecture["top_k"]) == (facts["num_experts"], facts["top_k"])


def test_download_sizes_and_memory():
    entries = {cfg.name: cfg for cfg in HUB_ENTRIES}
    olmoe = memory_report(entries["olmoe_1b_7b.0924"], machine={"total_bytes": 16 * 10**9, "available_bytes": None})
    assert (olmoe["download_bytes"], olmoe["download_estimated"]) == (13_838_721_960, False)
    assert olmoe["fits"] == {"bfloat16": True, "float32": False}
    mixtral = memory_report(entries["mixtral_8x7b.v0_1"], machine={"total_bytes": 24 * 10**9, "available_bytes": None})
    assert mixtral["download_bytes"] == 2 * 46_702_792_704 and mixtral["download_estimated"]
    assert mixtral["summary"].endswith("this machine has 24.0 GB of memory: they will not fit")
