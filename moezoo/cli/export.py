"""``moezoo export CKPT --out DIR [--format moezoo|hf]``: a Lightning checkpoint to a loadable model dir.

The checkpoint is read with ``torch.load(weights_only=True)`` (see :mod:`moezoo.train.checkpoints`);
the dir is what ``moezoo.load`` (``moezoo``) or transformers (``hf``) loads.
"""

from __future__ import annotations

import argparse


def register(sub) -> None:
    parser = sub.add_parser("export", help="write a training checkpoint as a model dir (moezoo or transformers)")
    parser.add_argument("checkpoint", help="a Lightning .ckpt of a moezoo fit run")
    parser.add_argument("--out", required=True, help="the model dir to write")
    parser.add_argument("--format", choices=["moezoo", "hf"], default="moezoo")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from moezoo.train.checkpoints import export_checkpoint

    print(f"wrote {export_checkpoint(args.checkpoint, args.out, args.format)}")
    return 0
