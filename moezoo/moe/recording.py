"""Per-forward recording of the MoE sites that must return a plain tensor.

An :class:`~moezoo.moe.MoELayer` returns its routing with its output
(:class:`~moezoo.moe.MoEOutput`). A :class:`~moezoo.moe.mlp_experts.MoEMLP` cannot: it replaces
the MLP inside third-party blocks (transformers, timm, open_clip) that call ``self.mlp(x)`` and
add a tensor. So each ``MoEMLP`` call reports its :class:`~moezoo.moe.MoEOutput` to the
*recorder* of the forward it runs in, and the owning model returns the records with its
output. Because every call is a record, nothing is lost when a site runs twice in one forward:
a vision tower that encodes the images and then the video frames leaves two records.

* :class:`SiteRecorder` (``with SiteRecorder(model) as recorder:``) opens a recorder for one
  forward; :attr:`SiteRecorder.records` are the calls, in order, as :class:`SiteOutput`.
* :func:`modality_pass` (``with modality_pass("video"):``) names the pass the enclosed calls
  belong to (the multimodal model names each encoding pass by its modality).
* :func:`site_losses` and :func:`site_stats` sum the losses and merge the statistics per site.

The active recorder and the pass are :mod:`contextvars`, not module state: a module keeps
nothing between forwards, a forward outside any recorder (``generate``, a bare tower) keeps
nothing, and the recompute of an activation-checkpointed block, which runs in backward after
the recorder is closed, records nothing twice. A context variable belongs to its thread (and
asyncio task): a site run in another thread is recorded only when that thread runs in a copy of
the context (:func:`contextvars.copy_context`). The report from inside a module is one call
excluded from ``torch.compile`` (:func:`torch.compiler.disable`): a compiled block breaks its
graph there and records eagerly, as ``MoEMLP``'s data-dependent dispatch breaks it anyway.
FSDP2 keeps module identities, so the recorder names sites correctly in sharded models.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import nn

from moezoo.moe.config import MoEConfig
from moezoo.moe.layer import MoEOutput, RoutingStats

_RECORDER: ContextVar[SiteRecorder | None] = ContextVar("moezoo_moe_recorder", default=None)
_MODALITY: ContextVar[str | None] = ContextVar("moezoo_moe_modality", default=None)


@dataclass(frozen=True)
class SiteOutput:
    """One call of one MoE site within a recorded forward.

    Attributes:
        site: the site's module name under the recorder's root
            (``"vision.vision_tower.encoder.layers.0.mlp"``, ``"connectors.image.mlp"``).
        modality: the pass it ran in (:func:`modality_pass`): ``"image"``, ``"audio"``,
            ``"video"``; ``None`` outside a named pass.
        call: how many calls of this site came before it in the forward (0, 1, ...).
        output: the routing and output of the call: ``hidden_states (T, out_dim)`` (the
            output with the call's ``T`` tokens flattened, in the routing's token order),
            ``routing`` (over those ``T`` tokens), ``tokens_per_expert (E,)``,
            ``num_dropped ()``; ``aux_loss ()``, ``z_loss ()`` and ``stats`` computed when read.
        config: the site's router config; its ``aux_loss_coef`` / ``z_loss_coef`` weigh the losses.
    """

    site: str
    modality: str | None
    call: int
    output: MoEOutput
    config: MoEConfig

    @property
    def weighted_loss(self) -> torch.Tensor:
        """``aux_loss_coef * aux_loss + z_loss_coef * z_loss``: what the call adds to a training loss."""
        c, out = self.config, self.output
        return c.aux_loss_coef * out.aux_loss + c.z_loss_coef * out.z_loss


class SiteRecorder:
    """Collect the calls of the MoE sites under ``root`` during one forward.

    Args:
        root: the model whose submodules are named in the records; ``None`` names each site
            by its class (for a site used on its own).

    Attributes:
        records: the :class:`SiteOutput` of every call, in call order.

    Example:
        >>> from moezoo.moe.mlp_experts import MoEMLP
        >>> tower = nn.Sequential(nn.Linear(8, 8), MoEMLP(8, 16, num_experts=4, top_k=2))
        >>> with SiteRecorder(tower) as recorder:
        ...     with modality_pass("image"):
        ...         _ = tower(torch.randn(3, 8))
        ...     with modality_pass("video"):
        ...         _ = tower(torch.randn(5, 8))
        >>> [(r.site, r.modality, r.call, r.output.tokens_per_expert.sum().item()) for r in recorder.records]
        [('1', 'image', 0, 6), ('1', 'video', 1, 10)]
        >>> _ = tower(torch.randn(3, 8))  # no recorder open: nothing is kept
        >>> len(recorder.records)
        2
    """

    def __init__(self, root: nn.Module | None = None):
        self.root = root
        self.records: list[SiteOutput] = []
        self._names: dict[int, str] | None = None  # id(module) -> name, built at the first record
        self._calls: dict[str, int] = {}
        self._token = None

    def __enter__(self) -> SiteRecorder:
        if self._token is not None:
            raise RuntimeError("this SiteRecorder is open already; open a new one per forward")
        self._token = _RECORDER.set(self)
        return self

    def __exit__(self, *exc) -> None:
        _RECORDER.reset(self._token)
        self._token = None

    def add(self, module: nn.Module, output: MoEOutput) -> SiteOutput:
        """Record one call of ``module`` (a site under :attr:`root`) that produced ``output``."""
        site = self._name(module)
        call = self._calls.get(site, 0)
        self._calls[site] = call + 1
        record = SiteOutput(site, _MODALITY.get(), call, output, module.config)
        self.records.append(record)
        return record

    def _name(self, module: nn.Module) -> str:
        if self.root is None:
            return type(module).__name__
        if self._names is None:
            self._names = {id(m): name for name, m in self.root.named_modules()}
        name = self._names.get(id(module))
        if name is None:
            raise ValueError(f"a {type(module).__name__} that is not a submodule of the recording "
                             f"{type(self.root).__name__} ran inside its forward; record it under its own "
                             f"SiteRecorder, or make it a submodule of the model")
        return name


@contextmanager
def modality_pass(modality: str | None) -> Iterator[None]:
    """Name the pass of the enclosed MoE calls: ``with modality_pass("video"): ...``.

    Example:
        >>> with modality_pass("audio"):
        ...     current_modality()
        'audio'
        >>> current_modality() is None
        True
    """
    token = _MODALITY.set(modality)
    try:
        yield
    finally:
        _MODALITY.reset(token)


def current_modality() -> str | None:
    """The pass named by the innermost :func:`modality_pass`, else ``None``."""
    return _MODALITY.get()


@torch.compiler.disable
def record_site(module: nn.Module, output: MoEOutput) -> None:
    """Report one call of an MoE site to the open :class:`SiteRecorder`, if any (else keep nothing).

    Called by modules that return a plain tensor (:class:`~moezoo.moe.mlp_experts.MoEMLP`).
    """
    recorder = _RECORDER.get()
    if recorder is not None:
        recorder.add(module, output)


def site_losses(records: Iterable[SiteOutput]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per site, ``(aux_loss, z_loss)`` unweighted and summed over the site's calls.

    Each call is balanced on its own tokens (the images of a batch and its video frames are two
    populations), so a site that ran twice contributes the two calls' losses, as two forwards would.

    Example:
        >>> from moezoo.moe.mlp_experts import MoEMLP
        >>> moe = MoEMLP(8, 16, num_experts=4, top_k=2)
        >>> with SiteRecorder() as recorder:
        ...     _, _ = moe(torch.randn(3, 8)), moe(torch.randn(5, 8))
        >>> aux, z = site_losses(recorder.records)["MoEMLP"]
        >>> bool(torch.isclose(aux, sum(r.output.aux_loss for r in recorder.records)))
        True
    """
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for r in records:
        aux, z = r.output.aux_loss, r.output.z_loss
        if r.site in out:
            aux, z = out[r.site][0] + aux, out[r.site][1] + z
        out[r.site] = (aux, z)
    return out


def site_stats(records: Iterable[SiteOutput]) -> dict[str, RoutingStats]:
    """Per site, the routing statistics of all its calls together.

    ``tokens_per_expert`` is summed over the calls; ``router_entropy`` and ``dropped_fraction``
    are their means weighted by each call's tokens: what one call on all the tokens would report.
    """
    by_site: dict[str, list[SiteOutput]] = {}
    for r in records:
        by_site.setdefault(r.site, []).append(r)
    return {site: _merge([r.output for r in calls]) for site, calls in by_site.items()}


def _merge(outputs: list[MoEOutput]) -> RoutingStats:
    if len(outputs) == 1:
        return outputs[0].stats
    with torch.no_grad():
        tokens = [float(o.routing.probs.shape[0]) for o in outputs]
        total = max(sum(tokens), 1.0)
        stats = [o.stats for o in outputs]
        return RoutingStats(sum(s.tokens_per_expert for s in stats),
                            sum(s.dropped_fraction * n for s, n in zip(stats, tokens)) / total,
                            sum(s.router_entropy * n for s, n in zip(stats, tokens)) / total)

