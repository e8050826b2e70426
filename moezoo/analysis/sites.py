"""Short names for a model's MoE sites, as reports and :func:`~moezoo.analysis.ablate` name them.

:meth:`ZooModel.moe_sites <moezoo.models.base.ZooModel.moe_sites>` lists every MoE layer by its
module path (``llm.layers.3.mlp``, ``vision.vision_tower.encoder.layers.5.mlp``,
``connectors.image.mlp``). Reports name them by part and block instead:

- ``llm.{i}``: the MoE FFN of the language model's layer ``i`` (a text LM's too);
- ``{encoder}.{i}``: block ``i`` of an upcycled encoder (``vision.5``, ``audio.2``): the last index in its path;
- ``connector``: the MoE connector, when the model has one; ``connector.{modality}`` when it has several.

Any other site (or one whose short name would collide) keeps its module path, and a module that is not a
zoo model names every site by its path. Both spellings are accepted wherever a site is asked for.

Example:
    >>> import moezoo
    >>> list(site_names(moezoo.create_model("mm_tiny_cnn")).items())
    [('llm.layers.0.mlp', 'llm.0'), ('llm.layers.1.mlp', 'llm.1')]
"""

from __future__ import annotations

import re
from typing import Any

from torch import nn

from moezoo.models.base import ZooModel
from moezoo.moe import MoELayer
from moezoo.moe.mlp_experts import MoEMLP


def site_names(model: nn.Module) -> dict[str, str]:
    """Module path -> short name of every MoE site of ``model`` (an :class:`~moezoo.moe.MoELayer` or a
    :class:`~moezoo.moe.mlp_experts.MoEMLP`), in module order."""
    if isinstance(model, ZooModel):
        paths = list(model.moe_sites())
    else:
        paths = [name for name, m in model.named_modules() if isinstance(m, (MoELayer, MoEMLP))]
    if not isinstance(model, ZooModel):
        return {p: p for p in paths}
    lm = model.language_model
    prefix = "" if lm is model else next(n for n, m in model.named_children() if m is lm) + "."
    llm = {f"{prefix}layers.{i}.mlp": f"llm.{i}" for i in range(len(lm.layers))}
    parts = model.parts()
    connectors = [p for p in paths if p not in llm and parts.get(p.split(".")[0]) == "connector"]
    short: dict[str, str] = {}
    for path in paths:
        top, _, rest = path.partition(".")
        blocks = re.findall(r"\.(\d+)(?=\.|$)", path)
        if path in llm:
            short[path] = llm[path]
        elif path in connectors:
            short[path] = "connector" if len(connectors) == 1 else "connector." + re.sub(r"\.mlp$", "", rest)
        elif parts.get(top) == "encoder" and blocks:
            short[path] = f"{top}.{blocks[-1]}"
        else:
            short[path] = path
    taken = list(short.values())
    return {p: s if taken.count(s) == 1 else p for p, s in short.items()}


def find_site(model: nn.Module, site: str) -> tuple[str, nn.Module]:
    """``(short name, module)`` of the MoE site ``site`` (a short name or a module path) of ``model``.

    Raises:
        ValueError: ``model`` has no such site; the message lists its sites and their experts.

    Example:
        >>> import moezoo
        >>> find_site(moezoo.create_model("mm_tiny_cnn"), "llm.7")
        Traceback (most recent call last):
        ...
        ValueError: MultimodalMoEForCausalLM has no MoE site 'llm.7'; its sites: llm.0 (4 experts), llm.1 (4 experts)
    """
    names = site_names(model)
    modules = dict(model.named_modules())
    for path, short in names.items():
        if site in (path, short):
            return short, modules[path]
    if not names:
        raise ValueError(f"{type(model).__name__} has no MoE site (no MoELayer or MoEMLP): nothing is routed")
    listed = ", ".join(f"{short} ({modules[path].config.num_experts} experts)" for path, short in names.items())
    raise ValueError(f"{type(model).__name__} has no MoE site {site!r}; its sites: {listed}")


def site_routings(model: nn.Module, output: Any) -> dict[str, list[Any]]:
    """Short site name -> the :class:`~moezoo.moe.Routing` of each of its calls in the forward ``output``.

    The language model's routings (``output.routings``, one per MoE layer in layer order) and, for a
    multimodal model, the records of its other sites (``output.site_outputs``, one per pass).

    Example:
        >>> import moezoo, torch
        >>> model = moezoo.create_model("moe_lm_tiny")
        >>> routings = site_routings(model, model(input_ids=torch.tensor([[1, 2, 3]])))
        >>> list(routings)[:2], routings["llm.0"][0].probs.shape[0]
        (['llm.0', 'llm.1'], 3)
    """
    names = site_names(model)
    llm_sites = [short for short in names.values() if short.startswith("llm.")]
    if len(llm_sites) != len(output.routings):
        raise ValueError(f"the output carries {len(output.routings)} LLM routings, the model has "
                         f"{len(llm_sites)} LLM MoE sites: is it this model's output (a decoding step carries none)?")
    out: dict[str, list[Any]] = {name: [r] for name, r in zip(llm_sites, output.routings)}
    for record in getattr(output, "site_outputs", []):
        out.setdefault(names.get(record.site, record.site), []).append(record.output.routing)
    return out
