"""``moezoo bench moe-layer`` runs end to end and writes its JSON."""

import json

import pytest

from moezoo.cli import main


def test_bench_moe_layer_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "moe-layer", "--shapes", "128:32:16:8:2", "--repeats", "2", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "moezoo/dense" in printed and "128:32:16:8:2" in printed
    result = json.loads(out.read_text())["shapes"]["128:32:16:8:2"]
    assert set(result["tokens_per_s"]) == {"moezoo", "loop", "dense"}
    assert all(v > 0 for v in result["tokens_per_s"].values())
    assert result["moezoo_vs_dense"] > 0 and result["moezoo_vs_loop"] > 0
    assert result["max_abs_diff_vs_loop"] < 1e-5  # the timed dispatch computes what the reference does
    assert result["peak_mib"]["moezoo"] > 0 and result["memory_vs_dense"] > 0


def test_bench_unknown_shape_is_a_clear_error(capsys):
    assert main(["bench", "moe-layer", "--shapes", "olmo"]) == 2
    err = capsys.readouterr().err
    assert "unknown shape 'olmo'" in err and "olmoe" in err
