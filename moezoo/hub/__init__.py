"""Verified downloads of the weights too big to ship: Hugging Face Hub snapshots and plain URLs.

- :func:`fetch_pretrained` turns a pretrained entry (``source`` ``"hf"`` or ``"url"``) into a local
  folder that :func:`moezoo.load` reads; :func:`fetch_snapshot` and :func:`download_url` are the
  two mechanisms underneath.
- Hub snapshots come through ``huggingface_hub.snapshot_download`` at a pinned commit (or, for an
  entry that follows a branch, the commit its first fetch got, locked: :mod:`moezoo.hub.lock`), safetensors
  only; each file is checked once against the hub's published digest, then a marker in moezoo's
  cache lets later loads check sizes only. Offline (``HF_HUB_OFFLINE=1``) they are found in the
  standard hub cache or in ``$MOEZOO_CACHE/models/hub``; otherwise the error gives the command.
- URL files stream into ``DEST.part``, resume with a Range request, and are renamed into place
  only once their sha256 matches.
- :func:`memory_report` says what an entry downloads and needs in memory, and whether it fits here;
  :func:`gpu_need` whether it needs a GPU in practice.

This layer sits beside :mod:`moezoo.registry` and below :mod:`moezoo.loading`: it never imports
either (entries are passed in), and imports huggingface_hub only when it downloads.

Example:
    >>> from moezoo.hub import fetch_command
    >>> fetch_command("Qwen/Qwen1.5-MoE-A2.7B", "1a758c50ecb6350748b9ce0a99d2352fd9fc11c9").split()[1:4]
    ['python', '-m', 'moezoo.hub']
"""

from moezoo.hub.cache import cache_root, hf_hub_cache, hub_cache_dirs, is_offline, models_cache
from moezoo.hub.hf import (DEFAULT_PATTERNS, SnapshotNotFoundError, fetch_command, fetch_snapshot,
                           find_snapshot)
from moezoo.hub.memory import gpu_need, machine_memory, memory_report
from moezoo.hub.sources import fetch_pretrained
from moezoo.hub.url import DownloadError, download_url
from moezoo.hub.verify import VerificationError

__all__ = ["DEFAULT_PATTERNS", "DownloadError", "SnapshotNotFoundError", "VerificationError", "cache_root",
           "download_url", "fetch_command", "fetch_pretrained", "fetch_snapshot", "find_snapshot", "gpu_need",
           "hf_hub_cache", "hub_cache_dirs", "is_offline", "machine_memory", "memory_report", "models_cache"]
