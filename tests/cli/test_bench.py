"""``moezoo bench moe-layer`` runs end to end and writes its JSON."""

import json
import time

import pytest

from moezoo.cli import main


def test_bench_moe_layer_json(tmp_path, capsys):
    tokens, dim, expert_dim, num_experts, top_k = 128, 32, 16, 8, 2
    out = tmp_path / "bench.json"
    start = time.perf_counter()
    # One timed round: the ratios are then the plain ratios of the round's times, checkable exactly below.
    assert main(["bench", "moe-layer", "--shapes", "128:32:16:8:2", "--repeats", "1", "--json", str(out)]) == 0
    wall = time.perf_counter() - start
    printed = capsys.readouterr().out
    assert "moezoo/dense" in printed and "128:32:16:8:2" in printed
    result = json.loads(out.read_text())["shapes"]["128:32:16:8:2"]
    assert result["shape"] == {"name": "128:32:16:8:2", "tokens": tokens, "dim": dim, "expert_dim": expert_dim,
                               "num_experts": num_experts, "top_k": top_k}
    tps = result["tokens_per_s"]
    assert set(tps) == {"moezoo", "loop", "dense"}
    # Each timed call ran inside this test's clock, and no CPU runs these FLOPs at 1 TFLOP/s: the dense
    # FFN's forward+backward is 3 x 2 x (3 projections of dim x top_k * expert_dim) FLOPs per token.
    flops_per_token = 3 * 2 * 3 * dim * top_k * expert_dim
    for name, value in tps.items():
        assert tokens / wall <= value <= 1e12 / flops_per_token, (name, value, wall)
    assert result["moezoo_vs_dense"] == pytest.approx(tps["moezoo"] / tps["dense"], rel=1e-9)
    assert result["max_abs_diff_vs_loop"] < 1e-5  # the timed dispatch computes what the reference does
    # Memory: the peak minus the activation memory is exactly the parameter gradients and the input's
    # gradient (float32), counted here from the shapes.
    mib = 4 / 2**20
    params = {"moezoo": num_experts * dim + 3 * num_experts * dim * expert_dim,  # router + gate/up + down
              "dense": 3 * dim * top_k * expert_dim}
    peak, activation = result["peak_mib"], result["activation_mib"]
    for name, n in params.items():
        assert peak[name] - activation[name] == pytest.approx((n + tokens * dim) * mib, rel=1e-9), name
    # Backward needs the gate and up pre-activations of every (token, expert) row: a floor on
    # activation memory; 8x that floor is far more than either layer keeps.
    floor = 2 * tokens * top_k * expert_dim * mib
    assert floor <= activation["dense"] <= 8 * floor and floor <= activation["moezoo"] <= 8 * floor
    assert result["memory_vs_dense"] == pytest.approx(activation["moezoo"] / activation["dense"], rel=1e-9)
    assert result["raw_memory_vs_dense"] == pytest.approx(peak["moezoo"] / peak["dense"], rel=1e-9)


def test_bench_unknown_shape_is_a_clear_error(capsys):
    assert main(["bench", "moe-layer", "--shapes", "olmo"]) == 2
    err = capsys.readouterr().err
    assert "unknown shape 'olmo'" in err and "olmoe" in err
