"""``memory_report``: download size, the weights' memory per dtype, and whether they fit here."""

from __future__ import annotations

import os

import pytest

from moezoo.hub import machine_memory, memory_report
from moezoo.registry.pretrained import PretrainedCfg, PretrainedFile

GB = 10**9


def _entry(**kwargs) -> PretrainedCfg:
    return PretrainedCfg(name="toy_arch.v1", source="hf", location="org/toy", revision="a" * 40, **kwargs)


def test_exact_download_and_memory_per_dtype():
    cfg = _entry(files=(PretrainedFile("config.json"), PretrainedFile("model-1.safetensors", 3 * GB),
                        PretrainedFile("model-2.safetensors", 2 * GB)), params_total=2_500_000_000)
    report = memory_report(cfg, machine={"total_bytes": 8 * GB, "available_bytes": 6 * GB})
    assert report["download_bytes"] == 5 * GB and not report["download_estimated"]
    assert report["memory_bytes"] == {"bfloat16": 5 * GB, "float32": 10 * GB}
    assert report["fits"] == {"bfloat16": True, "float32": False}
    assert report["summary"].endswith("this machine has 8.0 GB of memory: they fit in bfloat16 only")


def test_estimated_download_uses_the_stored_dtype():
    cfg = _entry(params_total=GB, architecture={"weights_dtype": "float16"})
    report = memory_report(cfg, dtypes=("float16",), machine={"total_bytes": 64 * GB, "available_bytes": None})
    assert (report["download_bytes"], report["download_estimated"]) == (2 * GB, True)
    assert report["fits"] == {"float16": True} and "estimated from 1.0 B parameters in float16" in report["summary"]
    with pytest.raises(ValueError, match="unknown weights_dtype"):
        memory_report(_entry(params_total=1, architecture={"weights_dtype": "fp7"}))


def test_unknown_machine_memory_gives_no_verdict():
    report = memory_report(_entry(params_total=GB), machine={"total_bytes": None, "available_bytes": None})
    assert report["fits"] == {"bfloat16": None, "float32": None} and "this machine" not in report["summary"]


def test_machine_memory_is_this_machines():
    expected = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert machine_memory()["total_bytes"] == pytest.approx(expected, rel=0.01)


def test_gpu_need_by_weights_and_active_parameters():
    from moezoo.hub import gpu_need

    def verdict(total, active=None, dtype="bfloat16"):
        return gpu_need(_entry(params_total=total, params_active=active), dtype=dtype)["verdict"]

    assert verdict(16 * GB, GB) == "recommended"  # 32 GB of bfloat16 weights is not over 32 GB
    assert verdict(16 * GB) == "needed"  # without params_active, every parameter counts as active
    assert verdict(16 * GB + 1, GB) == "needed" and verdict(GB, GB + 1) == "recommended"  # over 1 B active
    assert verdict(2 * GB, 4 * GB + 1) == "needed"  # each token reads more than 4 B parameters
    assert verdict(GB, GB // 4) == "not needed" and verdict(GB, GB // 4, "float32") == "not needed"  # 4 GB
    assert verdict(GB + 1, GB // 4, "float32") == "recommended"  # the weights in the dtype they run in count
    report = gpu_need(_entry(params_total=20 * GB, params_active=3 * GB))
    assert report["weights_bytes"] == 40 * GB
    assert report["summary"].startswith("needed in practice (40.0 GB of weights in bfloat16, over 32 GB)")
    assert gpu_need(_entry())["verdict"] == "unknown"
