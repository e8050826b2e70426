"""``moezoo bench model`` and ``moezoo bench generate`` on a tiny shape: their numbers agree with each other,
with this test's clock, and with the loss an untrained model must have."""

import argparse
import importlib
import math
import time

import pytest

from moezoo.bench import BENCHMARKS

VOCAB = 64


@pytest.mark.parametrize("name", ["model", "generate"])
def test_lm_benchmark_runs(name, capsys):
    bench = importlib.import_module(BENCHMARKS[name])
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    args = parser.parse_args(["--layers", "1", "--dim", "32", "--heads", "2", "--experts", "4", "--top-k", "2",
                              "--expert-dim", "16", "--vocab", str(VOCAB), "--seq", "8", "--repeats", "1"]
                             + (["--new-tokens", "4"] if name == "generate" else []))
    start = time.perf_counter()
    result = bench.run(args)
    wall = time.perf_counter() - start
    contenders = {"moezoo", "transformers", "dense"} if name == "model" else {"moezoo", "transformers"}
    seconds, tps = result["seconds"], result["tokens_per_s"]
    assert set(seconds) == set(tps) == contenders
    tokens = args.batch * (args.seq if name == "model" else args.new_tokens)  # generate counts new tokens
    for k in contenders:
        assert 0 < seconds[k] < wall  # each timed call ran inside this test's clock
        assert tps[k] == pytest.approx(tokens / seconds[k], rel=1e-9)
    # One timed round: each ratio is the ratio of that round's times.
    assert result["moezoo_vs_transformers"] == pytest.approx(seconds["transformers"] / seconds["moezoo"], rel=1e-9)
    if name == "model":
        assert result["moezoo_vs_dense"] == pytest.approx(seconds["dense"] / seconds["moezoo"], rel=1e-9)
        loss = result["loss"]
        # The two MoEs hold the same weights: the benchmark times the same computation.
        assert loss["moezoo"] == pytest.approx(loss["transformers"], abs=1e-4)
        # std-0.02 weights give near-uniform logits: cross-entropy ln(vocab), plus for the MoEs
        # 0.01 x a load-balancing loss of about top_k.
        assert loss["dense"] == pytest.approx(math.log(VOCAB), abs=0.05)
        assert loss["moezoo"] == pytest.approx(math.log(VOCAB) + 0.01 * args.top_k, abs=0.05)
    else:
        assert result["identical_ids"] is True
    assert "moezoo / transformers" in capsys.readouterr().out
