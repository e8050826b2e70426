"""Skip-and-count for bad samples (the callback that logs the counts is
:class:`moezoo.train.callbacks.SkippedSamplesLogger`).

Real corpora always hold a few broken samples (a truncated JPEG, a record without
its image, a caption that tokenises to 10k tokens). A multi-day run must not die on
one, yet silent dropping hides data bugs. So each bad sample is skipped, counted
by reason, and the first few are named in a :class:`SkippedSampleWarning`.

The counts live in a shared-memory tensor with one row per DataLoader worker (row 0
is the main process): workers write only their own row, so there are no races, and
the main process reads exact totals at any time, which
:class:`~moezoo.train.callbacks.SkippedSamplesLogger` turns into metrics.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping

import torch

# Why a sample was skipped. "missing_key": a member the sample needs is absent (its
# text or json, or any media member for a placeholder); "media_mismatch": the text's
# placeholders and the media members disagree in number (or the members are misnamed);
# "unsupported_modality": the sample has a modality the model's processor does not take;
# "too_long": more tokens than max_length, or audio longer than the encoder's window;
# "bad_shard": the tar stream itself failed (truncated, not a tar); "error": anything
# unexpected, e.g. a user's preprocessing raising.
REASONS = ("corrupt_image", "corrupt_audio", "corrupt_video", "missing_key", "bad_json", "media_mismatch",
           "unsupported_modality", "too_long", "bad_shard", "error")
METRIC = "data/skipped"


class SkippedSampleWarning(UserWarning):
    """A sample was skipped; the message names its key and the reason."""


class SampleError(Exception):
    """Raised while processing a sample: it is skipped and counted under ``reason``."""

    def __init__(self, reason: str, detail: str = ""):
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {REASONS}")
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


class SkipCounter:
    """Counts skipped samples by reason across the processes of one DataLoader.

    Args:
        num_workers: the DataLoader's workers (rows are allocated for each, plus the main process).
        warn_first: name this many skipped samples per process in a warning, then count silently.

    Example:
        >>> counter = SkipCounter(warn_first=0)
        >>> counter.skip("bad_json", "sample-7")
        >>> counter.totals()["bad_json"], counter.total()
        (1, 1)
    """

    def __init__(self, num_workers: int = 0, warn_first: int = 5):
        if num_workers < 0 or warn_first < 0:
            raise ValueError(f"num_workers={num_workers} and warn_first={warn_first} must be >= 0")
        # share_memory_ before the workers start, so fork/spawn both hand them this storage.
        self.counts = torch.zeros(num_workers + 1, len(REASONS), dtype=torch.int64).share_memory_()
        self.warn_first = warn_first
        self._warned = 0

    def _row(self) -> int:
        info = torch.utils.data.get_worker_info()
        row = 0 if info is None else info.id + 1
        if row >= self.counts.shape[0]:
            raise RuntimeError(
                f"SkipCounter has rows for {self.counts.shape[0] - 1} workers but worker {row - 1} reported; "
                "build it with the DataLoader's num_workers"
            )
        return row

    def skip(self, reason: str, key: Any, detail: str = "") -> None:
        """Count one skipped sample; warn with its key if fewer than ``warn_first`` were named yet."""
        if reason not in REASONS:
            raise ValueError(f"unknown skip reason {reason!r}; expected one of {REASONS}")
        self.counts[self._row(), REASONS.index(reason)] += 1
        if self._warned < self.warn_first:
            self._warned += 1
            more = " (further skipped samples are counted without a warning)" if self._warned == self.warn_first else ""
            warnings.warn(f"skipped sample {key!r} ({reason}): {detail}{more}", SkippedSampleWarning, stacklevel=2)

    def handler(self, reason: str = "bad_shard") -> Callable[[Exception], bool]:
        """A webdataset exception handler that counts the error and continues."""
        return _CountingHandler(self, reason)

    def totals(self) -> dict[str, int]:
        """Reason -> count, summed over processes."""
        return dict(zip(REASONS, self.counts.sum(0).tolist()))

    def total(self) -> int:
        return int(self.counts.sum())

    def reset(self) -> None:
        self.counts.zero_()


class _CountingHandler:
    """Picklable (DataLoader workers may be spawned) webdataset handler."""

    def __init__(self, counter: SkipCounter, reason: str):
        self.counter, self.reason = counter, reason

    def __call__(self, exn: Exception) -> bool:
        # webdataset appends the url / stream to exn.args, which names the shard.
        where = next((a for a in reversed(exn.args) if isinstance(a, str)), "?") if exn.args else "?"
        self.counter.skip(self.reason, where, repr(exn)[:200])
        return True  # continue with the next shard / sample


def merge_totals(counters: Mapping[str, SkipCounter]) -> dict[str, int]:
    """Reason -> count summed over several counters (e.g. the train and val loaders).

    Example:
        >>> a, b = SkipCounter(warn_first=0), SkipCounter(warn_first=0)
        >>> a.skip("too_long", "k1"); b.skip("too_long", "k2")
        >>> merge_totals({"train": a, "val": b})["too_long"]
        2
    """
    out = dict.fromkeys(REASONS, 0)
    for counter in counters.values():
        for reason, n in counter.totals().items():
            out[reason] += n
    return out
