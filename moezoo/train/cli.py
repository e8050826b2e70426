"""``moezoo fit|validate|test|predict``: Lightning's CLI over :class:`MoEZooModule` and :class:`ShardDataModule`.

A run is a YAML config (``-c configs/quickstart.yaml``) with the ``model:`` (the module's
arguments), ``data:`` (the datamodule's) and ``trainer:`` sections, overridden by dotted flags
(``--trainer.max_steps 10``); ``--print_config`` prints the merged config. What moezoo adds to
Lightning's defaults:

- **W&B is the default logger**, offline unless W&B is configured on this machine (an API
  key in ``WANDB_API_KEY`` or ``~/.netrc``, or ``WANDB_MODE`` set); a CSV or TensorBoard
  logger is one flag away (``--trainer.logger lightning.pytorch.loggers.CSVLogger``).
- :class:`~moezoo.train.callbacks.SkippedSamplesLogger` always runs (``data/skipped``).
- Relative ``data_dir`` / ``mix`` paths that do not exist where the command runs are looked up
  in the shipped data (the source tree's ``data/`` or ``$MOEZOO_DATA``, see
  :func:`moezoo.data.shards.shipped_dataset`), so a run started outside the repository finds them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI

from moezoo.train.callbacks import SkippedSamplesLogger
from moezoo.train.checkpoints import allow_lightning_types
from moezoo.train.datamodule import ShardDataModule
from moezoo.train.module import MoEZooModule


def wandb_configured() -> bool:
    """Whether W&B can log online here: ``WANDB_MODE`` chosen, or an API key in the env or ``~/.netrc``."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="replace")


def default_logger() -> dict[str, Any]:
    """The trainer's default logger: W&B, offline unless configured (see :func:`wandb_configured`)."""
    offline = not wandb_configured() or os.environ.get("WANDB_MODE") == "offline"
    return {"class_path": "lightning.pytorch.loggers.WandbLogger",
            "init_args": {"project": "moezoo", "offline": offline, "save_dir": "runs"}}


class MoEZooCLI(LightningCLI):
    """The ``moezoo`` training CLI (see the module docstring).

    Example:
        >>> cli = MoEZooCLI(args=["--model.arch", "moe_lm_tiny", "--data.data_dir", "data/text",
        ...                       "--data.tokenizer", "moezoo/assets/tokenizer", "--data.test_split", "null",
        ...                       "--trainer.logger", "false"], run=False)
        >>> type(cli.model).__name__, cli.datamodule.config.batch_size
        ('MoEZooModule', 32)
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any):
        super().__init__(MoEZooModule, ShardDataModule, args=args, run=run,
                         trainer_defaults={"logger": default_logger()},
                         save_config_kwargs={"overwrite": True},
                         parser_kwargs={"prog": "moezoo"},
                         **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(SkippedSamplesLogger, "skipped_samples")

    def _add_subcommands(self, parser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        allow_lightning_types()
        for sub in self._subcommand_parsers.values():  # resuming unpickles nothing but weights and plain types
            if "weights_only" in {a.dest for a in sub._actions}:
                sub.set_defaults(weights_only=True)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        data = config.get("data") if hasattr(config, "get") else None
        if data is not None:
            data["data_dir"] = shipped_or_given(data.get("data_dir"))
            if data.get("mix"):
                data["mix"] = [shipped_or_given(d) for d in data["mix"]]


def shipped_or_given(path: str | None) -> str | None:
    """``path``, or the shipped dataset of its name when ``path`` is relative and missing here
    (``data/shapes-vqa`` from outside the repository).

    Example:
        >>> shipped_or_given("no/such/shapes-vqa").endswith("shapes-vqa")
        True
    """
    if not path or Path(path).exists() or Path(path).is_absolute():
        return path
    from moezoo.data.shards import shipped_dataset

    try:
        return str(shipped_dataset(Path(path).name))
    except FileNotFoundError:
        return path  # the datamodule reports the missing dir itself


def main(argv: list[str]) -> int:
    """Run ``moezoo SUBCOMMAND ...`` (``argv`` starts with fit / validate / test / predict)."""
    import sys

    MoEZooCLI(args=None if argv == sys.argv[1:] else argv)  # None: Lightning reads sys.argv itself
    return 0
