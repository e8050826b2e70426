"""Callbacks that kill the training process with SIGKILL, for the resume tests (tests/train/test_kill.py).

The test starts ``python -m moezoo fit ... --trainer.callbacks+=kill_helpers.KillAt`` with this
folder on ``PYTHONPATH``: nothing is flushed, no hook runs, as when a job is pre-empted.
"""

from __future__ import annotations

import io
import os
import signal

import lightning.pytorch as pl
import torch


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(pl.Callback):
    """SIGKILL at the start of the batch after ``step`` optimiser steps."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            _kill()


class KillDuringSave(pl.Callback):
    """SIGKILL halfway through writing the checkpoint saved at ``step``."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args) -> None:  # runs before ModelCheckpoint's (Lightning puts it last)
        if trainer.global_step != self.step:
            return
        save = torch.save

        def half_save(obj, f, *a, **kw):
            buffer = io.BytesIO()
            save(obj, buffer, *a, **kw)
            data = buffer.getvalue()
            f.write(data[: len(data) // 2])
            f.flush()
            _kill()

        torch.save = half_save
