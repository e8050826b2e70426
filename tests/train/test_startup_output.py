"""``moezoo fit`` prints moezoo's lines, the model summary and the progress bar, and none of the libraries'
tips and deprecation notices (:mod:`moezoo.train.quiet`), while other warnings still show."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import moezoo

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "text_moe_lm.yaml"
PACKAGE_ROOT = Path(moezoo.__file__).resolve().parents[1]
# What each quieted message contains (the exact texts are in moezoo/train/quiet.py).
ABSENT = {
    "litlogger tip": "litlogger",
    "litmodels tip": "litmodels",
    "W&B anonymous setting": "anonymous setting",
    "W&B git root": "git root",
    "pytree deprecation": "is deprecated, use `isinstance(treespec, TreeSpec)",
}
SMALL = ["--trainer.callbacks", "[]", "--data.batch_size", "4", "--data.max_length", "32", "--data.epoch_length", "8"]


def _fit(cwd: Path, *args: str) -> str:
    """Run ``moezoo fit`` in a fresh process (as a user does) and return its stdout and stderr together."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONWARNINGS="default",
               PYTHONPATH=os.pathsep.join([str(PACKAGE_ROOT), env.get("PYTHONPATH", "")]))  # the moezoo under test
    cmd = [sys.executable, "-c", "import sys; from moezoo.cli import main; sys.exit(main())",
           "fit", "-c", str(CONFIG), "--trainer.default_root_dir", str(cwd / "run"), *SMALL, *args]
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    return output


def _assert_quiet(output: str) -> None:
    found = {name: text for name, text in ABSENT.items() if text in output}
    assert not found, f"printed {sorted(found)}:\n{output}"
    assert "moezoo stage 'finetune':" in output and "parameters train" in output  # moezoo's own line
    assert "Total params" in output  # the model summary
    assert "Traceback" not in output


def test_a_fast_dev_run_fit_prints_no_library_tips(tmp_path):
    output = _fit(tmp_path, "--trainer.fast_dev_run", "1", "--trainer.logger", "false")
    _assert_quiet(output)
    assert "Running in `fast_dev_run` mode" in output  # Lightning's own notices still show


def test_a_fit_logging_to_wandb_prints_no_wandb_warnings(tmp_path):
    """The default W&B logger (offline): W&B starts, says where the run is, and warns about nothing."""
    output = _fit(tmp_path, "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0")
    _assert_quiet(output)
    assert "wandb: Run data is saved locally" in output and list(tmp_path.glob("runs/wandb/offline-run-*"))


def test_quieting_keeps_other_warnings():
    """The pytree filter is tied to Lightning's module: the same warning raised elsewhere still shows."""
    from moezoo.train.quiet import quiet_startup

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_startup()
        warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...", FutureWarning)
        warnings.warn("a real problem", UserWarning)
    assert [str(w.message)[:20] for w in caught] == ["`isinstance(treespec", "a real problem"]


def test_an_anonymous_setting_the_user_asked_for_still_reaches_wandb():
    from lightning.pytorch.loggers import WandbLogger

    from moezoo.train.quiet import quiet_loggers

    asked, unset = WandbLogger(offline=True, anonymous=True), WandbLogger(offline=True)
    quiet_loggers([asked, unset])
    assert asked._wandb_init["anonymous"] == "allow" and "anonymous" not in unset._wandb_init


@pytest.mark.parametrize("name, dropped", [
    ("lightning.pytorch.utilities.rank_zero",
     "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels](https://pypi.org/project/litmodels/)"),
    ("wandb.sdk.lib.gitlib", "git root error"),
])
def test_only_the_named_records_are_dropped(name, dropped):
    import logging

    from moezoo.train.quiet import quiet_startup

    class Keep(logging.Handler):  # on the named logger itself: wandb's loggers do not propagate once imported
        def __init__(self):
            super().__init__(logging.INFO)
            self.messages: list[str] = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    quiet_startup()
    logger, kept = logging.getLogger(name), Keep()
    level = logger.level
    logger.addHandler(kept)
    logger.setLevel(logging.INFO)
    try:
        logger.info(dropped)
        logger.warning("GPU available: False, used: False")
        logger.warning(f"not {dropped}")
    finally:
        logger.removeHandler(kept)
        logger.setLevel(level)
    assert kept.messages == ["GPU available: False, used: False", f"not {dropped}"]
