"""What an entry costs to download and to hold in memory, beside what this machine has.

:func:`memory_report` gives ``moezoo info`` its line: "download ~93.4 GB; the weights need
~93.4 GB in bfloat16, ~186.8 GB in float32; this machine has 24.0 GB: they will not fit".
The memory figures are the weights alone (parameters x bytes per value); activations, the
KV cache and the framework come on top, so a near fit is not a fit. :func:`gpu_need` adds
whether a GPU is needed in practice, by a stated rule on the same figures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

DTYPE_BYTES = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "int8": 1}


def machine_memory() -> dict[str, int | None]:
    """This machine's RAM in bytes, total and available now (psutil if installed, else ``os.sysconf``).

    Example:
        >>> mem = machine_memory()
        >>> mem["total_bytes"] is None or mem["total_bytes"] > 0
        True
    """
    try:
        import psutil

        vm = psutil.virtual_memory()
        return {"total_bytes": int(vm.total), "available_bytes": int(vm.available)}
    except ImportError:
        pass
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        return {"total_bytes": page * os.sysconf("SC_PHYS_PAGES"),
                "available_bytes": page * os.sysconf("SC_AVPHYS_PAGES")}
    except (ValueError, OSError, AttributeError):  # not a POSIX system with these names
        return {"total_bytes": None, "available_bytes": None}


def download_bytes(cfg: Any) -> tuple[int | None, bool]:
    """The bytes ``cfg`` downloads, and whether that is an estimate.

    Exact when the entry records the size of every ``.safetensors`` file (the small JSON and
    tokenizer files are then left out); otherwise ``params_total`` x the bytes of the dtype its
    weights are stored in (``cfg.architecture["weights_dtype"]``, default bfloat16).

    Example:
        >>> from types import SimpleNamespace as Entry, SimpleNamespace as File
        >>> download_bytes(Entry(files=(File(path="model.safetensors", size=10),), params_total=3))
        (10, False)
        >>> download_bytes(Entry(files=(), params_total=3, architecture={"weights_dtype": "float32"}))
        (12, True)
    """
    files = list(getattr(cfg, "files", ()) or ())
    weights = [f for f in files if f.path.endswith(".safetensors")]
    if weights and all(f.size is not None for f in weights):
        return sum(f.size for f in files if f.size is not None), False
    params = getattr(cfg, "params_total", None)
    if params is None:
        return None, True
    return params * DTYPE_BYTES[_weights_dtype(cfg)], True


def memory_report(cfg: Any, dtypes: Sequence[str] = ("bfloat16", "float32"),
                  machine: dict[str, int | None] | None = None) -> dict[str, Any]:
    """Download size, the weights' memory per dtype, this machine's memory and whether they fit.

    Args:
        cfg: a pretrained entry (``params_total``, ``files``; ``architecture["weights_dtype"]`` if any).
        dtypes: the dtypes to size the weights in (``moezoo.load`` computes in float32 by default).
        machine: :func:`machine_memory`'s dict (a test passes its own).

    Returns:
        ``{"download_bytes", "download_estimated", "memory_bytes": {dtype: bytes}, "machine_bytes",
        "available_bytes", "fits": {dtype: bool | None}, "summary": str}``.

    Example:
        >>> from types import SimpleNamespace as Entry
        >>> mixtral = Entry(files=(), params_total=46_702_792_704)
        >>> report = memory_report(mixtral, machine={"total_bytes": 24 * 10**9, "available_bytes": 20 * 10**9})
        >>> report["fits"], report["memory_bytes"]["bfloat16"]
        ({'bfloat16': False, 'float32': False}, 93405585408)
        >>> print(report["summary"])  # doctest: +NORMALIZE_WHITESPACE
        download ~93.4 GB (estimated from 46.7 B parameters in bfloat16); the weights need ~93.4 GB in
        bfloat16, ~186.8 GB in float32; this machine has 24.0 GB of memory: they will not fit
    """
    machine = machine if machine is not None else machine_memory()
    total = machine.get("total_bytes")
    params = getattr(cfg, "params_total", None)
    download, estimated = download_bytes(cfg)
    need = {d: params * DTYPE_BYTES[d] for d in dtypes} if params is not None else {}
    fits = {d: (n <= total if total is not None else None) for d, n in need.items()}
    parts = []
    if download is not None:
        how = f" (estimated from {params / 1e9:.1f} B parameters in {_weights_dtype(cfg)})" if estimated else ""
        parts.append(f"download ~{_gb(download)}{how}")
    if need:
        parts.append("the weights need " + ", ".join(f"~{_gb(n)} in {d}" for d, n in need.items()))
    if total is not None and need:
        fitting = [d for d, ok in fits.items() if ok]
        verdict = ("they will not fit" if not fitting else "they fit" if len(fitting) == len(fits)
                   else f"they fit in {' or '.join(fitting)} only")
        parts.append(f"this machine has {_gb(total)} of memory: {verdict}")
    return {"download_bytes": download, "download_estimated": estimated, "memory_bytes": need,
            "machine_bytes": total, "available_bytes": machine.get("available_bytes"), "fits": fits,
            "summary": "; ".join(parts)}


# gpu_need's rule: past these, the weights outgrow a workstation's RAM or each token costs too much on a CPU.
GPU_NEEDED_BYTES, GPU_NEEDED_ACTIVE = 32 * 10**9, 4 * 10**9
GPU_RECOMMENDED_BYTES, GPU_RECOMMENDED_ACTIVE = 4 * 10**9, 10**9


def gpu_need(cfg: Any, dtype: str = "bfloat16") -> dict[str, Any]:
    """Whether running ``cfg`` needs a GPU in practice, by a rule on its weights' size and active parameters.

    "needed" when its weights take more than 32 GB in ``dtype`` (more RAM than a workstation has) or more
    than 4 B parameters are active per token (each generated token then reads that many weights, which a
    CPU does slowly); "recommended" past 4 GB or 1 B active parameters (it runs on a CPU, slowly);
    otherwise "not needed". One GPU must hold the weights in ``dtype``, or several share them.

    Args:
        cfg: a pretrained entry (``params_total``; ``params_active``, else every parameter counts as active).
        dtype: the dtype the weights are run in.

    Returns:
        ``{"verdict": "needed" | "recommended" | "not needed" | "unknown", "weights_bytes", "summary"}``.

    Example:
        >>> from types import SimpleNamespace as Entry
        >>> print(gpu_need(Entry(params_total=46_702_792_704, params_active=12_879_925_248))["summary"])
        needed in practice (93.4 GB of weights in bfloat16, over 32 GB; 12.9 B parameters active per token, \
over 4 B): one GPU with more than 93.4 GB of memory, or several sharing the weights
        >>> gpu_need(Entry(params_total=600_000_000, params_active=None))["verdict"]
        'not needed'
    """
    total = getattr(cfg, "params_total", None)
    if total is None:
        return {"verdict": "unknown", "weights_bytes": None, "summary": "unknown (no parameter count recorded)"}
    active = getattr(cfg, "params_active", None) or total
    weights = total * DTYPE_BYTES[dtype]
    size, per_token = f"{_gb(weights)} of weights in {dtype}", f"{active / 1e9:.1f} B parameters active per token"
    if weights > GPU_NEEDED_BYTES or active > GPU_NEEDED_ACTIVE:
        why = [f"{size}, over {GPU_NEEDED_BYTES / 1e9:.0f} GB"] if weights > GPU_NEEDED_BYTES else []
        why += [f"{per_token}, over {GPU_NEEDED_ACTIVE / 1e9:.0f} B"] if active > GPU_NEEDED_ACTIVE else []
        return {"verdict": "needed", "weights_bytes": weights,
                "summary": f"needed in practice ({'; '.join(why)}): one GPU with more than {_gb(weights)} of "
                           "memory, or several sharing the weights"}
    if weights > GPU_RECOMMENDED_BYTES or active > GPU_RECOMMENDED_ACTIVE:
        return {"verdict": "recommended", "weights_bytes": weights,
                "summary": f"recommended ({size}, {per_token}): it runs on a CPU, slowly; a GPU needs more than "
                           f"{_gb(weights)} of memory"}
    return {"verdict": "not needed", "weights_bytes": weights,
            "summary": f"not needed ({size}, {per_token}): it runs on a CPU"}


def _weights_dtype(cfg: Any) -> str:
    dtype = (getattr(cfg, "architecture", None) or {}).get("weights_dtype", "bfloat16")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown weights_dtype {dtype!r}; known: {sorted(DTYPE_BYTES)}")
    return dtype


def _gb(n: int) -> str:
    return f"{n / 1e9:.1f} GB"
