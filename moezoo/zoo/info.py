"""What ``moezoo info NAME`` shows for a pretrained name, from its registry entry alone (nothing is loaded).

A shipped model: the card's facts (parameters, experts, router, metrics beside the baselines, licence,
recipe, files with sizes and short sha256). A downloaded one (hub or URL): its source, the download
size, the memory its weights need, whether it needs a GPU in practice, and whether the weights fit this
machine (:mod:`moezoo.hub.memory`).

Example:
    >>> from moezoo.registry import PretrainedCfg
    >>> facts = pretrained_facts(PretrainedCfg("mixtral_8x7b.v0_1", "hf", "mistralai/Mixtral-8x7B-v0.1",
    ...                                        params_total=46_702_792_704))
    >>> facts["memory needed"]
    '93.4 GB in bfloat16, 186.8 GB in float32'
    >>> facts["GPU"].split(" (")[0]
    'needed in practice'
"""

from __future__ import annotations

from typing import Any

from moezoo.registry.entry import PretrainedCfg


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def fit_facts(cfg: PretrainedCfg) -> dict[str, str]:
    """Download size, the weights' memory, whether a GPU is needed in practice (:func:`moezoo.hub.gpu_need`)
    and whether the weights fit this machine (:func:`moezoo.hub.memory_report`)."""
    from moezoo.hub import gpu_need, memory_report

    report = memory_report(cfg)
    download = report["download_bytes"]
    facts = {"download size": (_gb(download) + (" (estimated)" if report["download_estimated"] else ""))
             if download is not None else "unknown",
             "memory needed": ", ".join(f"{_gb(n)} in {d}" for d, n in report["memory_bytes"].items()) or "unknown",
             "GPU": gpu_need(cfg)["summary"]}
    if report["machine_bytes"] is not None and report["fits"]:
        fitting = [d for d, ok in report["fits"].items() if ok]
        facts["this machine"] = (f"{_gb(report['machine_bytes'])} of memory: "
                                 + (f"fits in {' and '.join(fitting)}" if fitting else "does NOT fit"))
    return facts


def pretrained_facts(cfg: PretrainedCfg) -> dict[str, Any]:
    """The facts ``moezoo info`` prints for entry ``cfg``, in order."""
    facts: dict[str, Any] = {"name": cfg.name}
    if cfg.source == "shipped":
        facts["source"] = f"shipped: checkpoints/{cfg.location}, revision {cfg.revision}"
    else:
        pinned = f"@{cfg.revision}" if cfg.revision else ""
        facts["source"] = f"{cfg.source}: {cfg.location}{pinned}" + (f" ({cfg.subfolder})" if cfg.subfolder else "")
        if cfg.source == "hf":
            from moezoo.hub.lock import describe_revision

            facts["revision"] = describe_revision(cfg.name, cfg.location, cfg.revision, cfg.subfolder)
    if cfg.description:
        facts["description"] = cfg.description
    facts.update({"license": cfg.license or "unknown", "modalities": ", ".join(cfg.modalities),
                  "parameters": cfg.params_total, "active_parameters_per_token": cfg.params_active})
    for key in ("num_experts", "top_k", "router", "num_shared_experts", "moe_heads",
                "moe_sites", "moe_layers", "llm_layers", "llm_dim", "encoders", "tokens_per_input"):
        if key in cfg.architecture:
            facts[key] = cfg.architecture[key]
    if cfg.source != "shipped":
        facts.update(fit_facts(cfg))
    for task, metrics in cfg.metrics.items():
        base = cfg.baselines.get(task, {})
        for metric, value in metrics.items():
            beside = [f"{k} {base[k][metric]:.4f}" for k in ("blank", "majority") if metric in base.get(k, {})]
            n = cfg.counts.get(task, {}).get(metric)
            facts[f"{task} {metric}"] = f"{value:.4f}" + (f" (N={n})" if n else "") + \
                (f"  [{', '.join(beside)}]" if beside else "")
    if cfg.eval_limit:
        facts["eval limit"] = cfg.eval_limit
    r = cfg.recipe
    for key in ("config", "seed", "steps", "wall_time_s", "final_train_loss", "weights_dtype"):
        if r.get(key) is not None:
            facts[key] = r[key]
    for f in cfg.files:
        facts[f"file {f.path}"] = f"{f.size:,} bytes" if f.size is not None else "size unknown"
        if f.sha256:
            facts[f"file {f.path}"] += f", sha256 {f.sha256[:16]}"
    return facts
