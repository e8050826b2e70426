"""Routing records: what every MoE site of a model did on an evaluation task, token by token.

A record (:class:`SiteRecords`) holds, for one MoE site named as :func:`~moezoo.analysis.sites.site_names`
names it (``llm.3``, ``connector``, ``vision.5``), one row per routed (sub-)token:

- ``probs (T, E)``: the router's probabilities over all experts (``Routing.probs``);
- ``experts``: the experts chosen, ``(T, k)`` in rank order (``(T, E)`` bools for expert choice;
  :func:`~moezoo.analysis.routing.chosen_experts`);
- ``modality (T,)``: 0 text, 1 image, 2 audio, 3 video (:data:`MODALITY_NAMES`);
- ``role (T,)``: 0 a prompt position, 1 an *answer* position: the position that predicts the first
  answer token, where the OLMoE expert-contribution paper (arXiv 2502.17187) attributes an answer
  to experts. For a VQA task that is the prompt's last position, as ``moezoo eval`` asks it (chat
  template, generation prompt); for a multiple-choice task the last context position; for a
  perplexity task every position predicts a token, so every position is one;
- ``example (T,)``: the task example the token belongs to, so that whether the model answered it
  correctly (:attr:`Records.correct`) reaches its tokens, for the per-expert accuracy.

Records come from the forward's output only (issue G's contract): the LLM's
``routings`` with the output's ``modality_ids``, and the ``site_outputs`` of the MoE sites outside it
(a connector's, an upcycled encoder's: media tokens, one record per pass, each a prompt position of
the example its item belongs to). Padding is left out. MH-MoE's sub-tokens are rows of their own,
each carrying its token's modality, role and example.

A :class:`TaskProbe` runs a model over a task's examples, batched, and returns the :class:`Records`
with the task metric; it keeps the preprocessed batches, so re-scoring the model (each expert
ablated in turn, :mod:`moezoo.analysis.report`) encodes nothing twice. :func:`probe_for` picks the
probe of a shipped ``moezoo eval`` task.

Example:
    >>> import moezoo
    >>> model = moezoo.create_model("moe_lm_tiny")
    >>> records = probe_for(model, "text_mc", limit=3).collect(model)
    >>> records.metric, list(records.sites), records.sites["llm.0"].select("answer").sum().item()
    ('acc', ['llm.0', 'llm.1'], 3)
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from moezoo.analysis.routing import chosen_experts, routing_stats
from moezoo.analysis.sites import site_names
from moezoo.processing.tokens import MODALITY_NAMES
from moezoo.eval import batching
from moezoo.eval.tasks import (
    TASKS,
    ContinuationChoiceTask,
    PerplexityTask,
    ShippedTask,
    VQATask,
    model_modalities,
)

ROLES = ("prompt", "answer")
POSITIONS = ("answer", "all")
ANSWER_TOKENS = 16  # VQATask.answer's default: the answers must be moezoo eval's


@dataclass
class SiteRecords:
    """One MoE site's routing over the recorded tokens (see the module docstring for the fields)."""

    name: str
    num_experts: int
    top_k: int
    renormalize: bool
    probs: torch.Tensor  # (T, E) float32
    experts: torch.Tensor  # (T, k) int64 in rank order, or (T, E) bool for expert choice
    modality: torch.Tensor  # (T,) int64, an index into MODALITY_NAMES
    role: torch.Tensor  # (T,) int64, an index into ROLES
    example: torch.Tensor  # (T,) int64

    @property
    def in_llm(self) -> bool:
        """Whether the site is one of the language model's (the only ones that see answer positions)."""
        return self.name.startswith("llm.")

    def select(self, position: str) -> torch.Tensor:
        """``(T,)`` bools: the rows that count at ``position`` (``"answer"`` or ``"all"``).

        Sites outside the LLM route media tokens, which are never an answer position: all their
        rows count at either position.
        """
        if position not in POSITIONS:
            raise ValueError(f"position={position!r} must be one of {POSITIONS}")
        if position == "all" or not self.in_llm:
            return torch.ones_like(self.role, dtype=torch.bool)
        return self.role == ROLES.index("answer")

    def stats(self, position: str, correct: torch.Tensor | None = None) -> dict[str, Any]:
        """:func:`~moezoo.analysis.routing.routing_stats` of the rows at ``position``, the accuracy keys
        from ``correct`` (per example), and ``modality_frequency`` over *every* row (the modality view
        is about all the tokens a site sees, whatever ``position`` is)."""
        keep = self.select(position)
        examples = self.example[keep]
        # A media token whose item could not be traced to its example (-1) leaves the site without accuracy.
        right = None if correct is None or bool((examples < 0).any()) else correct[examples]
        stats = routing_stats(self.probs[keep], self.top_k, self.renormalize, correct=right,
                              expert_idx=self.experts[keep])
        labels = [MODALITY_NAMES[m] for m in self.modality.tolist()]
        stats["modality_frequency"] = routing_stats(self.probs, self.top_k, self.renormalize, modality=labels,
                                                    expert_idx=self.experts)["modality_frequency"]
        stats["modality_tokens"] = {m: labels.count(m) for m in stats["modality_frequency"]}
        return stats


@dataclass
class Records:
    """A model's routing records on a task, and how it did.

    Attributes:
        task: the task name.
        metric / value / higher_is_better: the task metric (``vqa_accuracy``, ``acc``, ``perplexity``).
        correct: ``(N,)`` bools, whether each example was answered right (``None`` for perplexity).
        sites: short site name -> :class:`SiteRecords`, in module order.
        default_position: ``"answer"``, or ``"all"`` for a perplexity task.
    """

    task: str
    metric: str
    value: float
    higher_is_better: bool
    correct: torch.Tensor | None
    sites: dict[str, SiteRecords]
    num_examples: int
    default_position: str = "answer"


class _Collector:
    """Accumulates the routing of each forward's output into per-site rows."""

    def __init__(self, model: nn.Module):
        self.names = site_names(model)
        modules = dict(model.named_modules())
        self.configs = {short: modules[path].config for path, short in self.names.items()}
        self.llm_sites = [short for short in self.names.values() if short.startswith("llm.")]
        processor = model.processor  # None for a text LM
        self.placeholders = processor.placeholder_ids() if processor is not None else {}
        self.num_tokens = dict(processor.num_tokens) if processor is not None else {}
        self.rows: dict[str, list[tuple]] = {short: [] for short in self.names.values()}

    def add(self, output: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, role_BT: torch.Tensor,
            examples: list[int]) -> None:
        """One forward's ``output`` over ``input_ids (B, T)``; ``role_BT`` the positions' roles; ``examples``
        the task example of each row."""
        example_B = torch.tensor(examples, dtype=torch.long)
        modality_BT = getattr(output, "modality_ids", None)
        if modality_BT is None:  # a text LM: text wherever the mask says a token is real
            modality_BT = torch.where(attention_mask.bool(), 0, -1)
        modality_N = modality_BT.reshape(-1).cpu()
        keep_N = modality_N >= 0
        role_N = role_BT.reshape(-1).cpu()
        example_N = example_B[:, None].expand(input_ids.shape).reshape(-1)
        if len(output.routings) != len(self.llm_sites):
            raise ValueError(f"the output carries {len(output.routings)} LLM routings for {len(self.llm_sites)} "
                             "LLM MoE sites: a forward without router outputs cannot be recorded")
        for name, routing in zip(self.llm_sites, output.routings):
            self._add(name, routing, keep_N, modality_N, role_N, example_N)
        for record in getattr(output, "site_outputs", ()):
            self._add_media(self.names.get(record.site, record.site), record, input_ids, example_B)

    def _add(self, name: str, routing: Any, keep: torch.Tensor, modality: torch.Tensor, role: torch.Tensor,
             example: torch.Tensor) -> None:
        rows = routing.probs.shape[0]
        h = rows // max(keep.numel(), 1)
        if h < 1 or h * keep.numel() != rows:
            raise ValueError(f"site {name}: the routing covers {rows} (sub-)tokens, not a multiple of the "
                             f"{keep.numel()} tokens of the batch")
        if h > 1:  # MH-MoE: token t's sub-tokens are rows t*h .. t*h + h - 1
            keep, modality, role, example = (v.repeat_interleave(h) for v in (keep, modality, role, example))
        experts = chosen_experts(routing).cpu()
        self.rows[name].append((routing.probs.detach().float().cpu()[keep], experts[keep], modality[keep],
                                role[keep], example[keep]))

    def _add_media(self, name: str, record: Any, input_ids: torch.Tensor, example_B: torch.Tensor) -> None:
        """A call of a site outside the LLM: media tokens of one modality, items in placeholder order."""
        routing = record.output.routing
        rows = routing.probs.shape[0]
        modality = MODALITY_NAMES.index(record.modality) if record.modality in MODALITY_NAMES else 0
        example = torch.full((rows,), -1, dtype=torch.long)
        token = self.placeholders.get(record.modality)
        if token is not None:
            is_item = (input_ids == token).cpu()
            rows_of_items = torch.arange(input_ids.shape[0])[:, None].expand_as(is_item)[is_item]
            items_B = rows_of_items[::self.num_tokens[record.modality]]
            if len(items_B) and rows % len(items_B) == 0:
                example = example_B[items_B].repeat_interleave(rows // len(items_B))
        self.rows.setdefault(name, []).append((
            routing.probs.detach().float().cpu(), chosen_experts(routing).cpu(),
            torch.full((rows,), modality, dtype=torch.long), torch.zeros(rows, dtype=torch.long), example))

    def sites(self) -> dict[str, SiteRecords]:
        out = {}
        for name, parts in self.rows.items():
            if not parts:
                continue
            config = self.configs.get(name)
            probs, experts, modality, role, example = (torch.cat(p) for p in zip(*parts))
            top_k = config.top_k if config is not None else experts.shape[-1]
            out[name] = SiteRecords(name, probs.shape[-1], top_k, bool(getattr(config, "norm_topk_prob", True)),
                                    probs, experts, modality, role, example)
        return out


class TaskProbe(abc.ABC):
    """A task's examples prepared for one model: :meth:`collect` records and scores, :meth:`score` only scores."""

    metric: str
    higher_is_better: bool = True
    default_position: str = "answer"

    def __init__(self, model: nn.Module, task: ShippedTask, limit: int | None, batch_size: int):
        batching.check_batch_size(batch_size)
        self.task, self.batch_size = task, batch_size

    @abc.abstractmethod
    def collect(self, model: nn.Module) -> Records:
        """Run ``model`` over the examples: the routing records and the task metric."""

    @abc.abstractmethod
    def score(self, model: nn.Module, site: str | None = None) -> float:
        """The task metric of ``model`` as it is now (an expert ablated at ``site``, say)."""

    def _records(self, collector: _Collector, value: float, correct: torch.Tensor | None, n: int) -> Records:
        return Records(self.task.name, self.metric, float(value), self.higher_is_better, correct,
                       collector.sites(), n, self.default_position)


class _PrefillRecorder:
    """The routing of a ``generate`` call's prompt: what one forward over the prompt would return.

    A VQA answer is generated, and its prompt's routing is the prefill's. Rather than run the prompt
    twice (once for the records, once to decode), the prefill is read where it is computed: the first
    output of each LLM :class:`~moezoo.moe.MoELayer` in the call (a forward hook, removed on exit),
    and the records of the sites outside the LLM from a :class:`~moezoo.moe.recording.SiteRecorder`
    around the call. :meth:`output` gives them the shape of the model's forward output.
    """

    def __init__(self, model: nn.Module, collector: _Collector):
        from moezoo.moe.recording import SiteRecorder

        modules = dict(model.named_modules())
        paths = {short: path for path, short in collector.names.items()}
        self.layers = [modules[paths[name]] for name in collector.llm_sites]
        self.placeholders = collector.placeholders
        self.recorder = SiteRecorder(model)
        self.routings: dict[int, Any] = {}
        self.handles: list[Any] = []

    def __enter__(self):  # -> Self (typing.Self needs Python 3.11)
        for i, layer in enumerate(self.layers):
            self.handles.append(layer.register_forward_hook(self._hook(i)))
        self.recorder.__enter__()
        return self

    def _hook(self, i: int):
        def hook(module: nn.Module, args: Any, output: Any) -> None:  # returns None: the output is kept as is
            if i not in self.routings:  # the prefill; the decoding steps come after
                self.routings[i] = output.routing
        return hook

    def __exit__(self, *exc: object) -> None:
        self.recorder.__exit__(*exc)
        for handle in self.handles:
            handle.remove()

    def output(self, inputs: dict[str, torch.Tensor]) -> Any:
        """``routings`` (per LLM MoE layer), ``site_outputs`` and ``modality_ids (B, T)``, as the forward's."""
        from types import SimpleNamespace

        ids, real = inputs["input_ids"], inputs["attention_mask"].bool()
        modality_ids = torch.where(real, 0, -1)
        for modality, token in self.placeholders.items():
            modality_ids = torch.where(real & (ids == token), MODALITY_NAMES.index(modality), modality_ids)
        return SimpleNamespace(routings=[self.routings[i] for i in range(len(self.layers))],
                               site_outputs=self.recorder.records, modality_ids=modality_ids)


def _answer_role(attention_mask: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` roles of left-padded prompts: the last column (each prompt's last token) is the answer position."""
    role = torch.zeros_like(attention_mask, dtype=torch.long)
    role[:, -1] = ROLES.index("answer")
    return role


class AnswerProbe(TaskProbe):
    """A VQA (or audio QA) task: answers generated as ``moezoo eval`` generates them, scored by VQAv2 accuracy.

    An example is *correct* when its answer gets full VQAv2 credit. Each batch's preprocessed inputs
    are kept; when only a language-model site changes between scorings (an LLM expert ablated), the
    prompt embeddings (the encoders' and connectors' features in place) are reused as well: the
    multimodal family's ``generate`` is exactly ``embed_inputs`` followed by the LLM's decoding.
    """

    metric = "vqa_accuracy"
    embed_budget_bytes = 1 << 30  # cache prompt embeddings up to this size (float32 on the model's device)

    def __init__(self, model: nn.Module, task: VQATask, limit: int | None, batch_size: int):
        super().__init__(model, task, limit, batch_size)
        from moezoo.eval.prompts import encode_prompts, render_prompts

        if task.modality not in model_modalities(model):
            raise ValueError(f"task {task.name!r} asks about {task.modality}, but this model has no {task.modality} "
                             f"encoder (it reads: {', '.join(model_modalities(model)) or 'text only'}); analyse it "
                             f"on a text task (text_mc, text_ppl) instead")
        self.items = task.items(limit)
        placeholder = model.processor.placeholders[task.modality]
        texts, rendered = render_prompts(model, [f"{placeholder}\n{task.prompt(it)}" for it in self.items])
        encoded = encode_prompts(model, texts, rendered)
        tokenizer = model.tokenizer
        self.stops = _stop_ids(model)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (self.stops or [0])[0]
        self.batches = []
        for batch in batching.chunks(batching.longest_first([len(ids) for ids in encoded]), batch_size):
            media = {f"{task.modality}s": [[self.items[i][task.modality]] for i in batch]}
            inputs = model.processor.media_inputs([texts[i] for i in batch], **media)
            inputs |= batching.pad([encoded[i] for i in batch], pad_id, side="left")
            self.batches.append((batch, batching.to_device(inputs, model)))
        self._embeds: list[tuple[torch.Tensor, Any]] = []
        self._embed_bytes = 0

    def collect(self, model: nn.Module) -> Records:
        collector = _Collector(model)
        answers: list[str] = [""] * len(self.items)
        with torch.inference_mode(), batching.eval_mode(model):
            for batch, inputs in self.batches:
                with _PrefillRecorder(model, collector) as prefill:
                    ids = model.generate(**inputs, **self._generation())
                collector.add(prefill.output(inputs), inputs["input_ids"], inputs["attention_mask"],
                              _answer_role(inputs["attention_mask"]), batch)
                self._decode(model, ids, inputs, batch, answers)
        scores = [self.task.score(item, answer)["vqa_accuracy"] for item, answer in zip(self.items, answers)]
        correct = torch.tensor([s >= 1.0 for s in scores], dtype=torch.bool)
        return self._records(collector, sum(scores) / max(len(scores), 1), correct, len(self.items))

    def score(self, model: nn.Module, site: str | None = None) -> float:
        from moezoo.models.lm.generation import generate
        from moezoo.models.multimodal.model import MultimodalMoEForCausalLM

        reuse = isinstance(model, MultimodalMoEForCausalLM) and site is not None and site.startswith("llm.")
        answers: list[str] = [""] * len(self.items)
        with torch.inference_mode(), batching.eval_mode(model):
            for b, (batch, inputs) in enumerate(self.batches):
                if reuse:
                    embeds, spans = self._embedded(model, b)
                    ids = generate(model.language_model, inputs["input_ids"], inputs["attention_mask"],
                                   inputs_embeds=embeds, spans=spans, **self._generation())
                else:
                    ids = model.generate(**inputs, **self._generation())
                self._decode(model, ids, inputs, batch, answers)
        scores = [self.task.score(item, answer)["vqa_accuracy"] for item, answer in zip(self.items, answers)]
        return sum(scores) / max(len(scores), 1)

    def _embedded(self, model: nn.Module, b: int) -> tuple[torch.Tensor, Any]:
        """Batch ``b``'s prompt embeddings and spans; kept for the next scoring while they fit the budget."""
        if b < len(self._embeds):
            return self._embeds[b]
        inputs = self.batches[b][1]
        media = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
        embeds, spans, _ = model.embed_inputs(inputs["input_ids"], inputs["attention_mask"], **media)
        self._embed_bytes += embeds.numel() * embeds.element_size()
        if self._embed_bytes <= self.embed_budget_bytes and b == len(self._embeds):
            self._embeds.append((embeds, spans))
        return embeds, spans

    def _generation(self) -> dict[str, Any]:
        return {"max_new_tokens": ANSWER_TOKENS, "do_sample": False}

    def _decode(self, model: nn.Module, ids: torch.Tensor, inputs: dict, batch: list[int], answers: list[str]) -> None:
        """The new tokens of each row up to its first stop token, decoded as ``generate_answers`` decodes them."""
        for i, row in zip(batch, ids[:, inputs["input_ids"].shape[1]:].tolist()):
            end = next((j for j, t in enumerate(row) if t in self.stops), len(row))
            answers[i] = model.tokenizer.decode(row[:end], skip_special_tokens=True).strip()


def _stop_ids(model: nn.Module) -> list[int]:
    """The ids ``generate`` stops at: the LLM config's ``eos_token_id``, else the tokenizer's."""
    from moezoo.models.lm.config import id_list

    return id_list(model.language_model.config.eos_token_id) or id_list(getattr(model.tokenizer, "eos_token_id", None))


def _tokenizer(model: nn.Module) -> Any:
    if model.tokenizer is None:
        raise ValueError(f"{type(model).__name__} has no tokenizer attached (model.tokenizer is None): a text task "
                         "needs one")
    return model.tokenizer


def _text_rows(model: nn.Module, rows: list[list[int]], side: str, examples: list[int], collector: _Collector,
               role: str) -> None:
    """Forward token rows (no media) padded on ``side`` and record them; ``role`` ``"last"`` marks the last
    column as the answer position (left padding), ``"all"`` every real token."""
    tokenizer = model.tokenizer
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    inputs = batching.to_device(batching.pad(rows, pad_id, side=side), model)
    out = model(**inputs)
    mask = inputs["attention_mask"]
    roles = _answer_role(mask) if role == "last" else mask.long() * ROLES.index("answer")
    collector.add(out, inputs["input_ids"], mask, roles, examples)


class ChoiceProbe(TaskProbe):
    """A multiple-choice task scored by log-likelihood (``text_mc``): ``acc``, as ``moezoo eval`` computes it.

    The answer position is the context's last position: it predicts the first token of every choice.
    """

    metric = "acc"

    def __init__(self, model: nn.Module, task: ContinuationChoiceTask, limit: int | None, batch_size: int):
        super().__init__(model, task, limit, batch_size)
        from moezoo.eval.language import encode_pair
        from moezoo.eval.scoring import context_length, prefix_token

        tokenizer = _tokenizer(model)
        prefix = prefix_token(model, tokenizer)
        self.items = task.items(limit)
        if not self.items:
            raise ValueError(f"task {task.name!r} has no item to analyse (limit={limit})")
        self.requests, self.contexts = [], []
        for item in self.items:  # as moezoo.eval.language.multiple_choice builds them
            pairs = [encode_pair(tokenizer, item["context"], " " + choice, prefix) for choice in item["choices"]]
            self.requests += pairs
            self.contexts.append(pairs[0][0][-context_length(model):])

    def _correct(self, model: nn.Module) -> torch.Tensor:
        from moezoo.eval.scoring import loglikelihoods

        lls = iter(ll for ll, _ in loglikelihoods(model, self.requests, batch_size=self.batch_size))
        right = []
        for item in self.items:
            scores = [next(lls) for _ in item["choices"]]
            right.append(max(range(len(scores)), key=scores.__getitem__) == item["label"])  # ties: the first
        return torch.tensor(right, dtype=torch.bool)

    def collect(self, model: nn.Module) -> Records:
        collector = _Collector(model)
        with torch.inference_mode(), batching.eval_mode(model):
            for batch in batching.chunks(list(range(len(self.items))), self.batch_size):
                _text_rows(model, [self.contexts[i] for i in batch], "left", batch, collector, "last")
            correct = self._correct(model)
        return self._records(collector, correct.float().mean().item(), correct, len(self.items))

    def score(self, model: nn.Module, site: str | None = None) -> float:
        with batching.eval_mode(model):
            return self._correct(model).float().mean().item()


class PerplexityProbe(TaskProbe):
    """A perplexity task (``text_ppl``): every position predicts a token, so every position is an answer one."""

    metric = "perplexity"
    higher_is_better = False
    default_position = "all"

    def __init__(self, model: nn.Module, task: PerplexityTask, limit: int | None, batch_size: int):
        super().__init__(model, task, limit, batch_size)
        from moezoo.data.shards import read_split, shipped_dataset
        from moezoo.eval.language import encode
        from moezoo.eval.scoring import context_length, prefix_token

        self.texts = [s["txt"].decode("utf-8") for s in read_split(shipped_dataset(task.dataset), task.split,
                                                                     limit=limit)]
        if not self.texts:
            raise ValueError(f"task {task.name!r} has no text to analyse (limit={limit})")
        tokenizer = _tokenizer(model)
        bos, prefix = getattr(tokenizer, "bos_token_id", None), prefix_token(model, tokenizer)
        self.rows = []
        for text in self.texts:  # each text conditioned on the BOS (else the prefix token), as perplexity reads it
            ids = encode(tokenizer, text)
            ids = ids if ids and ids[0] == bos else [prefix] + ids
            self.rows.append(ids[:context_length(model)])

    def collect(self, model: nn.Module) -> Records:
        collector = _Collector(model)
        with torch.inference_mode(), batching.eval_mode(model):
            for batch in batching.chunks(list(range(len(self.rows))), self.batch_size):
                _text_rows(model, [self.rows[i] for i in batch], "right", batch, collector, "all")
        return self._records(collector, self.score(model), None, len(self.texts))

    def score(self, model: nn.Module, site: str | None = None) -> float:
        from moezoo.eval.language import perplexity

        with batching.eval_mode(model):
            return float(perplexity(model, self.texts, batch_size=self.batch_size)["perplexity"])


def probe_for(model: nn.Module, task: str | ShippedTask, limit: int | None = None, batch_size: int = 64) -> TaskProbe:
    """The probe of shipped task ``task`` (a name of :data:`moezoo.eval.tasks.TASKS`, or the task) for ``model``.

    Raises:
        ValueError: an unknown task (the message lists the shipped ones), or one the model cannot read.
    """
    if isinstance(task, str):
        if task not in TASKS:
            import difflib

            close = difflib.get_close_matches(task, list(TASKS), n=3)
            hint = f" (closest: {', '.join(close)})" if close else ""
            raise ValueError(f"unknown task {task!r}{hint}; moezoo analyze runs the shipped tasks: "
                             f"{', '.join(TASKS)}")
        task = TASKS[task]
    if not site_names(model):
        raise ValueError(f"{type(model).__name__} has no MoE site (no MoELayer or MoEMLP): there is no routing "
                         "to analyse")
    for kind, probe in ((VQATask, AnswerProbe), (ContinuationChoiceTask, ChoiceProbe),
                        (PerplexityTask, PerplexityProbe)):
        if isinstance(task, kind):
            return probe(model, task, limit, batch_size)
    raise ValueError(f"task {task.name!r} ({type(task).__name__}) has no analysis probe")

