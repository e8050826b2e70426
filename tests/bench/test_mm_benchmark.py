"""Smoke runs of ``moezoo bench mm-model`` on a tiny LLaVA shape: both sides compute the same thing."""

import argparse
import importlib

import pytest

from moezoo.bench import BENCHMARKS

TINY = ["--layers", "1", "--dim", "32", "--heads", "2", "--experts", "4", "--top-k", "2", "--expert-dim", "16",
        "--vocab", "64", "--seq", "8", "--image-size", "32", "--patch-size", "8", "--vision-dim", "32",
        "--vision-layers", "3", "--vision-heads", "2", "--vision-ffn", "64", "--new-tokens", "4", "--repeats", "1"]


def _run(*extra):
    bench = importlib.import_module(BENCHMARKS["mm-model"])
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    return bench.run(parser.parse_args(TINY + list(extra)))


def _assert_like_with_like(result: dict) -> None:
    """Both sides computed the same loss, gradients, trained parameters and greedy ids, and both were timed."""
    train, generate = result["forward_backward"], result["generate"]
    assert train["loss"]["moezoo"] == pytest.approx(train["loss"]["transformers"], abs=2e-6)
    assert train["max_grad_diff"] < 1e-5
    assert train["trained_params"]["moezoo"] == train["trained_params"]["transformers"]
    assert generate["identical_ids"] is True
    for part in (train, generate):
        assert part["moezoo_vs_transformers"] > 0 and len(part["round_ratios"]) == 1


def test_mm_benchmark_compares_like_with_like(capsys):
    frozen, trained = _run(), _run("--train-tower")
    for result in (frozen, trained):
        assert result["image_tokens"] == (32 // 8) ** 2  # SigLIP, "full": every patch
        # The same weights, batch and objective (LM loss + weighted aux loss): the same loss and gradients
        # (the gradients are the sharper check: a 1% change of a projector weight moves the loss by 7e-6 here,
        # the largest gradient difference to 5e-5).
        _assert_like_with_like(result)
    # Frozen means frozen in both: the tower's weights (its patch embedding alone: 3 * 8 * 8 * 32) are not trained.
    assert trained["forward_backward"]["trained_params"]["moezoo"] - frozen["forward_backward"]["trained_params"][
        "moezoo"] > 3 * 8 * 8 * 32
    assert "moezoo / transformers" in capsys.readouterr().out


QWEN3_VL_TINY = ["--family", "qwen3_vl_moe", "--layers", "2", "--dim", "32", "--heads", "2", "--experts", "4",
                 "--top-k", "2", "--expert-dim", "16", "--vocab", "64", "--seq", "8", "--image-size", "32",
                 "--patch-size", "8", "--vision-dim", "32", "--vision-layers", "2", "--vision-heads", "2",
                 "--vision-ffn", "64", "--new-tokens", "4", "--repeats", "1"]


def test_qwen3_vl_moe_family_compares_like_with_like(capsys, tmp_path):
    from moezoo.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "mm-model", *QWEN3_VL_TINY, "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    import json

    result = json.loads(out.read_text())
    assert result["family"] == "qwen3_vl_moe" and result["hf_experts"] == "grouped_mm"
    assert result["image_tokens"] == (32 // 8 // 2) ** 2  # 4 x 4 patches, merged 2 x 2
    # transformers' Qwen3VLMoeForConditionalGeneration and moezoo's on the same weights and batch: the same loss
    # (LM + weighted aux loss), gradients and greedy ids, and the mergers trained with the LLM on both sides.
    _assert_like_with_like(result)
    assert printed.count("moezoo / transformers") == 2 and "qwen3_vl_moe" in printed


def test_family_defaults_fill_only_unset_flags():
    bench = importlib.import_module(BENCHMARKS["mm-model"])
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    llava = bench.family_defaults(parser.parse_args([]))
    qwen = bench.family_defaults(parser.parse_args(["--family", "qwen3_vl_moe", "--layers", "3"]))
    assert (llava.family, llava.experts, llava.top_k, llava.vision_dim) == ("llava", 64, 8, 384)
    assert (qwen.layers, qwen.experts, qwen.top_k, qwen.vision_dim, qwen.vision_layers, qwen.batch) == (3, 8, 2, 256,
                                                                                                      4, 2)
