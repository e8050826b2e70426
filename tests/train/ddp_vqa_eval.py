"""Run by ``test_eval_callbacks.py`` in a subprocess (Lightning's DDP relaunches ``sys.argv``):
``python ddp_vqa_eval.py OUT_DIR DEVICES`` validates one seeded model with :class:`VQAEvalCallback`
under ``DEVICES`` CPU processes (gloo) and writes each rank's metrics, how many prompts it answered
and (rank 0) the gathered rows to ``OUT_DIR/rank{r}.json``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch

from moezoo.data.shards import shipped_dataset
from moezoo.eval import generation
from moezoo.train.datamodule import ShardDataModule
from moezoo.train.eval_callbacks import VQAEvalCallback
from moezoo.train.module import MoEZooModule


def main(out_dir: str, devices: int) -> None:
    answered = []
    original = generation.generate_answers

    def counting(model, prompts, *args, **kwargs):  # how many prompts this rank generated for
        answered.append(len(prompts))
        return original(model, prompts, *args, **kwargs)

    generation.generate_answers = counting
    torch.manual_seed(0)  # the same weights in every run and on every rank (built before any process starts)
    module = MoEZooModule(arch="mm_tiny_cnn", stage="finetune")
    module.configure_model()  # idempotent: Lightning's later call keeps this model
    # One in-memory validation batch: each rank gets it once (the shipped val split is one shard, which
    # webdataset would give to rank 0 alone); the callback, not the batch, is under test.
    dm = ShardDataModule(shipped_dataset("shapes-vqa"), processor="mm_tiny_cnn", batch_size=4, resampled=False,
                         shuffle_buffer=0)
    batch = next(iter(dm.val_dataloader()))
    callback = VQAEvalCallback("shapes_vqa", limit=7, batch_size=2, max_new_tokens=4, out_dir=f"{out_dir}/eval")
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto", logger=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=out_dir,
                         callbacks=[callback])
    trainer.validate(module, dataloaders=torch.utils.data.DataLoader([batch], batch_size=None))
    rows = json.loads(Path(out_dir, "eval", "shapes_vqa-step0.json").read_text())["rows"] if trainer.is_global_zero else None
    checksum = sum(float(p.double().sum()) for p in module.model.parameters())
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(
        {"metrics": callback.results["shapes_vqa"], "answered": sum(answered), "rows": rows, "checksum": checksum}))
    # Rank 0 is the launching process: without this barrier it may exit, and Lightning's process observer
    # take rank 1 down, before rank 1 has written its file.
    trainer.strategy.barrier("results written")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
