"""The demo's routing view: which experts handled each token of an exchange, layer by layer.

:func:`routed_exchange` runs the model once over the prompt followed by the answer it gave
(:class:`~moezoo.eval.chat.Reply`), with the answer as ``labels``. That is the view the model had
while decoding: the instruction-aware parts read the prompt only, and a ``"prefix"`` attention span
ends where the answer starts (:meth:`~moezoo.models.multimodal.MultimodalMoEForCausalLM.embed_inputs`).
The forward's output carries one :class:`~moezoo.moe.Routing` per LLM MoE layer and, for a
multimodal model, each token's modality. For a dropless token-choice router the experts of each
token are the ones decoding chose; a router with a capacity limit or expert choice picks per batch,
so there they are the experts of this one forward.

:func:`token_routes` turns that into one :class:`TokenRoute` per token: its text, modality, role
(prompt or answer), and per MoE layer the experts that took it in rank order with their gate
weights. MH-MoE routes ``h`` sub-tokens per token (token ``t``'s are ``t*h .. t*h + h - 1``); each
keeps its own list. Expert choice gives a token 0 to E experts, listed by weight.
:func:`routing_html` draws the tokens x layers table, each row coloured by the token's modality.

Example:
    >>> import torch
    >>> from moezoo.moe import Routing
    >>> r = Routing(token_idx=torch.tensor([0, 1, 0, 1]), expert_idx=torch.tensor([2, 0, 1, 3]),
    ...             weight=torch.tensor([0.7, 0.6, 0.3, 0.4]), logits=torch.zeros(2, 4), probs=torch.zeros(2, 4))
    >>> token_experts(r, num_tokens=2)  # rank-major: both tokens' top-1, then their top-2
    [[((2, 0.7), (1, 0.3))], [((0, 0.6), (3, 0.4))]]
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moezoo.eval.chat import Reply
from moezoo.moe import MoELayer
from moezoo.processing.chat import IGNORE_INDEX
from moezoo.processing.tokens import MODALITY_NAMES

# Pale backgrounds, one per modality, dark text stays readable on each.
MODALITY_COLOURS = {"text": "#dbeafe", "image": "#ffedd5", "audio": "#dcfce7", "video": "#f3e8ff"}

Assignment = tuple[int, float]  # (expert id, gate weight)


@dataclass(frozen=True)
class TokenRoute:
    """One token of the exchange and the experts that handled it.

    Attributes:
        position: the token's index in the sequence.
        token: its text as shown (whitespace made visible).
        modality: ``"text"``, ``"image"``, ``"audio"`` or ``"video"``.
        role: ``"prompt"`` or ``"answer"``.
        experts: per LLM MoE layer, per sub-token (one unless MH-MoE), the ``(expert, weight)``
            assignments in rank order.
    """

    position: int
    token: str
    modality: str
    role: str
    experts: tuple[tuple[tuple[Assignment, ...], ...], ...]


@dataclass
class RoutedExchange:
    """The routing of one exchange: the tokens, the MoE layers' names and the layers' sizes."""

    tokens: list[TokenRoute]
    layers: list[str]  # column titles: "layer i" of the LLM
    sites: list[str]  # the MoE sites' module names (``llm.layers.i.mlp``)
    num_experts: list[int]
    other_sites: list[str]  # MoE sites outside the LLM (connector, encoder): they route media features


def token_experts(routing: Any, num_tokens: int) -> list[list[tuple[Assignment, ...]]]:
    """Per token, per sub-token, the ``(expert, weight)`` assignments of one layer's ``routing``.

    Token choice emits its assignments rank-major (every token's top-1, then every top-2, ...), so
    each token's list keeps that order; expert choice is listed by weight, largest first.

    Raises:
        ValueError: the routing does not cover a whole number of sub-tokens per token.
    """
    rows = routing.probs.shape[0]
    sub = rows // max(num_tokens, 1)
    if sub < 1 or sub * num_tokens != rows:
        raise ValueError(f"the routing covers {rows} (sub-)tokens, not a multiple of the {num_tokens} tokens")
    per_row: list[list[Assignment]] = [[] for _ in range(rows)]
    for t, e, w in zip(routing.token_idx.tolist(), routing.expert_idx.tolist(), routing.weight.float().tolist()):
        per_row[t].append((int(e), round(float(w), 4)))
    if not getattr(routing, "token_choice", True):
        per_row = [sorted(r, key=lambda a: -a[1]) for r in per_row]
    return [[tuple(per_row[t * sub + s]) for s in range(sub)] for t in range(num_tokens)]


def show_token(text: str) -> str:
    """A token's text for the table: a newline as ``↵``, other whitespace-only tokens as ``␣``, else stripped.

    Example:
        >>> show_token("\\n"), show_token(" "), show_token(" colour")
        ('↵', '␣', 'colour')
    """
    if text.strip():
        return text.strip()
    return "↵" * text.count("\n") if "\n" in text else "␣"


def _layer_title(site: str, i: int) -> str:
    match = re.search(r"layers\.(\d+)\.", site)
    return f"layer {match.group(1)}" if match else f"MoE {i}"


@torch.inference_mode()
def routed_exchange(model: nn.Module, answer: Reply) -> RoutedExchange:
    """Run ``model`` over ``answer``'s prompt and answer (the answer as ``labels``) and collect the routing.

    Example:
        >>> import moezoo
        >>> from moezoo.eval.chat import reply
        >>> model = moezoo.create_model("moe_lm_tiny")
        >>> view = routed_exchange(model, reply(model, "Hi", max_new_tokens=2))
        >>> len(view.tokens) == reply(model, "Hi", max_new_tokens=2).sequence.shape[1], view.layers[:1]
        (True, ['layer 0'])
    """
    sequence = answer.sequence  # (1, T)
    num_prompt = answer.inputs["input_ids"].shape[1]
    labels = sequence.clone()
    labels[:, :num_prompt] = IGNORE_INDEX
    media = {k: v for k, v in answer.inputs.items() if k not in ("input_ids", "attention_mask", "token_type_ids")}
    if model.processor is None:
        media = {}
    out = model(input_ids=sequence, attention_mask=torch.ones_like(sequence), labels=labels, **media)
    ids = sequence[0].tolist()
    modality_ids = getattr(out, "modality_ids", None)
    modalities = [0] * len(ids) if modality_ids is None else modality_ids[0].tolist()
    sites = model.moe_sites()
    llm_sites = [name for name, m in sites.items() if isinstance(m, MoELayer)]
    if len(llm_sites) != len(out.routings):
        llm_sites = [f"moe.{i}" for i in range(len(out.routings))]
    per_layer = [token_experts(r, len(ids)) for r in out.routings]
    tokenizer = model.tokenizer
    tokens = [TokenRoute(position=t, token=show_token(tokenizer.decode([i])),
                         modality=MODALITY_NAMES[max(modalities[t], 0)],
                         role="prompt" if t < num_prompt else "answer",
                         experts=tuple(tuple(layer[t]) for layer in per_layer))
              for t, i in enumerate(ids)]
    return RoutedExchange(tokens=tokens, layers=[_layer_title(s, i) for i, s in enumerate(llm_sites)],
                          sites=llm_sites, num_experts=[int(r.probs.shape[-1]) for r in out.routings],
                          other_sites=[name for name, m in sites.items() if not isinstance(m, MoELayer)])


def _cell(assignments: tuple[tuple[Assignment, ...], ...]) -> tuple[str, str]:
    """A cell's HTML (top-1 in bold, sub-tokens separated by ``|``) and its tooltip (the gate weights)."""
    shown, tip = [], []
    for s, sub in enumerate(assignments):
        ids = [f"<b>{e}</b>" if rank == 0 else str(e) for rank, (e, _) in enumerate(sub)]
        shown.append(" ".join(ids) if ids else "–")
        head = f"head {s}: " if len(assignments) > 1 else ""
        tip.append(head + (", ".join(f"expert {e}: {w:.3f}" for e, w in sub) or "no expert"))
    return " | ".join(shown), "; ".join(tip)


def routing_html(view: RoutedExchange) -> str:
    """The tokens x MoE layers table: each cell lists the experts that took the token in rank order (top-1 in
    bold, the gate weights on hover); each row's background is its token's modality; answer tokens are marked.

    Example:
        >>> view = RoutedExchange([TokenRoute(0, "<image>", "image", "prompt", ((((3, 0.6), (1, 0.4)),),))],
        ...                       ["layer 0"], ["llm.layers.0.mlp"], [8], [])
        >>> page = routing_html(view)
        >>> 'data-tokens="1" data-layers="1"' in page, "<b>3</b> 1" in page
        (True, True)
    """
    if not view.layers:
        return ('<div id="moezoo-routing"><p>This model has no MoE layer: every token goes through the same '
                "dense MLP, so there is no routing to show.</p></div>")
    present = [m for m in MODALITY_NAMES if any(t.modality == m for t in view.tokens)]
    legend = " ".join(f'<span style="background:{MODALITY_COLOURS[m]};padding:2px 8px;border-radius:4px;'
                      f'margin-right:6px" data-legend="{m}">{m}</span>' for m in present)
    k_note = "top-1 in bold; hover a cell for the gate weights"
    head = "".join(f'<th title="{html.escape(s)}: {e} experts" style="padding:2px 8px">{html.escape(name)}</th>'
                   for name, s, e in zip(view.layers, view.sites, view.num_experts))
    rows = []
    for t in view.tokens:
        answer = t.role == "answer"
        cells = []
        for layer in t.experts:
            shown, tip = _cell(layer)
            cells.append(f'<td title="{html.escape(tip)}" style="padding:1px 8px;font-family:monospace">{shown}</td>')
        mark = "border-left:4px solid #111;font-weight:600;" if answer else ""
        rows.append(f'<tr data-modality="{t.modality}" data-role="{t.role}" '
                    f'style="background:{MODALITY_COLOURS[t.modality]};{mark}">'
                    f'<td style="padding:1px 6px;color:#555">{t.position}</td>'
                    f'<td style="padding:1px 8px;font-family:monospace">{html.escape(t.token)}</td>'
                    f'<td style="padding:1px 6px;color:#555">{"answer" if answer else ""}</td>{"".join(cells)}</tr>')
    used_per_layer = [len({a[0] for t in view.tokens for sub in t.experts[i] for a in sub})
                      for i in range(len(view.layers))]
    used = "".join(f'<td style="padding:2px 8px">{n} of {e}</td>' for n, e in zip(used_per_layer, view.num_experts))
    others = html.escape(", ".join(view.other_sites))
    other = (f"<p>{len(view.other_sites)} more MoE site(s) outside the LLM ({others}) route the media features "
             "before they become tokens; they are not shown here.</p>"
             if view.other_sites else "")
    return (f'<div id="moezoo-routing"><p style="margin:4px 0">Modality: {legend} &nbsp; Each cell: the experts '
            f"that handled the token in that MoE layer, in rank order ({k_note}). Answer tokens have a dark "
            f"edge.</p>"
            f'<table data-tokens="{len(view.tokens)}" data-layers="{len(view.layers)}" '
            'style="border-collapse:collapse;font-size:13px">'
            f'<thead><tr><th>#</th><th>token</th><th></th>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody>'
            f'<tfoot><tr><td></td><td colspan="2" style="padding:2px 8px">experts used</td>{used}</tr></tfoot>'
            f"</table>{other}</div>")
