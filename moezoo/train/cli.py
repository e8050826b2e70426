"""``moezoo fit|validate|test|predict``: Lightning's CLI over :class:`MoEZooModule` and :class:`ShardDataModule`.

A run is a YAML config (``-c configs/quickstart.yaml``) with the ``model:`` (the module's
arguments), ``data:`` (the datamodule's) and ``trainer:`` sections, overridden by dotted flags
(``--trainer.max_steps 10``); ``--print_config`` prints the merged config. What moezoo adds to
Lightning's defaults:

- **W&B is the default logger**, offline unless W&B is configured on this machine (an API
  key in ``WANDB_API_KEY`` or ``~/.netrc``, or ``WANDB_MODE`` set); a CSV or TensorBoard
  logger is one flag away (``--trainer.logger lightning.pytorch.loggers.CSVLogger``).
- The data takes the model's processor (``link_arguments`` from ``model`` to ``data.processor``), so
  a config names its architecture (``model.arch``) or checkpoint (``model.checkpoint``) once.
- :class:`~moezoo.train.callbacks.SkippedSamplesLogger` always runs (``data/skipped``).
- Checkpoints are written atomically (:class:`~moezoo.train.checkpoints.AtomicCheckpointIO`).
- Start-up prints moezoo's own lines, the model summary and the progress bar, not the libraries'
  tips and deprecation notices (:mod:`moezoo.train.quiet`).
- A ``-c`` config, and relative ``data_dir`` / ``mix`` paths, that do not exist where the command
  runs are looked up among the shipped configs and datasets (:mod:`moezoo.shipped`: the
  repository's ``configs/`` and ``data/``, or their copies in an installed wheel), so
  ``moezoo fit -c configs/quickstart.yaml`` works from any directory, cloned or installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO

from moezoo.train.callbacks import SkippedSamplesLogger
from moezoo.train.checkpoints import AtomicCheckpointIO, allow_lightning_types
from moezoo.train.datamodule import ShardDataModule
from moezoo.train.module import MoEZooModule
from moezoo.train.quiet import quiet_loggers, quiet_startup


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
        ...                       "--data.test_split", "null", "--trainer.logger", "false"], run=False)
        >>> type(cli.model).__name__, cli.datamodule.config.batch_size
        ('MoEZooModule', 32)
        >>> cli.datamodule.processor.tokenizer.vocab_size  # the model's, linked: the config names it once
        4096
    """

    def __init__(self, args: list[str] | None = None, run: bool = True, **kwargs: Any):
        super().__init__(MoEZooModule, ShardDataModule, args=args, run=run,
                         trainer_defaults={"logger": default_logger()},
                         save_config_kwargs={"overwrite": True},
                         parser_kwargs={"prog": "moezoo"},
                         **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(SkippedSamplesLogger, "skipped_samples")
        # The data takes the model's processor (MoEZooModule.processor: from the architecture's spec, or the
        # checkpoint's), so a config names its architecture once, in `model:`.
        parser.link_arguments("model", "data.processor", apply_on="instantiate")

    def _add_subcommands(self, parser, **kwargs: Any) -> None:
        super()._add_subcommands(parser, **kwargs)
        allow_lightning_types()
        for sub in self._subcommand_parsers.values():  # resuming unpickles nothing but weights and plain types
            if "weights_only" in {a.dest for a in sub._actions}:
                sub.set_defaults(weights_only=True)

    def instantiate_trainer(self, **kwargs: Any):
        quiet_startup()  # before the Trainer prints its tips (see moezoo.train.quiet)
        trainer = super().instantiate_trainer(**kwargs)
        quiet_loggers(trainer.loggers)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:  # unless the user chose a plugin
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        return trainer

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


def shipped_config_args(argv: list[str]) -> list[str]:
    """``argv`` with each ``-c`` / ``--config`` file that does not exist here replaced by the shipped
    config of that name (:func:`moezoo.shipped.shipped_config`): ``-c configs/quickstart.yaml`` (or
    ``-c quickstart``) works from any directory, after a plain ``pip install``.

    Raises:
        FileNotFoundError: neither here nor shipped; the message names the closest shipped configs.

    Example:
        >>> shipped_config_args(["fit", "-c", "quickstart", "--trainer.max_steps", "1"])[2].endswith(
        ...     "configs/quickstart.yaml")
        True
    """
    from moezoo.shipped import shipped_config

    def resolve(value: str) -> str:
        if Path(value).exists() or any(c in value for c in "{:\n"):  # a file here, or inline YAML / JSON
            return value
        return str(shipped_config(value))

    out, flag = [], False
    for arg in argv:
        name, sep, value = arg.partition("=")
        if flag:
            arg = resolve(arg)
        elif sep and name == "--config":
            arg = f"--config={resolve(value)}"
        flag = arg in ("-c", "--config")
        out.append(arg)
    return out


def main(argv: list[str]) -> int:
    """Run ``moezoo SUBCOMMAND ...`` (``argv`` starts with fit / validate / test / predict)."""
    import sys

    try:
        args = shipped_config_args(argv)
    except FileNotFoundError as err:
        print(f"moezoo {argv[0]}: error: {err}", file=sys.stderr)
        return 2
    if argv == sys.argv[1:]:  # the console script: Lightning reads sys.argv itself (and warns if given both)
        sys.argv[1:] = args
        args = None
    MoEZooCLI(args=args)
    return 0
