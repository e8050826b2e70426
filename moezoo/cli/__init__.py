"""The ``moezoo`` command line.

Every sub-command lives in its own module with a ``register(subparsers)`` that
adds its parser and sets ``func``; modules import heavy dependencies inside
``func`` so ``moezoo --help`` stays fast.

Example:
    >>> main(["--help"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Sub-command name -> module providing ``register(subparsers)``.
# Lightning's CLI (moezoo.train.cli) parses these itself: `moezoo fit -c configs/x.yaml --trainer.max_steps 10`.
TRAINING = {"fit": "train a model", "validate": "evaluate the validation split", "test": "evaluate the test split",
            "predict": "run prediction"}

COMMANDS = {
    "list": "moezoo.cli.models",  # also registers `info`
    "chat": "moezoo.cli.chat",
    "eval": "moezoo.cli.eval",
    "analyze": "moezoo.cli.analyze",
    "export": "moezoo.cli.export",
    "data": "moezoo.cli.data",
    "bench": "moezoo.cli.bench",
    "zoo": "moezoo.cli.zoo",
    "demo": "moezoo.cli.demo",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="moezoo", description="A multimodal Mixture-of-Experts model zoo.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, text in TRAINING.items():  # listed here; run by Lightning's CLI (see main)
        sub.add_parser(name, help=f"{text} (Lightning CLI: -c CONFIG.yaml, --print_config, --trainer.max_steps N)")
    for module in COMMANDS.values():
        importlib.import_module(module).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``moezoo`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in TRAINING:
        from moezoo.train.cli import main as train_main

        return train_main(list(argv))
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except (ValueError, FileNotFoundError, KeyError) as err:  # user errors: one clear line, no traceback
        print(f"moezoo {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
