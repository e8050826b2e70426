"""Training-loader throughput (samples/s) of the shard pipeline with 0, 1 and 2 workers.

Each figure is the median over repeats of one full resampled epoch of
``ShardDataModule.train_dataloader()``: shard reading, PNG decoding, the image
preprocessing of the quickstart model's processor (``film_cnn_moe_small``), the chat
template, tokenisation and the padding collate, with worker start-up included, as a
training run pays it each epoch without persistent workers.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path



def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", default=None, help="dataset dir (default: the shipped data/shapes-vqa)")
    parser.add_argument("--tokenizer", default=None, help="tokenizer dir (default: the zoo tokenizer shipped in the package)")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated worker counts")
    parser.add_argument("--samples", type=int, default=2048, help="samples per timed epoch")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)


def _inputs(args: argparse.Namespace, tmp: Path) -> tuple[str, str]:
    """The dataset and tokenizer: given, shipped, or (in a bare checkout) built small in ``tmp``."""
    data, tok = args.data, args.tokenizer
    if data is None:
        from moezoo.data.shards import shipped_dataset

        try:
            data = shipped_dataset("shapes-vqa")
        except FileNotFoundError:
            from moezoo.data.scenes import build_shapes_vqa
            from moezoo.data.vqa import VQABuildConfig

            data = tmp / "shapes-vqa"
            build_shapes_vqa(data, VQABuildConfig(n_train=512, n_val=0, n_test=0, n_captions=0, samples_per_shard=64))
    if tok is None:
        from moezoo.processing.tokenizer import ZOO_TOKENIZER_DIR

        tok = ZOO_TOKENIZER_DIR
    return str(data), str(tok)


def run(args: argparse.Namespace) -> dict:
    from moezoo.bench.timing import median, time_interleaved
    from moezoo.processing.processor import Processor
    from moezoo.processing.tokenizer import load_tokenizer
    from moezoo.train.datamodule import ShardDataModule, resolve_processor

    workers = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        data, tok_dir = _inputs(args, Path(tmp))
        quickstart = resolve_processor("film_cnn_moe_small")  # its token counts and preprocessing, this tokenizer
        processor = Processor(load_tokenizer(tok_dir), quickstart.num_tokens, image=quickstart.image_spec)
        modules = {
            w: ShardDataModule(data, processor=processor, batch_size=args.batch_size, num_workers=w,
                               epoch_length=args.samples, val_split=None, test_split=None)  # fmt: skip
            for w in workers
        }

        def epoch(dm) -> None:
            seen = sum(len(batch["keys"]) for batch in dm.train_dataloader())
            assert seen >= args.samples, f"the epoch gave {seen} samples, expected {args.samples}"

        fns = {f"{w} workers": (lambda dm=dm: epoch(dm)) for w, dm in modules.items()}
        seconds = time_interleaved(fns, repeats=args.repeats, warmup=0)
    rows = [{"workers": w, "samples_per_s": args.samples / median(seconds[f"{w} workers"])} for w in workers]
    print(f"data loader ({Path(data).name}, batch {args.batch_size}, {args.samples} samples/epoch, "
          f"median of {args.repeats})")  # fmt: skip
    print(f"{'workers':>8} {'samples/s':>10}")
    for row in rows:
        print(f"{row['workers']:>8} {row['samples_per_s']:>10.0f}")
    return {"benchmark": "data", "dataset": Path(data).name, "batch_size": args.batch_size,
            "samples": args.samples, "repeats": args.repeats, "results": rows}  # fmt: skip
