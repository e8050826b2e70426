"""``moezoo data``: build the shipped datasets, convert LLaVA data, train the BPE tokenizer.

    moezoo data build shapes-vqa|digits-vqa|tones-qa|text --out DIR [--seed S] [--n-train N ...]
    moezoo data from-llava conversations.json IMAGE_DIR --out DIR
    moezoo data tokenizer --corpus DIR [DIR ...] --out DIR [--vocab-size N]

Heavy imports happen inside the handlers so ``moezoo --help`` stays fast.
"""

from __future__ import annotations

import argparse

from moezoo.data.builders import DATASETS
# Flags of `moezoo data build` that override a field of the dataset's config when given.
BUILD_FIELDS = ("seed", "n_train", "n_val", "n_test", "n_captions", "samples_per_shard", "image_size", "sample_rate",
                "sample_width", "noise")


def register(sub) -> None:
    parser = sub.add_parser("data", help="build datasets, convert LLaVA data, train a tokenizer")
    cmds = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    build = cmds.add_parser("build", help="generate a dataset as webdataset shards",
                            description="Generate a dataset as webdataset shards. Flags left out keep the dataset's "
                            "defaults: DEFAULT_CONFIG in " + ", ".join(module for module, _ in DATASETS.values()))
    build.add_argument("dataset", choices=list(DATASETS))
    build.add_argument("--out", required=True, help="output dataset dir")
    build.add_argument("--seed", type=int, help="the same seed gives the same bytes (default 0)")
    for split in ("train", "val", "test", "captions"):
        build.add_argument(f"--n-{split}", type=int, help=f"samples in the {split} split")
    build.add_argument("--samples-per-shard", type=int)
    build.add_argument("--image-size", type=int, help="image side in pixels (VQA datasets)")
    build.add_argument("--sample-rate", type=int, help="audio sample rate of the WAV clips in Hz (tones-qa)")
    build.add_argument("--sample-width", type=int, help="bytes per audio sample, 1 or 2 (tones-qa)")
    build.add_argument("--noise", type=float, help="standard deviation of the clips' noise (tones-qa)")
    build.set_defaults(func=_build)

    llava = cmds.add_parser("from-llava", help="convert LLaVA conversations JSON + images to shards")
    llava.add_argument("conversations", help="LLaVA JSON list (or .jsonl)")
    llava.add_argument("image_dir", help="folder the records' 'image' paths are relative to")
    llava.add_argument("--out", required=True, help="output dataset dir")
    llava.add_argument("--split", default="train")
    llava.add_argument("--samples-per-shard", type=int, default=1000)
    llava.set_defaults(func=_from_llava)

    tok = cmds.add_parser("tokenizer", help="train the byte-level BPE tokenizer on shards")
    tok.add_argument("--corpus", nargs="+", required=True, help="dataset dirs or shard files to train on")
    tok.add_argument("--out", required=True, help="output tokenizer dir (tokenizer.json)")
    tok.add_argument("--vocab-size", type=int, default=4096)
    tok.add_argument("--min-frequency", type=int, default=2)
    tok.set_defaults(func=_tokenizer)


def _build(args: argparse.Namespace) -> int:
    import dataclasses

    from moezoo.data.builders import build_config, build_named

    given = {k: getattr(args, k) for k in BUILD_FIELDS if getattr(args, k) is not None}
    unknown = sorted(set(given) - {f.name for f in dataclasses.fields(build_config(args.dataset))})
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ValueError(f"{flags} does not apply to dataset {args.dataset!r}")
    index = build_named(args.dataset, args.out, **given)
    _print_index(index, args.out)
    return 0


def _from_llava(args: argparse.Namespace) -> int:
    from moezoo.data.llava import convert_llava

    index, report = convert_llava(args.conversations, args.image_dir, args.out, args.split, args.samples_per_shard)
    _print_index(index, args.out)
    if report.missing_images:
        print(f"skipped {len(report.missing_images)} records whose image is missing, e.g. {report.missing_images[:3]}")
    return 0


def _tokenizer(args: argparse.Namespace) -> int:
    from moezoo.data.tokenizer import TokenizerConfig, build_tokenizer

    tok = build_tokenizer(args.corpus, args.out, TokenizerConfig(args.vocab_size, args.min_frequency))
    print(f"wrote {args.out}/tokenizer.json: vocab {len(tok)}")
    return 0


def _print_index(index, out: str) -> None:
    splits = ", ".join(f"{name} {info.samples} ({len(info.shards)} shards)" for name, info in index.splits.items())
    print(f"wrote {index.name} to {out}: {splits}")
