"""Smoke tests of `moezoo data ...` and `moezoo bench data`, and their one-line errors."""

from __future__ import annotations

import json

from moezoo.cli import main
from moezoo.data.shards import DatasetIndex


def test_build_each_dataset(tmp_path, capsys):
    for name, extra in (("shapes-vqa", ["--n-captions", "2"]), ("digits-vqa", ["--image-size", "24"]), ("text", [])):
        out = tmp_path / name
        args = ["data", "build", name, "--out", str(out), "--seed", "7", "--n-train", "6", "--n-val", "2", "--n-test", "3"]
        assert main(args + extra) == 0
        index = DatasetIndex.load(out)
        assert index.seed == 7 and index.splits["train"].samples == 6 and index.splits["test"].samples == 3
    assert "wrote shapes-vqa" in capsys.readouterr().out
    assert DatasetIndex.load(tmp_path / "shapes-vqa").splits["captions"].samples == 2
    assert (tmp_path / "digits-vqa/test_annotations.json").is_file()


def test_build_flags_left_out_keep_the_dataset_defaults(tmp_path):
    from moezoo.data import digits, text

    assert main(["data", "build", "digits-vqa", "--out", str(tmp_path / "d"), "--n-train", "2", "--n-val", "0",
                 "--n-test", "0", "--n-captions", "0"]) == 0  # fmt: skip
    config = DatasetIndex.load(tmp_path / "d").extra["config"]
    assert config == {**vars(digits.DEFAULT_CONFIG), "n_train": 2, "n_val": 0, "n_test": 0, "n_captions": 0}
    assert config["image_size"] == 32 and config["seed"] == 0
    assert main(["data", "build", "text", "--out", str(tmp_path / "t"), "--n-train", "3", "--n-val", "1"]) == 0
    config = DatasetIndex.load(tmp_path / "t").extra["config"]
    assert config["samples_per_shard"] == text.DEFAULT_CONFIG.samples_per_shard


def test_tokenizer_and_from_llava(tmp_path, shapes_dir, capsys):
    assert main(["data", "tokenizer", "--corpus", str(shapes_dir), "--out", str(tmp_path / "tok"), "--vocab-size", "300"]) == 0
    assert "vocab 300" in capsys.readouterr().out
    conv = [{"id": "a", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    (tmp_path / "c.json").write_text(json.dumps(conv))
    assert main(["data", "from-llava", str(tmp_path / "c.json"), str(tmp_path), "--out", str(tmp_path / "l")]) == 0
    assert DatasetIndex.load(tmp_path / "l").splits["train"].samples == 1


def test_bad_input_is_one_line(tmp_path, capsys):
    assert main(["data", "build", "text", "--out", str(tmp_path), "--n-captions", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "moezoo data: error: --n-captions does not apply to dataset 'text'"
    assert main(["data", "build", "shapes-vqa", "--out", str(tmp_path), "--n-train", "-1"]) == 2
    assert "n_train=-1 must be >= 0" in capsys.readouterr().err
    assert main(["data", "from-llava", str(tmp_path / "missing.json"), str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing.json not found" in err
    assert main(["data", "tokenizer", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "t")]) == 2


def test_bench_data(tmp_path, shapes_dir, tokenizer_dir, capsys):
    out = tmp_path / "bench.json"
    args = ["bench", "data", "--data", str(shapes_dir), "--tokenizer", str(tokenizer_dir), "--workers", "0,1",
            "--samples", "16", "--repeats", "1", "--json", str(out)]  # fmt: skip
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert [r["workers"] for r in result["results"]] == [0, 1] and all(r["samples_per_s"] > 0 for r in result["results"])
    assert "samples/s" in capsys.readouterr().out
