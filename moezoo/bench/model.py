"""Whole-model forward+backward: moezoo's MoE LM against transformers' OLMoE and a dense Llama.

Three contenders run the same training step (cross-entropy on a ``batch x seq``
batch, plus the router aux loss for the MoEs), timed interleaved and summarised by
their median:

* ``moezoo``: :class:`~moezoo.models.lm.MoEForCausalLM` holding the OLMoE weights;
* ``transformers``: ``OlmoeForCausalLM`` with the *same* weights and
  ``set_experts_implementation("grouped_mm")`` (its fastest kernel on CPU);
* ``dense``: transformers' ``LlamaForCausalLM`` with ``d_ff = top_k * expert_dim``, i.e.
  the same active FLOPs per token, which is the practical ceiling for a sparse model.

Weights are drawn with std 0.02 (a realistic scale; unit-scale weights push SiLU into
denormals, which slows the dense baseline about 2x).
"""

from __future__ import annotations

import torch

from moezoo.bench.timing import median, paired_ratio, time_interleaved


def add_arguments(parser) -> None:
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--experts", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--expert-dim", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats (median is reported)")


def olmoe_pair(args, seed: int = 0):
    """``(transformers OlmoeForCausalLM, moezoo MoEForCausalLM)`` with identical std-0.02 weights."""
    from transformers import OlmoeConfig, OlmoeForCausalLM

    from moezoo.checkpoint.reader import build_model
    from moezoo.convert.hf_config import lm_config_from_hf
    from moezoo.convert.hf_weights import hf_to_moezoo

    cfg = OlmoeConfig(vocab_size=args.vocab, hidden_size=args.dim, intermediate_size=args.expert_dim,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      num_experts=args.experts, num_experts_per_tok=args.top_k, max_position_embeddings=4096,
                      pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    hf = OlmoeForCausalLM(cfg)
    realistic_weights_(hf)
    hf.set_experts_implementation("grouped_mm")
    config = lm_config_from_hf(cfg.to_dict())
    model = build_model(config, hf_to_moezoo({k: v.clone() for k, v in hf.state_dict().items()}, config), "bench")
    return hf, model


def dense_llama(args, seed: int = 0):
    """transformers' Llama with the OLMoE shape's active FLOPs (``d_ff = top_k * expert_dim``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.dim, intermediate_size=args.top_k * args.expert_dim,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads,
                      max_position_embeddings=4096)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg)
    realistic_weights_(model)
    return model


@torch.no_grad()
def realistic_weights_(model) -> None:
    """Draw every weight but the norms from N(0, 0.02), a trained model's scale (see the module docstring)."""
    for name, p in model.named_parameters():
        if "norm" not in name:
            p.normal_(0.0, 0.02)


SHAPE_KEYS = ("layers", "dim", "heads", "experts", "top_k", "expert_dim", "vocab", "batch", "seq")


def summarize(args, times: dict[str, list[float]], tokens: int, extra_keys: tuple[str, ...] = ()) -> dict:
    """The common result dict (shape, threads, median seconds, tokens/s) and one printed line per contender."""
    seconds = {k: median(v) for k, v in times.items()}
    result = {
        "shape": {k: getattr(args, k) for k in SHAPE_KEYS + extra_keys},
        "threads": torch.get_num_threads(),
        "seconds": seconds,
        "tokens_per_s": {k: tokens / v for k, v in seconds.items()},
    }
    for name, tps in result["tokens_per_s"].items():
        print(f"  {name:<13} {tps:>10,.1f} tok/s  ({seconds[name]:.3f} s)")
    return result


def run(args) -> dict:
    hf, moe = olmoe_pair(args)
    dense = dense_llama(args)
    for m in (hf, moe, dense):
        m.train()
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))

    losses: dict[str, float] = {}

    def step(name, model, **kwargs):
        def call():
            model.zero_grad(set_to_none=True)
            loss = model(input_ids=ids, labels=ids, **kwargs).loss
            loss.backward()
            losses[name] = loss.item()
        return call

    fns = {"moezoo": step("moezoo", moe), "transformers": step("transformers", hf, output_router_logits=True),
           "dense": step("dense", dense)}
    times = time_interleaved(fns, args.repeats, warmup=1)
    print(f"moezoo bench model: forward+backward, {args.layers} layers, d={args.dim}, E={args.experts}, "
          f"k={args.top_k}, d_ff={args.expert_dim}, batch {args.batch}x{args.seq}, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    result = summarize(args, times, args.batch * args.seq)
    result["moezoo_vs_transformers"] = paired_ratio(times["transformers"], times["moezoo"])
    result["moezoo_vs_dense"] = paired_ratio(times["dense"], times["moezoo"])
    # The same weights in both MoEs: the same training loss (LM + weighted aux loss), or the
    # comparison would not be like with like. (No optimizer step runs, so it stays fixed.)
    result["loss"] = dict(losses)
    print(f"  moezoo / transformers (grouped_mm): {result['moezoo_vs_transformers']:.2f}x   "
          f"moezoo / dense Llama (same active FLOPs): {result['moezoo_vs_dense']:.2f}x")
    return result
