"""moezoo's decoder-only sparse-MoE language model.

A pre-norm Llama-style decoder (Touvron et al. 2023) whose FFNs are, layer by
layer, either a dense FFN (SwiGLU :class:`~moezoo.moe.MLP`, or Phi-2's biased GELU) or a sparse
:class:`~moezoo.moe.MoELayer` (Mixtral, arXiv 2401.04088; OLMoE, arXiv 2409.02060;
Qwen2-MoE / Qwen3-MoE). The config also gives LayerNorm for RMSNorm and Phi-2's / GPT-J's
parallel block (StableLM, Phi-2). Module names follow transformers (``embed_tokens``,
``layers.i.self_attn.q_proj``, ``layers.i.mlp``, ``norm``, ``lm_head``) so that HF
conversion is a handful of renames (see :mod:`moezoo.convert`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from moezoo.models.base import ZooModel
from moezoo.models.lm.attention import Attention, KVCache, attention_mask_for, positions_from_mask
from moezoo.models.lm.config import LMConfig
from moezoo.models.lm.head import lm_head
from moezoo.models.lm.norm import make_norm
from moezoo.models.lm.rope import RotaryEmbedding
from moezoo.moe import MLP, MoELayer, MoEOutput, Routing, RoutingStats, load_balancing_loss, router_z_loss
from moezoo.moe.losses import data_parallel_sum
from moezoo.processing.chat import IGNORE_INDEX


@dataclass
class CausalLMOutput:
    """What :meth:`MoEForCausalLM.forward` returns (the HF-style output contract).

    Attributes:
        logits: ``(B, T, V)`` next-token logits (``T`` = ``logits_to_keep`` if set); with
            ``labelled_logits=True``, ``(N, V)``: only the ``N`` positions that predict a label.
        loss: mean next-token cross-entropy over labels != -100 (plus, in training,
            ``moe.aux_loss_coef * aux_loss + moe.z_loss_coef * z_loss``); ``None`` without labels.
        aux_loss: ``()`` unweighted load-balancing loss over all MoE layers, computed as
            transformers' ``load_balancing_loss_func`` (padding excluded); 0 for dense models,
            ``None`` when the forward was asked for no router losses (decoding).
        z_loss: ``()`` router z-loss averaged over the MoE layers; 0 for dense models.
        router_stats: per MoE layer, the layer's :class:`~moezoo.moe.RoutingStats`.
        routings: per MoE layer, its :class:`~moezoo.moe.Routing` (which token went to which
            expert), for analyses that group tokens (by modality, say); empty when decoding.
    """

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    aux_loss: torch.Tensor | None = None
    z_loss: torch.Tensor | None = None
    router_stats: list[RoutingStats] = field(default_factory=list)
    routings: list[Routing] = field(default_factory=list)
    lm_loss: torch.Tensor | None = None  # the cross-entropy alone (``loss`` less the router terms)


class DecoderLayer(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``; with ``parallel_block``,
    ``x + attn(norm(x)) + ffn(norm(x))`` with one norm (Phi-2, StableLM's ``use_parallel_residual``)."""

    def __init__(self, config: LMConfig, layer_idx: int):
        super().__init__()
        c = config
        self.parallel = c.parallel_block
        self.input_layernorm = make_norm(c.norm, c.dim, c.norm_eps)
        self.self_attn = Attention(c, layer_idx)
        if not self.parallel:
            self.post_attention_layernorm = make_norm(c.norm, c.dim, c.norm_eps)
        self.is_moe = c.is_moe_layer(layer_idx)
        if self.is_moe:
            self.mlp = MoELayer(c.moe)
        else:
            self.mlp = MLP(c.dim, c.ffn_dim, c.mlp_activation, init_std=c.init_std, bias=c.mlp_bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor | None,
                is_causal: bool, cache: KVCache | None) -> tuple[torch.Tensor, MoEOutput | None]:
        if self.parallel:
            h = self.input_layernorm(x)
            x = x + self.self_attn(h, cos, sin, mask, is_causal, cache)
        else:
            x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, cache)
            h = self.post_attention_layernorm(x)
        if not self.is_moe:
            return x + self.mlp(h), None
        moe = self.mlp(h)
        return x + moe.hidden_states, moe


class MoEForCausalLM(ZooModel):
    """A causal LM with per-layer dense or sparse-MoE FFNs.

    Example:
        >>> from moezoo.moe import MoEConfig
        >>> cfg = LMConfig(vocab_size=64, dim=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=64,
        ...                moe=MoEConfig(dim=32, expert_dim=16, num_experts=4, top_k=2))
        >>> model = MoEForCausalLM(cfg)
        >>> ids = torch.randint(0, 64, (2, 7))
        >>> out = model(input_ids=ids, labels=ids)
        >>> out.logits.shape, out.loss.ndim, round(out.aux_loss.item()) >= 1
        (torch.Size([2, 7, 64]), 0, True)
    """

    config_class = LMConfig
    # A data-parallel process group, set by :func:`moezoo.parallel.parallelize` (never by model code):
    # the LM loss is then normalised by the group's global count of label tokens and the router
    # losses use statistics summed over the group, so N ranks optimise the one-process objective.
    loss_group: Any = None

    def __init__(self, config: LMConfig, tokenizer: Any = None):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = make_norm(config.norm, config.dim, config.norm_eps)
        if not config.tie_embeddings:
            self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=config.lm_head_bias)
        self.rotary = RotaryEmbedding(config.rotary_dim, config.rope_theta, config.rope_scaling,
                                      config.mrope_section, config.mrope_interleaved)
        self._init_weights()

    def _init_weights(self) -> None:
        # GPT-2 / Llama-style N(0, init_std) for matrices, zero biases; norms start at 1
        # and the MoE layers initialise their own router and experts.
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
                nn.init.normal_(module.weight, std=self.config.init_std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    @property
    def language_model(self) -> MoEForCausalLM:
        """The protocol's language model: a text LM is its own."""
        return self

    @property
    def output_weight(self) -> torch.Tensor:
        """The ``(V, D)`` LM-head matrix (the embedding when tied)."""
        return self.embed_tokens.weight if self.config.tie_embeddings else self.lm_head.weight

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None, cache: KVCache | None = None,
                logits_to_keep: int = 0, router_losses: bool = True, spans: torch.Tensor | None = None,
                labelled_logits: bool = False, visual_pos_masks: torch.Tensor | None = None,
                deepstack_visual_embeds: list[torch.Tensor] | None = None) -> CausalLMOutput:
        """Run the decoder.

        Args:
            input_ids: ``(B, T)`` token ids (or give ``inputs_embeds (B, T, D)``).
            attention_mask: ``(B, S)``, 1 for real tokens, 0 for (left) padding; ``S`` covers the
                cached positions too. Without ``position_ids``, positions count real tokens only
                (``cumsum - 1``), so a left-padded prompt is encoded as it would be alone.
            labels: ``(B, T)`` targets, shifted inside (token ``t`` predicts ``labels[t + 1]``);
                -100 is ignored.
            position_ids: ``(B, T)`` explicit RoPE positions; ``(3, B, T)`` (time, height, width) with
                multimodal RoPE (``config.mrope_section``).
            cache: a :class:`KVCache` to append to (generation); its ``length`` is advanced.
            logits_to_keep: if > 0, only the last that many positions get logits.
            router_losses: compute ``aux_loss`` / ``z_loss`` and ``router_stats`` (always done when
                ``labels`` are given). Decoding turns them off: they are then ``None`` / empty.
            spans: ``(B, T)`` ids of spans attended bidirectionally (a prefix-LM mask over each
                image's tokens, say; see :func:`~moezoo.models.lm.attention.attention_mask_for`).
            labelled_logits: with ``labels``, run the LM head only on the positions that predict a
                label and return those ``(N, V)`` logits. Training uses it: an instruction-tuning
                batch supervises a few answer tokens per sample, and the head and softmax over the
                whole sequence (the prompt, image tokens, padding) are otherwise most of the
                step's cost outside the blocks. The loss is the same.
            visual_pos_masks / deepstack_visual_embeds: DeepStack (Meng et al. 2024, arXiv 2406.04334; Qwen3-VL):
                ``(B, T)`` the visual tokens, and per layer ``k`` an ``(N_visual, D)`` tensor added to the
                hidden states at those tokens (in row-major order) after decoder layer ``k``.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("give exactly one of input_ids or inputs_embeds")
        x = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds  # (B, T, D)
        B, T, _ = x.shape
        start = cache.length if cache is not None else 0
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, B, T, start, x.device)
        cos, sin = self.rotary(position_ids, x.dtype)
        mask, is_causal = attention_mask_for(attention_mask, T, start, x.device, spans, self.config.sliding_window)
        moe_outputs: list[MoEOutput] = []
        deepstack = deepstack_visual_embeds or []
        visual = visual_pos_masks.nonzero(as_tuple=True) if deepstack else None  # found once, not per layer
        for k, layer in enumerate(self.layers):
            x, moe = layer(x, cos, sin, mask, is_causal, cache)
            if moe is not None:
                moe_outputs.append(moe)
            if k < len(deepstack):
                x = x.index_put(visual, deepstack[k].to(x.dtype), accumulate=True)
        if cache is not None:
            cache.length += T
        x = self.norm(x if logits_to_keep <= 0 else x[:, -logits_to_keep:])
        if labelled_logits and labels is not None:
            shifted_BT = shift_labels(labels)
            keep_BT = shifted_BT != IGNORE_INDEX
            logits = self._logits(x[keep_BT])  # (N, V)
            lm_loss = token_loss(logits, shifted_BT[keep_BT], group=self.loss_group)
        else:
            logits = self._logits(x)  # (B, T, V)
            lm_loss = None if labels is None else causal_lm_loss(logits, labels, group=self.loss_group)
        aux_loss = z_loss = None
        wants_routing = router_losses or labels is not None
        if wants_routing:
            token_mask = None if attention_mask is None else attention_mask[:, -T:]
            aux_loss, z_loss = self._router_losses(moe_outputs, token_mask, x)
        loss = lm_loss
        if labels is not None and self.training and self.config.moe is not None:
            loss = loss + self.config.moe.aux_loss_coef * aux_loss + self.config.moe.z_loss_coef * z_loss
        if not wants_routing:
            return CausalLMOutput(logits, loss, lm_loss=lm_loss)
        return CausalLMOutput(logits, loss, aux_loss, z_loss, [m.stats for m in moe_outputs],
                              [m.routing for m in moe_outputs], lm_loss)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        logits = lm_head(x, self.output_weight)
        return logits + self.lm_head.bias if self.config.lm_head_bias else logits

    def _router_losses(self, moe_outputs: list[MoEOutput], token_mask: torch.Tensor | None,
                       x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        zero = x.new_zeros((), dtype=torch.float32)
        if not moe_outputs:
            return zero, zero
        group = self.loss_group
        z_loss = torch.stack([m.z_loss if group is None else router_z_loss(m.routing.logits, group)
                              for m in moe_outputs]).mean()
        if not moe_outputs[0].routing.token_choice:
            return torch.stack([m.aux_loss for m in moe_outputs]).mean(), z_loss
        return switch_loss_over_layers(moe_outputs, token_mask, self.config.moe.num_experts, group), z_loss

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 max_new_tokens: int = 32, do_sample: bool = False, **kwargs: Any) -> torch.Tensor:
        """Decode; see :func:`moezoo.models.lm.generation.generate` for all options."""
        from moezoo.models.lm.generation import generate

        return generate(self, input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
                        do_sample=do_sample, **kwargs)


def shift_labels(labels_BT: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``labels[:, t + 1]`` at position ``t`` (the target it predicts), ``ignore_index`` at the end.

    Example:
        >>> shift_labels(torch.tensor([[5, 6, 7]]))
        tensor([[   6,    7, -100]])
    """
    return F.pad(labels_BT, (0, 1), value=ignore_index)[:, 1:]


def token_loss(logits_NV: torch.Tensor, targets_N: torch.Tensor, ignore_index: int = IGNORE_INDEX,
               group: Any = None) -> torch.Tensor:
    """Mean cross-entropy of ``logits_NV`` against ``targets_N`` (``ignore_index`` skipped).

    With a data-parallel process ``group``, the mean runs over the label tokens of all its
    ranks (the summed cross-entropy divided by the global count, as Megatron-Core's per-token
    loss), so ranks holding different numbers of label tokens weigh each token equally.

    Example:
        >>> token_loss(torch.zeros(2, 4), torch.tensor([3, -100]))  # log(4), one target
        tensor(1.3863)
    """
    logits_NV = logits_NV.float()
    if group is None:
        return F.cross_entropy(logits_NV, targets_N, ignore_index=ignore_index)
    total = F.cross_entropy(logits_NV, targets_N, ignore_index=ignore_index, reduction="sum")
    count = data_parallel_sum((targets_N != ignore_index).sum().to(total.dtype), group)
    return data_parallel_sum(total, group) / count.clamp_min(1)


def causal_lm_loss(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, ignore_index: int = IGNORE_INDEX,
                   group: Any = None) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]`` (as transformers);
    ``group`` as :func:`token_loss`.

    Example:
        >>> causal_lm_loss(torch.zeros(1, 3, 4), torch.tensor([[0, 1, -100]]))  # log(4), one target
        tensor(1.3863)
    """
    shifted = shift_labels(labels_BT, ignore_index)
    return token_loss(logits_BTV.reshape(-1, logits_BTV.shape[-1]), shifted.reshape(-1), ignore_index, group)


def switch_loss_over_layers(moe_outputs: list[MoEOutput], token_mask: torch.Tensor | None,
                            num_experts: int, group: Any = None) -> torch.Tensor:
    """Switch load-balancing loss pooled over layers, as transformers' ``load_balancing_loss_func``.

    transformers concatenates the router outputs of all layers before taking
    ``E * sum_e f_e * P_e``; pooling the same way (rather than averaging per-layer
    losses) keeps ``aux_loss`` and ``router_aux_loss_coef`` interchangeable with theirs.
    Padding tokens (``token_mask == 0``) are excluded. With a data-parallel ``group``, ``f``
    and ``P`` are taken over the tokens of all its ranks (Megatron-Core's global balancing).
    """
    routings = [m.routing for m in moe_outputs]
    probs = torch.cat([r.probs.float() for r in routings])  # (layers * T, E)
    expert_idx = torch.cat([r.expert_idx for r in routings])
    if token_mask is None:
        return load_balancing_loss(probs, expert_idx, group=group)
    # Each layer's tokens follow the previous layers' in the pooled batch.
    starts = [0]
    for r in routings[:-1]:
        starts.append(starts[-1] + r.probs.shape[0])
    token_idx = torch.cat([r.token_idx + start for r, start in zip(routings, starts)])
    mask = token_mask.reshape(-1)
    # MH-MoE routes h sub-tokens per token: each inherits its token's mask.
    weight = torch.cat([mask.repeat_interleave(r.probs.shape[0] // mask.numel()) for r in routings])
    return load_balancing_loss(probs, expert_idx, token_idx, weight, group=group)
