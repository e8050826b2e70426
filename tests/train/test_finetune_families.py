"""Fine-tuning the imported MoE VLM families with ``moezoo fit`` (issue I, item 5).

Each test writes a tiny random checkpoint in its family's own released layout (Qwen3-VL-MoE's transformers
format, MoE-LLaVA's DeepSpeed keys, LibMoE's ``moelayer`` keys), trains it for 20 seeded steps on the shipped
shapes-VQA through the CLI (``--model.checkpoint DIR``: the data takes the model's own processor, which renders
each example with the checkpoint's chat template through ``encode_example``), in one of the existing stages:

* Qwen3-VL-MoE, ``finetune``: the patch mergers (its connector) and the LLM, experts included;
* MoE-LLaVA, ``moe``: the LLM's MoE layers only (MoE-LLaVA's own stage 3);
* LibMoE, ``moe``: its MoE SigLIP tower MLPs and its MoE projector, the dense Phi-3 LLM frozen.

The mean of the last five losses must be below that of the first five, and the run's Lightning checkpoint,
exported with ``moezoo export``, must load with ``moezoo.load`` and give the trained model's logits exactly.

The tiny checkpoints' word-level tokenizers get shapes-VQA's words in place of their placeholder words (same
ids), so the examples are the data's words rather than ``<unk>``.
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch

import moezoo
from moezoo.cli import main
from moezoo.data.shards import shipped_dataset
from moezoo.train.module import model_inputs

STEPS = 20
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def _qwen3_vl(path: Path) -> None:
    from moezoo.convert.qwen3_vl_testing import tiny_qwen3_vl_checkpoint

    tiny_qwen3_vl_checkpoint(path, seed=0)


def _moe_llava(path: Path) -> None:
    from moezoo.convert.moe_llava_testing import tiny_moe_llava_checkpoint

    tiny_moe_llava_checkpoint(path, "phi", seed=0)


def _libmoe(path: Path) -> None:
    from moezoo.convert.libmoe_testing import tiny_libmoe_checkpoint
    from moezoo.convert.testing import tiny_tokenizer

    tiny_libmoe_checkpoint(path, "smoe", seed=0)
    tiny_tokenizer(60).save_pretrained(str(path))  # LibMoE's tokenizer files (the tiny Phi-3 has 64 rows)


# family -> (checkpoint writer, stage, what must train (part -> trains?)).
FAMILIES = {
    "qwen3_vl_moe": (_qwen3_vl, "finetune", {"connector": True, "llm": True, "encoder": False}),
    "moe_llava_phi": (_moe_llava, "moe", {"connector": False, "llm": True, "encoder": False}),
    "libmoe_smoe": (_libmoe, "moe", {"connector": True, "llm": False, "encoder": True}),
}


def _shapes_words(n: int) -> list[str]:
    """The ``n`` most frequent whitespace-separated words of shapes-VQA's first training shard."""
    counts: Counter[str] = Counter()
    with tarfile.open(shipped_dataset("shapes-vqa") / "train-000000.tar.gz") as tar:
        for member in tar:
            if member.name.endswith(".json"):
                body = json.load(io.TextIOWrapper(tar.extractfile(member), "utf-8"))
                counts.update(w for turn in body["conversations"] for w in turn["value"].split())
    return [w for w, _ in counts.most_common(n) if w != "<image>"]


def _teach_words(path: Path) -> None:
    """Rename the word-level tokenizer's placeholder words ``w0, w1, ...`` to shapes-VQA's words (same ids)."""
    file = path / "tokenizer.json"
    spec = json.loads(file.read_text())
    vocab = spec["model"]["vocab"]
    placeholders = sorted((t for t in vocab if t[0] == "w" and t[1:].isdigit()), key=vocab.get)
    for word, old in zip(_shapes_words(len(placeholders)), placeholders):
        vocab[word] = vocab.pop(old)
    file.write_text(json.dumps(spec))


def _losses(root: Path) -> list[float]:
    with open(next(root.rglob("metrics.csv"))) as file:
        return [float(r["train/loss"]) for r in csv.DictReader(file) if r.get("train/loss")]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_fit_lowers_the_loss_and_the_export_loads_with_the_same_logits(family, tmp_path, capsys):
    from moezoo.train.cli import MoEZooCLI

    write, stage, trains = FAMILIES[family]
    ckpt = tmp_path / "checkpoint"
    write(ckpt)
    _teach_words(ckpt)
    root = tmp_path / "run"
    cli = MoEZooCLI(args=[
        "--seed_everything", "0", "--model.checkpoint", str(ckpt), "--model.stage", stage, "--model.lr", "3e-3",
        "--data.data_dir", str(shipped_dataset("shapes-vqa")), "--data.batch_size", "8",
        "--data.epoch_length", str(8 * STEPS), "--data.shuffle_buffer", "64", "--data.test_split", "null",
        "--trainer.max_steps", str(STEPS), "--trainer.limit_val_batches", "0", "--trainer.num_sanity_val_steps", "0",
        "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root),
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(root),
    ], run=False)
    module = cli.model
    cli.trainer.fit(module, datamodule=cli.datamodule)

    # The stage trained the family's parts, and only those: every frozen weight is as the checkpoint has it.
    assert {part: module.trainable[part] > 0 for part in trains} == trains
    start = dict(moezoo.load(ckpt).named_parameters())
    frozen = {n: p for n, p in module.model.named_parameters() if not p.requires_grad}
    assert frozen and all(torch.equal(p, start[n]) for n, p in frozen.items())
    assert any(not torch.equal(p, start[n]) for n, p in module.model.named_parameters() if p.requires_grad)
    losses = _losses(root)
    assert len(losses) == STEPS
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"{family}: first five {first:.4f}, last five {last:.4f}")
    assert last < first

    # The Lightning checkpoint exports to a model dir that loads with the trained weights, exactly.
    (saved,) = root.rglob("*.ckpt")  # Lightning's default checkpoint, at the end of the run
    assert main(["export", str(saved), "--out", str(tmp_path / "exported")]) == 0
    loaded = moezoo.load(tmp_path / "exported")
    batch = model_inputs(next(iter(cli.datamodule.val_dataloader())))
    trained = module.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, trained(**batch).logits, rtol=0, atol=0)
    assert type(loaded.processor) is type(trained.processor)  # the processor travels with the weights
