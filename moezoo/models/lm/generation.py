"""Autoregressive decoding for :class:`~moezoo.models.lm.MoEForCausalLM`.

Greedy decoding and temperature / top-k / nucleus (top-p, Holtzman et al. 2020,
arXiv 1904.09751) sampling, stop tokens, and batched left-padded prompts. The
output convention is transformers' ``generate``: prompt followed by new tokens,
finished rows filled with ``pad_token_id``, and early exit when every row is done.

Speed comes from a KV cache preallocated for the whole run (no ``torch.cat`` per
step), logits only for the last position, RoPE tables looked up rather than
recomputed, every weight of a step read on all CPU threads
(:func:`~moezoo.moe.threads.decoding_linear`), and no per-step work in Python
beyond one stop check.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from moezoo.models.lm.attention import KVCache, positions_from_mask
from moezoo.models.lm.config import id_list

if TYPE_CHECKING:
    from moezoo.models.lm.model import MoEForCausalLM


def sample_next(logits_BV: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_k: int = 0,
                top_p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pick the next token ``(B,)`` from ``logits (B, V)``.

    Example:
        >>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), do_sample=False)
        tensor([1])
        >>> sample_next(torch.tensor([[0.0, 2.0, 1.0]]), do_sample=True, top_k=1)
        tensor([1])
    """
    if not do_sample:
        return logits_BV.argmax(-1)
    logits = logits_BV.float() / max(temperature, 1e-5)
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        sorted_probs = sorted_logits.softmax(-1)
        # Drop a token once the tokens ranked above it already hold top_p of the mass;
        # the most likely token is always kept.
        drop_sorted = (sorted_probs.cumsum(-1) - sorted_probs) >= top_p
        drop_sorted[:, 0] = False
        logits = logits.masked_fill(drop_sorted.scatter(-1, order, drop_sorted), float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(-1)


@torch.inference_mode()
def generate(model: MoEForCausalLM, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
             max_new_tokens: int = 32, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
             top_p: float = 1.0, eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
             generator: torch.Generator | None = None, inputs_embeds: torch.Tensor | None = None,
             spans: torch.Tensor | None = None, position_ids: torch.Tensor | None = None,
             **prefill: torch.Tensor | list[torch.Tensor] | None) -> torch.Tensor:
    """Generate up to ``max_new_tokens`` tokens after each prompt.

    Args:
        model: the language model.
        input_ids: ``(B, T)`` prompts, left-padded when their lengths differ.
        attention_mask: ``(B, T)``, 0 on the left padding; ``None`` means no padding.
        max_new_tokens: most tokens to add.
        do_sample: sample (True) or take the argmax (False).
        temperature / top_k / top_p: sampling filters, applied in that order (0 / 1.0 disable).
        eos_token_id: stop token(s); default ``model.config.eos_token_id``; ``[]`` disables stopping.
        pad_token_id: fills finished rows; default the config's pad id, else the first stop token.
        generator: random generator for reproducible sampling.
        inputs_embeds: ``(B, T, D)`` embeddings of the prompt to prefill with instead of
            ``input_ids``' (a multimodal model's, with its features in place); the output
            still starts with ``input_ids``.
        spans: ``(B, T)`` bidirectional span ids of the prompt (see ``MoEForCausalLM.forward``).
        position_ids: the prompt's RoPE positions, ``(B, T)`` or ``(3, B, T)`` with multimodal RoPE
            (default: counted over the real tokens); each new token takes the last position + 1 on
            every axis, as transformers' ``generate`` advances them.
        **prefill: more inputs of the prompt's forward only (``visual_pos_masks`` and
            ``deepstack_visual_embeds``: see ``MoEForCausalLM.forward``).

    Returns:
        ``(B, T + n)`` ids, ``n <= max_new_tokens`` (fewer when every row stopped early).

    Example:
        >>> from moezoo.models.lm import LMConfig, MoEForCausalLM
        >>> model = MoEForCausalLM(LMConfig(vocab_size=32, dim=16, num_layers=1, num_heads=2, ffn_dim=32)).eval()
        >>> generate(model, torch.tensor([[1, 2, 3]]), max_new_tokens=4).shape
        torch.Size([1, 7])
    """
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 0")
    config = model.config
    stops = id_list(config.eos_token_id if eos_token_id is None else eos_token_id)
    if pad_token_id is None:
        pad_token_id = config.pad_token_id if config.pad_token_id is not None else (stops[0] if stops else 0)
    B, T = input_ids.shape
    device = input_ids.device
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # no padding: the cheaper unmasked path is exact
    positions = positions_from_mask(attention_mask, B, T, device=device) if position_ids is None else position_ids
    full_mask = None
    if attention_mask is not None:
        full_mask = torch.ones(B, T + max_new_tokens, dtype=torch.long, device=device)
        full_mask[:, :T] = attention_mask
    dtype = model.embed_tokens.weight.dtype
    cache = KVCache.for_model(config, B, T + max_new_tokens, dtype, device)
    out = torch.full((B, T + max_new_tokens), pad_token_id, dtype=input_ids.dtype, device=device)
    out[:, :T] = input_ids
    stop_ids = torch.tensor(stops, dtype=input_ids.dtype, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    next_pos = positions[..., -1:] + 1  # (B, 1), or (3, B, 1)

    prompt = dict(input_ids=input_ids) if inputs_embeds is None else dict(inputs_embeds=inputs_embeds)
    logits = model(**prompt, attention_mask=full_mask[:, :T] if full_mask is not None else None, spans=spans,
                   position_ids=positions, cache=cache, logits_to_keep=1, router_losses=False, **prefill).logits[:, -1]
    n = 0
    for n in range(1, max_new_tokens + 1):
        token = sample_next(logits, do_sample, temperature, top_k, top_p, generator)
        token = token.masked_fill(finished, pad_token_id)
        out[:, T + n - 1] = token
        if stop_ids.numel():
            finished |= torch.isin(token, stop_ids)
            if bool(finished.all()):
                break
        if n == max_new_tokens:
            break
        mask = full_mask[:, :T + n] if full_mask is not None else None
        logits = model(token[:, None], attention_mask=mask, position_ids=next_pos, cache=cache,
                       logits_to_keep=1, router_losses=False).logits[:, -1]
        next_pos = next_pos + 1
    return out[:, :T + n]
