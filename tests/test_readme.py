"""The README's multimodal example runs as written (in a scratch dir)."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_multimodal_example_runs(tmp_path, monkeypatch, capsys):
    section = README.read_text().split("## Multimodal MoE models", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md", "exec"), {})
    assert (tmp_path / "mm-ckpt" / "moezoo_config.json").is_file()
    assert (tmp_path / "llava-hf" / "config.json").is_file()
    capsys.readouterr()


def test_moe_vlm_family_examples_run(tmp_path, monkeypatch, capsys):
    """The Qwen3-VL-MoE, MoE-LLaVA and LibMoE examples, on tiny checkpoints of each format at the paths shown."""
    import numpy as np
    from PIL import Image

    import moezoo
    from moezoo.convert.libmoe_testing import tiny_libmoe_checkpoint
    from moezoo.convert.moe_llava_testing import tiny_moe_llava_checkpoint
    from moezoo.convert.qwen3_vl_testing import tiny_qwen3_vl_checkpoint
    from moezoo.convert.testing import tiny_tokenizer

    section = README.read_text().split("### The field's MoE vision-language checkpoints", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    paths = ["path/to/Qwen3-VL-30B-A3B-Instruct", "path/to/MoE-LLaVA-Phi2-2.7B-4e",
             "path/to/Phi3.5-Siglip-MoE/<router sub-folder>"]
    assert len(blocks) == len(paths)
    monkeypatch.chdir(tmp_path)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8)).save("cat.png")
    tiny_qwen3_vl_checkpoint(tmp_path / "qwen3_vl")
    tiny_moe_llava_checkpoint(tmp_path / "moe_llava", "phi")
    tiny_libmoe_checkpoint(tmp_path / "libmoe", "smoe_share")
    tiny_tokenizer(60).save_pretrained(str(tmp_path / "libmoe"))  # a processor needs a tokenizer
    names = {}
    for block, path, local in zip(blocks, paths, ("qwen3_vl", "moe_llava", "libmoe")):
        assert path in block
        exec(compile(block.replace(path, str(tmp_path / local)), "README.md", "exec"), names)  # noqa: S102
    for out, family in (("qwen3-vl-hf", "qwen3_vl_moe"), ("moe-llava-out", "moe_llava_phi"),
                        ("libmoe-out", "llava_phi")):
        assert f'"model_type": "{family}"' in (tmp_path / out / "config.json").read_text()
        moezoo.load(tmp_path / out)
    capsys.readouterr()
