"""Run by ``test_fsdp.py`` in a subprocess (Lightning's strategies relaunch ``sys.argv``):
``python train_worker.py OUT_DIR DEVICES EP [COMPILE [STEPS]]`` trains ``moe_lm_tiny`` for a few steps on a fixed global batch
of 4 sequences with padding, on one process (``DEVICES=1``: the plain single-device Trainer, the oracle) or
under ``ModelParallelStrategy`` (FSDP2 over ``DEVICES`` CPU processes, experts sharded over ``EP`` of them).
Each rank writes its step losses to ``OUT_DIR/rank{r}.json``; the parallel runs also leave a Lightning
checkpoint (``last.ckpt``, gathered), a ``save_pretrained`` model dir (``model/``) and the logits of a probe
batch computed by the sharded model (``logits.pt``). ``COMPILE=1`` compiles the blocks; the step times are
recorded too."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import torch

from moezoo.train.module import MoEZooModule

STEPS, GLOBAL_BATCH, SEQ = 4, 4, 12
OVERRIDES = {"moe": {"aux_loss_coef": 0.1, "z_loss_coef": 0.01}}


def samples() -> list[dict[str, torch.Tensor]]:
    """Right-padded sequences of different lengths: the ranks hold different numbers of label tokens."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(STEPS * GLOBAL_BATCH):
        n = 4 + (i * 5) % (SEQ - 3)
        ids = torch.zeros(SEQ, dtype=torch.long)
        ids[:n] = torch.randint(3, 500, (n,), generator=g)
        mask = (torch.arange(SEQ) < n).long()
        out.append({"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)})
    return out


def probe() -> torch.Tensor:
    return torch.randint(3, 500, (2, SEQ), generator=torch.Generator().manual_seed(1))


class RankSampler(torch.utils.data.Sampler):
    """Rank ``r`` of ``n`` takes samples ``r, r + n, ...`` in order, so a step's ``n`` local batches together
    are the one-process batch of that step (Lightning's own distributed sampler shuffles)."""

    def __init__(self, size: int):
        self.size = size

    def __iter__(self):
        dist = torch.distributed
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
        return iter(range(rank, self.size, world))

    def __len__(self) -> int:
        return self.size // (torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1)


class Losses(pl.Callback):
    def __init__(self):
        self.losses: list[float] = []
        self.seconds: list[float] = []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())
        self.seconds.append(time.perf_counter() - self.start)


def main(out_dir: str, devices: int, ep: int, compile: bool = False, steps: int = STEPS) -> None:
    from lightning.pytorch.strategies import ModelParallelStrategy

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    torch.manual_seed(0)  # the same weights in every run and on every rank (built before any process starts)
    module = MoEZooModule(arch="moe_lm_tiny", overrides=OVERRIDES, lr=1e-3, expert_parallel=ep,
                          compile=compile)
    module.configure_model()  # builds the model; under the strategy, its own call parallelises it
    losses = Losses()
    strategy = (ModelParallelStrategy(data_parallel_size=devices, tensor_parallel_size=1,
                                      save_distributed_checkpoint=False) if devices > 1 else "auto")
    trainer = pl.Trainer(accelerator="cpu", devices=devices, strategy=strategy, max_steps=steps, logger=False,
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         default_root_dir=out_dir, callbacks=[losses], use_distributed_sampler=False)
    data = samples()
    loader = torch.utils.data.DataLoader(data, batch_size=GLOBAL_BATCH // devices, sampler=RankSampler(len(data)))
    trainer.fit(module, train_dataloaders=loader)
    record = {"losses": losses.losses, "seconds": losses.seconds, "parallelized": module.parallelized}
    if devices > 1:
        trainer.save_checkpoint(Path(out_dir, "last.ckpt"))
        module.save_pretrained(Path(out_dir, "model"))
        module.model.eval()
        with torch.no_grad():
            logits = module.model(input_ids=probe()).logits
        if trainer.is_global_zero:
            torch.save(logits, Path(out_dir, "logits.pt"))
    Path(out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(record))
    trainer.strategy.barrier("results written")  # rank 0, the launcher, must not exit before rank 1 has written


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], int(args[1]), int(args[2]), len(args) > 3 and args[3] == "1", int(args[4]) if len(args) > 4 else STEPS)
