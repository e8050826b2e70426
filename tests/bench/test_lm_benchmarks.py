"""Smoke runs of ``moezoo bench model`` and ``moezoo bench generate`` on a tiny shape."""

import argparse

import pytest

from moezoo.bench import BENCHMARKS


@pytest.mark.parametrize("name", ["model", "generate"])
def test_lm_benchmark_runs(name, capsys):
    import importlib

    bench = importlib.import_module(BENCHMARKS[name])
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--layers", "1", "--dim", "32", "--heads", "2", "--experts", "4", "--top-k", "2",
                              "--expert-dim", "16", "--vocab", "64", "--seq", "8", "--repeats", "1"]
                             + (["--new-tokens", "4"] if name == "generate" else []))
    result = bench.run(args)
    assert result["moezoo_vs_transformers"] > 0 and result["tokens_per_s"]["moezoo"] > 0
    if name == "model":
        assert set(result["tokens_per_s"]) == {"moezoo", "transformers", "dense"}
        # The two MoEs hold the same weights: the benchmark times the same computation.
        assert result["loss"]["moezoo"] == pytest.approx(result["loss"]["transformers"], abs=1e-4)
    else:
        assert result["identical_ids"] is True
    assert "moezoo / transformers" in capsys.readouterr().out
