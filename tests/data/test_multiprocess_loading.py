"""2 processes (torch.distributed, gloo) x 2 workers: the non-resampled epoch has no duplicate.

The test starts this file twice as a script, once per rank, as ``torchrun`` would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

WORLD_SIZE, WORKERS = 2, 2


def _rank(rank: int, data: str, tokenizer: str, init_file: str, out: str) -> None:
    import torch.distributed as dist

    from moezoo.processing.processor import Processor
    from moezoo.processing.tokenizer import load_tokenizer
    from moezoo.train.datamodule import ShardDataModule

    spec = {"kind": "simple", "size": [64, 64], "mean": [0.0] * 3, "std": [1.0] * 3}
    processor = Processor(load_tokenizer(tokenizer), {"image": 1}, image=spec)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    seen = {}
    for resampled in (False, True):
        dm = ShardDataModule(data, processor=processor, batch_size=3, num_workers=WORKERS, resampled=resampled,
                             epoch_length=24, test_split=None)  # fmt: skip
        seen["resampled" if resampled else "train"] = [k for b in dm.train_dataloader() for k in b["keys"]]
    seen["val"] = [k for b in dm.val_dataloader() for k in b["keys"]]
    gathered: list = [None] * WORLD_SIZE
    dist.all_gather_object(gathered, seen)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered))
    dist.destroy_process_group()


@pytest.mark.multiprocess
def test_two_ranks_two_workers_no_duplicates(tmp_path, tokenizer_dir):
    from moezoo.data.scenes import build_shapes_vqa
    from moezoo.data.vqa import VQABuildConfig

    data = tmp_path / "shapes"
    # 16 train shards and 4 val shards, so each of the 2 x 2 readers gets at least one.
    build_shapes_vqa(data, VQABuildConfig(n_train=64, n_val=16, n_test=0, n_captions=0, samples_per_shard=4))
    out = tmp_path / "keys.json"
    procs = [
        subprocess.Popen([sys.executable, __file__, str(rank), str(data), str(tokenizer_dir), str(tmp_path / "init"),
                          str(out)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        for rank in range(WORLD_SIZE)
    ]
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0] * WORLD_SIZE, "\n".join(log[-3000:] for log in logs)
    ranks = json.loads(out.read_text())
    for split, n in (("train", 64), ("val", 16)):
        keys = [k for r in ranks for k in r[split]]
        assert len(keys) == len(set(keys)) == n, split  # every sample exactly once across ranks and workers
        assert all(r[split] for r in ranks)
    # Resampled: each rank draws its own stream of the set length.
    assert all(len(r["resampled"]) == 24 for r in ranks) and ranks[0]["resampled"] != ranks[1]["resampled"]


if __name__ == "__main__":
    _rank(int(sys.argv[1]), *sys.argv[2:6])
