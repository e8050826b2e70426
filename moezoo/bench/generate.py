"""Greedy decoding tokens/s: moezoo's ``generate`` against transformers' ``generate``.

Both decode the same OLMoE-shaped model (identical std-0.02 weights; transformers
with its default ``grouped_mm`` experts) from the same prompts, with stop tokens
disabled so every run produces exactly ``--new-tokens`` tokens per row; the outputs
are checked to be identical before timing. Tokens/s counts new tokens, prefill included.
"""

from __future__ import annotations

import torch

from moezoo.bench.model import add_arguments as add_model_arguments
from moezoo.bench.model import olmoe_pair, summarize
from moezoo.bench.timing import paired_ratio, time_interleaved


def add_arguments(parser) -> None:
    add_model_arguments(parser)
    parser.set_defaults(batch=1, seq=32, repeats=7)
    parser.add_argument("--new-tokens", type=int, default=64)


def run(args) -> dict:
    hf, moe = olmoe_pair(args)
    hf.generation_config.eos_token_id = None
    ids = torch.randint(3, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)

    def ours():
        return moe.generate(ids, max_new_tokens=args.new_tokens, eos_token_id=[])

    def theirs():
        with torch.inference_mode():
            return hf.generate(ids, attention_mask=mask, max_new_tokens=args.new_tokens, do_sample=False,
                               pad_token_id=0)

    same = torch.equal(ours(), theirs())
    times = time_interleaved({"moezoo": ours, "transformers": theirs}, args.repeats, warmup=1)
    print(f"moezoo bench generate: greedy, {args.layers} layers, d={args.dim}, E={args.experts}, k={args.top_k}, "
          f"batch {args.batch}, prompt {args.seq}, {args.new_tokens} new tokens, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    result = summarize(args, times, args.batch * args.new_tokens, extra_keys=("new_tokens",))
    result["identical_ids"] = same
    result["moezoo_vs_transformers"] = paired_ratio(times["transformers"], times["moezoo"])
    print(f"  moezoo / transformers: {result['moezoo_vs_transformers']:.2f}x   identical ids: {same}")
    return result
