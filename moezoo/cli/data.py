"""``moezoo data``: build the shipped datasets, convert LLaVA data, train the BPE tokenizer.

    moezoo data build shapes-vqa|digits-vqa|text --out DIR [--seed S] [--n-train N ...]
    moezoo data from-llava conversations.json IMAGE_DIR --out DIR
    moezoo data tokenizer --corpus DIR [DIR ...] --out DIR [--vocab-size N]

Heavy imports happen inside the handlers so ``moezoo --help`` stays fast.
"""

from __future__ import annotations

import argparse

DATASETS = ("shapes-vqa", "digits-vqa", "text")
# Defaults per dataset when --n-* is not given: what data/build.sh ships.
DEFAULT_SIZES = {
    "shapes-vqa": {"n_train": 1000, "n_val": 100, "n_test": 200, "n_captions": 200, "image_size": 64},
    "digits-vqa": {"n_train": 1000, "n_val": 100, "n_test": 200, "n_captions": 200, "image_size": 32},
    "text": {"n_train": 1500, "n_val": 100, "n_test": 0},
}


def register(sub) -> None:
    parser = sub.add_parser("data", help="build datasets, convert LLaVA data, train a tokenizer")
    cmds = parser.add_subparsers(dest="data_command", required=True, metavar="COMMAND")

    build = cmds.add_parser("build", help="generate a dataset as webdataset shards")
    build.add_argument("dataset", choices=DATASETS)
    build.add_argument("--out", required=True, help="output dataset dir")
    build.add_argument("--seed", type=int, default=0, help="the same seed gives the same bytes")
    for split in ("train", "val", "test", "captions"):
        build.add_argument(f"--n-{split}", type=int, default=None, help=f"samples in the {split} split")
    build.add_argument("--samples-per-shard", type=int, default=250)
    build.add_argument("--image-size", type=int, default=None, help="image side in pixels (VQA datasets)")
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


def _sizes(args: argparse.Namespace, keys: tuple[str, ...]) -> dict[str, int]:
    given = {k: getattr(args, k) for k in keys if getattr(args, k) is not None}
    unknown = sorted(k for k in ("n_captions", "image_size") if k not in keys and getattr(args, k) is not None)
    if unknown:
        flags = ", ".join("--" + k.replace("_", "-") for k in unknown)
        raise ValueError(f"{flags} does not apply to dataset {args.dataset!r}")
    return {**{k: v for k, v in DEFAULT_SIZES[args.dataset].items() if k in keys}, **given}


def _build(args: argparse.Namespace) -> int:
    if args.dataset == "text":
        from moezoo.data.text import TextBuildConfig, build_text

        cfg = TextBuildConfig(seed=args.seed, samples_per_shard=args.samples_per_shard,
                              **_sizes(args, ("n_train", "n_val", "n_test")))  # fmt: skip
        index = build_text(args.out, cfg)
    else:
        from moezoo.data.digits import build_digits_vqa
        from moezoo.data.scenes import build_shapes_vqa
        from moezoo.data.vqa import VQABuildConfig

        keys = ("n_train", "n_val", "n_test", "n_captions", "image_size")
        cfg = VQABuildConfig(seed=args.seed, samples_per_shard=args.samples_per_shard, **_sizes(args, keys))
        index = (build_shapes_vqa if args.dataset == "shapes-vqa" else build_digits_vqa)(args.out, cfg)
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
