"""The training stages, as pure functions of a model and written against its protocol.

The progressive recipe of LLaVA (Liu et al. 2023), LibMoE (arXiv 2411.00918), MoE-LLaVA
(arXiv 2401.15947) and Uni-MoE (arXiv 2405.11273):

* ``align``: only the connectors train, mapping frozen encoder features into the frozen LLM;
* ``finetune``: the connectors and the LLM train (visual instruction tuning);
* ``moe``: the model is first sparse-upcycled (Komatsuzaki et al. 2022, arXiv 2212.05055) by
  its family's upcycler when it has no MoE layer anywhere or ``upcycle`` settings are
  given (e.g. ``{"targets": ["connector"]}``); then the MoE layers (routers and experts,
  wherever they sit: the LLM, an ``moe`` connector, an upcycled encoder) train, and with
  ``train_rest`` the connectors and the LLM too. A model whose MoE sits outside its LLM
  (LibMoE's MoE SigLIP tower and MoE projector) trains those layers as they are.

``train_encoder`` adds the encoders to any stage (a trunk trained from scratch, as the
quickstart's CNN). Which part a parameter belongs to is the model's to say
(:meth:`~moezoo.models.base.ZooModel.parts`, :meth:`~moezoo.models.base.ZooModel.moe_sites`,
:meth:`~moezoo.models.base.ZooModel.encoders`), so a new family trains with no change here.
A text-only :class:`~moezoo.models.lm.MoEForCausalLM` is all LLM.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from moezoo.models.base import PART_KINDS

STAGES = ("align", "finetune", "moe")
# The parts each stage trains (besides the MoE layers in "moe", and the encoders with train_encoder).
STAGE_PARTS = {"align": {"connector"}, "finetune": {"connector", "llm"}, "moe": set()}
NOTHING_TO_TRAIN = {"align": "connectors", "finetune": "connectors or an LLM", "moe": "MoE layers"}


def check_stage(stage: str) -> str:
    """``stage``, or a ``ValueError`` naming the stages there are."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {STAGES}")
    return stage


def parameter_parts(model: nn.Module) -> dict[str, tuple[str, bool]]:
    """Parameter name -> ``(part, in_moe)``: ``part`` is ``model.parts()``'s kind of the module
    holding it (``encoder``, ``connector`` or ``llm``: the longest of its names that is a prefix of the
    parameter's, a top-level child or a nested part such as Qwen3-VL's ``visual.merger``), ``in_moe``
    whether it belongs to one of ``model.moe_sites()``.

    Raises:
        ValueError: a parameter sits outside every part (directly on a model that is not its own
            language model).

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> from moezoo.moe import MoEConfig
        >>> lm = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32,
        ...                              moe=MoEConfig(dim=16, expert_dim=8, num_experts=2, top_k=1)))
        >>> parts = parameter_parts(lm)
        >>> parts["embed_tokens.weight"], parts["layers.0.mlp.router.weight"]
        (('llm', False), ('llm', True))
    """
    moe = {id(p) for site in model.moe_sites().values() for p in site.parameters()}
    parts = model.parts()
    whole_llm = model.language_model is model
    out = {}
    nested = sorted((k for k in parts if "." in k), key=len, reverse=True)  # the longest path decides
    for name, param in model.named_parameters():
        top = next((k for k in nested if name.startswith(k + ".")), name.split(".", 1)[0])
        if top not in parts and not whole_llm:
            raise ValueError(f"parameter {name!r} is in no part of {type(model).__name__}; its parts() are "
                             f"{parts} (each top-level child is an encoder, a connector or the llm)")
        out[name] = (parts.get(top, "llm"), id(param) in moe)
    return out


def unused_parameters(model: nn.Module) -> set[str]:
    """The qualified names of the encoders' parameters the forward never reaches (no gradient ever)."""
    return {f"{name}.{p}" for name, encoder in model.encoders().items() for p in encoder.unused_parameters()}


def set_stage(model: nn.Module, stage: str, train_encoder: bool = False, train_rest: bool = False) -> dict[str, int]:
    """Set ``requires_grad`` on every parameter of ``model`` for ``stage`` (see the module docstring),
    never relying on defaults.

    Returns:
        ``{"trainable": n, "total": N, "encoder": .., "connector": .., "llm": .., "moe": ..}``: trainable
        parameter counts by part (``moe`` counts MoE parameters again, whatever part holds them).

    Raises:
        ValueError: an unknown stage, or one that leaves nothing to train in this model.

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> lm = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32))
        >>> set_stage(lm, "finetune")["trainable"] == sum(p.numel() for p in lm.parameters())
        True
        >>> set_stage(lm, "align")
        Traceback (most recent call last):
        ...
        ValueError: stage 'align' trains connectors, which this model has none of (it has: llm; MoE layers: none)
    """
    trained = STAGE_PARTS[check_stage(stage)] | ({"connector", "llm"} if stage == "moe" and train_rest else set())
    trained = trained | ({"encoder"} if train_encoder else set())
    parts, unused = parameter_parts(model), unused_parameters(model)
    counts = dict.fromkeys(("trainable", "total", *PART_KINDS, "moe"), 0)
    for name, param in model.named_parameters():
        part, in_moe = parts[name]
        train = (part in trained or (stage == "moe" and in_moe)) and name not in unused
        param.requires_grad_(train)
        counts["total"] += param.numel()
        if train:
            counts["trainable"] += param.numel()
            counts[part] += param.numel()
            counts["moe"] += param.numel() if in_moe else 0
    if not counts["trainable"]:
        sites = list(model.moe_sites())
        kinds = ", ".join(sorted({part for part, _ in parts.values()}))
        raise ValueError(f"stage {stage!r} trains {NOTHING_TO_TRAIN[stage]}, which this model has none of (it has: "
                         f"{kinds}; MoE layers: {', '.join(sites[:3]) + (' ...' if len(sites) > 3 else '') or 'none'})")
    return counts


def upcycle_for_stage(model: nn.Module, stage: str, upcycle: dict[str, Any] | None = None) -> nn.Module:
    """``model``, sparse-upcycled by its family's upcycler (:func:`moezoo.models.upcycle.upcycle`) when
    the stage is ``moe`` and ``upcycle`` settings are given or the model has no MoE layer anywhere
    (:meth:`~moezoo.models.base.ZooModel.moe_sites`: a LibMoE model, whose LLM is dense but whose
    tower and projector are MoE, trains those as they are).

    The upcycled copy keeps the processor and tokenizer that feed the model.

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> dense = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=2, num_heads=2, ffn_dim=32))
        >>> upcycle_for_stage(dense, "moe", {"num_experts": 4}).config.sparse_layers()
        [0, 1]
        >>> upcycle_for_stage(dense, "finetune") is dense
        True
    """
    if check_stage(stage) != "moe" or not (upcycle or not model.moe_sites()):
        return model
    from moezoo.models.upcycle import upcycle as upcycle_model

    out = upcycle_model(model, **(upcycle or {}))
    if out.processor is None and model.processor is not None:  # what feeds the model stays with it
        out.processor = model.processor
    if out.tokenizer is None and model.tokenizer is not None:
        out.tokenizer = model.tokenizer
    return out


def keep_frozen_encoders_in_eval(model: nn.Module) -> None:
    """Put the encoders that do not train in eval mode, so their batch-norm statistics (a CNN trunk's)
    and dropout do not change while their weights do not train."""
    for encoder in model.encoders().values():
        if not any(p.requires_grad for p in encoder.parameters()):
            encoder.eval()


def describe(stage: str, counts: dict[str, int]) -> str:
    """A one-line summary of :func:`set_stage`'s counts.

    Example:
        >>> describe("align", {"trainable": 10, "total": 40, "connector": 10, "llm": 0, "moe": 0})
        "moezoo stage 'align': 10 of 40 parameters train (25.0%: connector 10)"
    """
    n, total = counts["trainable"], counts["total"]
    parts = ", ".join(f"{k} {v:,}" for k, v in counts.items() if k not in ("trainable", "total") and v)
    return f"moezoo stage {stage!r}: {n:,} of {total:,} parameters train ({100 * n / total:.1f}%: {parts})"


def warm_start(model: nn.Module, source: nn.Module) -> dict[str, list[str]]:
    """Copy into ``model`` every parameter and buffer of ``source`` with the same name and shape.

    How a recipe grows a trained model: Uni-MoE (Li et al. 2024) starts its image + audio model
    from a trained image model and adds the audio encoder and connector fresh. A tensor both
    models name with different shapes is an error (the two are not the same layout), and so is a
    source that shares no tensor with ``model``.

    Returns:
        ``{"copied": [...], "fresh": [...], "unused": [...]}``: the names copied, the names of
        ``model`` left as built, and the names of ``source`` that ``model`` lacks.

    Example:
        >>> small, big = nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 3))
        >>> report = warm_start(big, small)
        >>> report["copied"], report["fresh"], bool(big[0].weight.eq(small[0].weight).all())
        (['0.bias', '0.weight'], ['1.bias', '1.weight'], True)
    """
    target, given = model.state_dict(), source.state_dict()
    if any(t.is_meta for t in target.values()):
        raise ValueError("the model to warm-start is on the meta device (as FSDP builds it), where copied weights "
                         "would be lost when it is materialised; warm-start on one process, save the model, and "
                         "train from that dir with checkpoint=DIR")
    clash = [f"{k} {tuple(given[k].shape)} -> {tuple(v.shape)}" for k, v in target.items()
             if k in given and given[k].shape != v.shape]
    if clash:
        raise ValueError(f"the warm start's tensors have other shapes than this model's: {', '.join(clash[:5])}"
                         + (f" and {len(clash) - 5} more" if len(clash) > 5 else "")
                         + "; start from a model of the same layout (the same LLM and encoder sizes)")
    copied = sorted(k for k in target if k in given)
    if not copied:
        raise ValueError("the warm start shares no tensor name with this model: "
                         f"it has {', '.join(sorted(given)[:3])}..., this model {', '.join(sorted(target)[:3])}...")
    model.load_state_dict({k: given[k] for k in copied}, strict=False)  # copies into the model's dtypes
    return {"copied": copied, "fresh": sorted(k for k in target if k not in given),
            "unused": sorted(k for k in given if k not in target)}


def prefixes(names: list[str], depth: int = 2) -> str:
    """The distinct dotted prefixes of ``names``, ``depth`` parts deep, for a log line.

    Example:
        >>> prefixes(["audio.encoder.conv1.weight", "audio.encoder.conv2.weight", "connectors.audio.queries"])
        'audio.encoder, connectors.audio'
    """
    return ", ".join(dict.fromkeys(".".join(n.split(".")[:depth]) for n in names)) or "none"
