"""``publish``: a trained model dir becomes a shipped zoo model, ``checkpoints/ARCH.TAG/``.

The steps, all in a hidden staging dir beside the target until the last one:

1. save the model (what ``moezoo fit`` exported) in moezoo's format, optionally with bf16 weights,
   and with a reference to the package's zoo tokenizer in place of a copy of it;
2. load the staged bytes the way ``moezoo.load(name)`` will (sha256 checked, computed in fp32) and
   evaluate them with :func:`moezoo.eval.runner.evaluate`, blank inputs and majority baseline included
   (as the quickstart's ``FinalEvaluation`` does);
3. write the model card (:func:`moezoo.zoo.card.render_card`) and the manifest, ``pretrained.json``,
   with every file's size and sha256;
4. swap the dir into place.

A model dir already published under the name is replaced only when its model files are identical
(a re-rendered card keeps the revision) or when ``new_revision`` is asked for: the revision is
bumped and the old digests go into the entry's history. So new weights never sit under an old
sha256.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Sequence

from moezoo.registry.entry import PretrainedCfg, PretrainedFile
from moezoo.registry.shipped import MANIFEST_NAME, manifest_text, read_manifest
from moezoo.shipped import checkpoints_root, configs_root, shipped_config
from moezoo.utils.io import atomic_write_text, temporary_dir
from moezoo.zoo.card import CARD_NAME, render_card
from moezoo.zoo.datasets import config_datasets

TRAIN_FACTS = ("seed", "steps", "wall_time_s", "final_train_loss", "machine", "command", "datasets", "seeds", "notes",
               "load_entropy")


def read_train_facts(facts: str | Path | dict | None) -> dict[str, Any]:
    """The training facts the card reports (a JSON file the trainer writes, or a dict).

    Keys (all optional): ``seed``, ``steps``, ``wall_time_s``, ``final_train_loss``, ``machine``,
    ``command`` (how it was trained, default ``moezoo fit -c CONFIG``), ``datasets`` (default: the
    config's), ``seeds`` (a list of ``{"seed": S, "metrics": {task: {metric: value}}, ...}``: every
    seed's figures, for the router recipes; a seed may also give its ``load_entropy`` and ``wall_time_s``),
    ``notes`` (a paragraph for the card: a stated shortfall), ``load_entropy`` (the expert-load balance at the
    answer positions of the test split, :func:`moezoo.analysis.answer_load_entropy`; ``moezoo bench routers``
    reads it).

    Raises:
        ValueError: an unknown key (the known ones are listed) or a malformed ``seeds`` list.

    Example:
        >>> read_train_facts({"seed": 0, "steps": 1000})
        {'seed': 0, 'steps': 1000}
    """
    if facts is None:
        return {}
    data = json.loads(Path(facts).read_text()) if isinstance(facts, (str, Path)) else dict(facts)
    unknown = sorted(set(data) - set(TRAIN_FACTS))
    if unknown:
        raise ValueError(f"train facts: unknown keys {unknown}; known: {list(TRAIN_FACTS)}")
    for seed in data.get("seeds", []):
        if not isinstance(seed, dict) or "seed" not in seed or not isinstance(seed.get("metrics"), dict):
            raise ValueError(f"train facts: each of 'seeds' is {{'seed': S, 'metrics': {{task: {{metric: value}}}}}}"
                             f", not {seed!r}")
    return data


def _config_facts(config: str | Path | None) -> tuple[str | None, Path | None]:
    """``(the config as the card names it, its file)``: a shipped config is named ``configs/...``."""
    if config is None:
        return None, None
    path = Path(config)
    if not path.is_file():
        path = shipped_config(str(config))
    try:
        return f"configs/{path.resolve().relative_to(configs_root().resolve()).as_posix()}", path
    except ValueError:
        return Path(config).as_posix(), path


def _recipe(config: str | Path | None, facts: dict[str, Any], weights: str) -> dict[str, Any]:
    import yaml

    name, path = _config_facts(config)
    recipe: dict[str, Any] = {"config": name}
    if path is not None and "seed" not in facts:
        recipe["seed"] = (yaml.safe_load(path.read_text()) or {}).get("seed_everything")
    recipe.update(facts)
    recipe["datasets"] = list(facts.get("datasets") or (config_datasets(path) if path else []))
    recipe["weights_dtype"] = weights
    return recipe


def _model_files(files: Sequence[PretrainedFile]) -> dict[str, str | None]:
    return {f.path: f.sha256 for f in files if f.path != CARD_NAME}


def _revision(previous: PretrainedCfg | None, files: Sequence[PretrainedFile], new_revision: bool,
              target: Path) -> tuple[str, tuple[dict, ...]]:
    """The new entry's revision and history, or the refusal to put new bytes under the old entry."""
    if previous is None:
        return "1", ()
    old, new = _model_files(previous.files), _model_files(files)
    if old == new:
        if new_revision:
            raise ValueError(f"{target}: the model files are identical to revision {previous.revision}'s; "
                             "nothing to bump (drop --new-revision)")
        return previous.revision or "1", previous.history
    if not new_revision:
        changed = [f"{p} {old.get(p, 'absent')} -> {new.get(p, 'absent')}" for p in sorted(set(old) | set(new))
                   if old.get(p) != new.get(p)]
        raise ValueError(f"{target} (revision {previous.revision}) holds other bytes: {'; '.join(changed)}. A retrained "
                         "model gets a new tag (--name ARCH.NEWTAG) or a new revision (--new-revision, which "
                         f"records revision {previous.revision}'s digests in the entry's history)")
    bumped = str(int(previous.revision or "1") + 1)
    return bumped, (*previous.history, {"revision": previous.revision, "files": old})


def publish(model_dir: str | Path, name: str, tasks: Sequence[str], config: str | Path | None = None,
            limit: int | None = None, bf16: bool = False, new_revision: bool = False,
            train_facts: str | Path | dict | None = None, license: str = "apache-2.0", description: str = "",
            root: str | Path | None = None, batch_size: int = 32, progress: bool = False) -> PretrainedCfg:
    """Publish the trained model in ``model_dir`` as shipped model ``name`` under ``root`` (see the module doc).

    Args:
        model_dir: a moezoo checkpoint dir (what ``moezoo fit`` exports, e.g. ``runs/quickstart/model``).
        name: ``arch.tag``; ``arch`` must be a registered architecture.
        tasks: the ``moezoo eval`` tasks the card reports (and the zoo's test re-measures).
        config: the training config (``configs/zoo/NAME.yaml``): named on the card, its datasets and seed read.
        limit: evaluate the first N questions of each task (the card records it).
        bf16: store the floating parameters in bfloat16 (half the bytes; ``moezoo.load`` upcasts to fp32).
        new_revision: replace a published model with different bytes, bumping its revision.
        train_facts: the training facts (:func:`read_train_facts`).
        license: the weights' licence (Hub id).
        description: one line for the card and ``moezoo list``.
        root: the checkpoints folder (default :func:`moezoo.shipped.checkpoints_root`).
        batch_size: prompts per eval batch.
        progress: show eval progress bars.

    Returns:
        The published entry (also in ``root/name/pretrained.json``).

    Raises:
        ValueError: a bad name or task, or a published model with other bytes and no ``new_revision``.
    """
    from moezoo.eval.runner import evaluate, split_tasks
    from moezoo.loading import load
    from moezoo.registry.core import model_config
    from moezoo.registry.create import load_shipped
    from moezoo.zoo.facts import model_facts
    from moezoo.zoo.results import split_results
    from moezoo.zoo.store import file_entries, stage_checkpoint, swap_into_place

    PretrainedCfg(name, "shipped", name)  # checks the arch.tag form
    model_config(name.partition(".")[0])  # an unknown architecture names the closest
    split_tasks(list(tasks))
    facts = read_train_facts(train_facts)
    root = Path(root) if root is not None else checkpoints_root()
    target = root / name
    previous = read_manifest(target) if (target / MANIFEST_NAME).is_file() else None
    if previous is None and target.exists():
        raise ValueError(f"{target} exists but holds no {MANIFEST_NAME}: remove it or publish under another tag")
    root.mkdir(parents=True, exist_ok=True)
    staging = temporary_dir(root, prefix=f".{name}.tmp-")
    try:
        weights = stage_checkpoint(load(model_dir), staging, bf16=bf16)
        files = file_entries(staging)
        revision, history = _revision(previous, files, new_revision, target)
        # The stored bytes, read the way moezoo.load(name) reads them: checked, then computed in fp32.
        model = load_shipped(PretrainedCfg(name, "shipped", staging.name, files=files), root=root)
        arch = model_facts(model)
        report = evaluate(model, list(tasks), name=name, limit=limit, batch_size=batch_size, blank_images=True,
                          progress=progress)
        metrics, baselines, counts = {}, {}, {}
        for task in tasks:
            metrics[task], baselines[task], counts[task] = split_results(report.results[task], report.rows.get(task))
        cfg = PretrainedCfg(
            name=name, source="shipped", location=name, files=files, revision=revision, license=license,
            modalities=tuple(arch.pop("modalities")), params_total=arch.pop("parameters"),
            params_active=arch.pop("active_parameters_per_token"), metrics=metrics, description=description,
            tasks=tuple(tasks), eval_limit=limit, counts=counts, baselines=baselines, architecture=arch,
            recipe=_recipe(config, facts, weights), history=history)
        atomic_write_text(staging / CARD_NAME, render_card(cfg))
        cfg = dataclasses.replace(cfg, files=file_entries(staging))
        atomic_write_text(staging / MANIFEST_NAME, manifest_text(cfg))
        swap_into_place(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return cfg
