"""A quiet ``moezoo fit``: moezoo's own lines, the model summary and the progress bar, without the
libraries' advertising and deprecation chatter that users cannot act on.

Each message is removed where it comes from, by its exact text, so that nothing else from the same
source is lost:

- Lightning's "💡 Tip: ... litlogger" and "💡 Tip: ... litmodels" lines: ``rank_zero_info`` records
  of ``lightning.pytorch.utilities.rank_zero`` (``trainer/connectors/logger_connector`` and
  ``callback_connector.py``); a :class:`logging.Filter` on that logger drops these two texts only.
- W&B's "The anonymous setting has no effect" warning (``wandb/sdk/wandb_settings.py``): W&B
  warns whenever ``wandb.init`` receives ``anonymous``, and Lightning's ``WandbLogger`` always
  passes it (``None`` unless asked for). :func:`quiet_loggers` leaves an unset ``anonymous`` out of
  the logger's ``wandb.init`` arguments, so W&B has nothing to warn about; an ``anonymous`` the
  user did set still reaches W&B, and so does its warning.
- W&B's "git root error" (``wandb/sdk/lib/gitlib.py``): a traceback logged when
  ``git rev-parse --show-toplevel`` fails (a repository another user owns, no commits); W&B then
  simply records no git state. Its other git message, "git root DIR does not exist", is a real
  misconfiguration (``WANDB_GIT_ROOT`` names a missing directory) and is kept.
- torch's "``isinstance(treespec, LeafSpec)`` is deprecated" ``FutureWarning``: raised inside
  ``lightning/pytorch/utilities/_pytree.py`` (Lightning's code, not moezoo's), so it is ignored
  for that module only; the same warning from any other code still shows.

Example:
    >>> import logging
    >>> quiet_startup()
    >>> tip = logging.makeLogRecord({"msg": "💡 Tip: For seamless cloud logging and experiment tracking, try "
    ...                                     "installing [litlogger](https://pypi.org/project/litlogger/) ..."})
    >>> other = logging.makeLogRecord({"msg": "GPU available: False, used: False"})
    >>> QuietFilter().filter(tip), QuietFilter().filter(other)
    (False, True)
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

# (logger name, the start of each message it should not print)
_QUIET_RECORDS: dict[str, tuple[str, ...]] = {
    "lightning.pytorch.utilities.rank_zero": (
        "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
        "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
    ),
    "lightning.fabric.utilities.rank_zero": (  # the same helper before lightning.pytorch rebinds its logger
        "💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]",
        "💡 Tip: For seamless cloud uploads and versioning, try installing [litmodels]",
    ),
    "wandb.sdk.lib.gitlib": ("git root error",),
}


class QuietFilter(logging.Filter):
    """Drops the log records whose message starts with one of ``texts`` (default: every quieted text)."""

    def __init__(self, texts: Iterable[str] | None = None):
        super().__init__()
        self.texts = tuple(texts) if texts is not None else tuple(t for ts in _QUIET_RECORDS.values() for t in ts)

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.texts)


def quiet_startup() -> None:
    """Install the filters described in the module docstring (idempotent; warnings filters are process-wide)."""
    for name, texts in _QUIET_RECORDS.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, QuietFilter) for f in logger.filters):
            logger.addFilter(QuietFilter(texts))
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")


def quiet_loggers(loggers: Iterable[Any]) -> None:
    """Leave an unset ``anonymous`` out of each Lightning ``WandbLogger``'s ``wandb.init`` arguments.

    Call it before the first use of ``logger.experiment`` (which runs ``wandb.init``). Loggers of other
    kinds, and a W&B run already started, are left alone.

    Example:
        >>> from lightning.pytorch.loggers import WandbLogger
        >>> logger = WandbLogger(offline=True, project="demo")
        >>> quiet_loggers([logger])
        >>> "anonymous" in logger._wandb_init, logger._wandb_init["project"]
        (False, 'demo')
    """
    for logger in loggers:
        init = getattr(logger, "_wandb_init", None)  # Lightning's WandbLogger: the kwargs of wandb.init
        if isinstance(init, dict) and getattr(logger, "_experiment", None) is None and init.get("anonymous", 0) is None:
            del init["anonymous"]
