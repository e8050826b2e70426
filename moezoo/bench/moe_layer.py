"""MoE layer forward+backward against a FLOP-equal dense SwiGLU and the mask-loop reference.

The dense contender is a SwiGLU FFN with hidden size ``top_k * expert_dim``: it does
the same active FLOPs with one big GEMM per projection, so ``moezoo / dense`` is
the share of the practical ceiling a sparse layer reaches. Weights use std 0.02,
a realistic scale (unscaled weights push SiLU into denormals and slow dense down).

Memory is the peak allocated during one forward+backward (gradients start as
``None``, as after ``zero_grad()``), reported raw and as *activation memory*: the
peak minus the parameter gradients it leaves behind. At equal active FLOPs the MoE
has ``num_experts / top_k`` times the dense FFN's parameters, so its gradients are
that much larger whatever the implementation; activation memory is what the
dispatch controls, and the ratio the target applies to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from moezoo.bench.timing import median, paired_ratio, peak_memory, time_interleaved
from moezoo.moe import MLP, MoEConfig, MoELayer
from moezoo.moe.dispatch import GradBuffers


@dataclass(frozen=True)
class Shape:
    name: str
    tokens: int
    dim: int
    expert_dim: int
    num_experts: int
    top_k: int


SHAPES = {
    "mixtral": Shape("mixtral", 2048, 512, 1024, 8, 2),
    "olmoe": Shape("olmoe", 2048, 512, 256, 64, 8),
    "decode": Shape("decode", 64, 512, 256, 64, 8),
}


def parse_shape(spec: str) -> Shape:
    """A named shape, or ``TOKENS:DIM:EXPERT_DIM:NUM_EXPERTS:TOP_K``.

    Example:
        >>> parse_shape("64:32:16:8:2").num_experts
        8
    """
    if spec in SHAPES:
        return SHAPES[spec]
    try:
        tokens, dim, expert_dim, num_experts, top_k = (int(v) for v in spec.split(":"))
    except ValueError:
        raise ValueError(f"unknown shape {spec!r}; use one of {list(SHAPES)} "
                         "or TOKENS:DIM:EXPERT_DIM:NUM_EXPERTS:TOP_K") from None
    return Shape(spec, tokens, dim, expert_dim, num_experts, top_k)


def add_arguments(parser) -> None:
    parser.add_argument("--shapes", default=",".join(SHAPES),
                        help=f"comma-separated names from {list(SHAPES)} or TOKENS:DIM:EXPERT_DIM:NUM_EXPERTS:TOP_K")
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats (median is reported)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--router", default="softmax")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")


def _zero_grad(module, x) -> None:
    for p in module.parameters():
        p.grad = None
    x.grad = None


def _step(module, x, grad, is_moe: bool):
    def run():
        if is_moe:
            out = module(x)
            loss = (out.hidden_states * grad).sum() + 0.01 * out.aux_loss
        else:
            loss = (module(x) * grad).sum()
        loss.backward()
    return run


def _peak_memory(module, step, x, device: str) -> int:
    # The profiler sees the allocations of the calling thread only, so memory is
    # measured with one thread (then the expert loop runs on the caller too).
    threads = torch.get_num_threads()
    _zero_grad(module, x)  # freed outside the measured window
    torch.set_num_threads(1)
    try:
        return peak_memory(step, device)
    finally:
        torch.set_num_threads(threads)


def _grad_bytes(module) -> int:
    return sum(p.grad.numel() * p.grad.element_size() for p in module.parameters())


def bench_shape(shape: Shape, repeats: int, device: str, dtype: torch.dtype, router: str,
                memory: bool = True) -> dict:
    """Time one shape; returns tokens/s, ratios and (optionally) peak memory."""
    torch.manual_seed(0)
    config = MoEConfig(dim=shape.dim, expert_dim=shape.expert_dim, num_experts=shape.num_experts,
                       top_k=shape.top_k, router=router)
    moe = MoELayer(config).to(device, dtype)
    loop = MoELayer(config.replace(dispatch="loop")).to(device, dtype)
    loop.load_state_dict(moe.state_dict())
    dense = MLP(shape.dim, shape.top_k * shape.expert_dim).to(device, dtype)
    x = torch.randn(shape.tokens, shape.dim, device=device, dtype=dtype, requires_grad=True)
    grad = torch.randn_like(x)
    modules = {"moezoo": moe, "loop": loop, "dense": dense}
    with torch.no_grad():  # the fast dispatch must compute what the reference computes
        max_abs_diff = (moe(x).hidden_states - loop(x).hidden_states).abs().max().item()
    steps = {name: _step(m, x, grad, name != "dense") for name, m in modules.items()}

    def fresh(name):
        def call():
            _zero_grad(modules[name], x)
            steps[name]()
        return call

    # The reference is ~10x slower; fewer repeats keep the run short without changing its median much.
    times = time_interleaved({name: fresh(name) for name in steps}, repeats, warmup=1, device=device,
                             repeats_of={"loop": max(2, repeats // 3)})
    result = {
        "shape": vars(shape),
        "tokens_per_s": {k: shape.tokens / median(v) for k, v in times.items()},
        # Ratios pair the contenders round by round (they ran back to back), which
        # cancels most of a shared machine's drift; tokens/s are plain medians.
        "moezoo_vs_dense": paired_ratio(times["dense"], times["moezoo"]),
        "moezoo_vs_loop": paired_ratio(times["loop"], times["moezoo"]),
        "max_abs_diff_vs_loop": max_abs_diff,
    }
    if memory:
        moe.experts.grad_buffers = GradBuffers()  # count the gradients' memory inside the window
        peak = {name: _peak_memory(modules[name], steps[name], x, device) for name in ("moezoo", "dense")}
        activation = {name: peak[name] - _grad_bytes(modules[name]) - x.numel() * x.element_size()
                      for name in peak}
        result["peak_mib"] = {k: v / 2**20 for k, v in peak.items()}
        result["activation_mib"] = {k: v / 2**20 for k, v in activation.items()}
        result["memory_vs_dense"] = activation["moezoo"] / activation["dense"]
        result["raw_memory_vs_dense"] = peak["moezoo"] / peak["dense"]
    return result


def run(args) -> dict:
    dtype = getattr(torch, args.dtype)
    results = {"device": args.device, "dtype": args.dtype, "threads": torch.get_num_threads(),
               "router": args.router, "shapes": {}}
    print(f"moezoo bench moe-layer: forward+backward, {args.dtype} on {args.device} "
          f"({torch.get_num_threads()} threads), router={args.router}, median of {args.repeats} interleaved rounds")
    header = f"{'shape':<8} {'tokens':>6} {'moezoo tok/s':>13} {'dense tok/s':>12} {'loop tok/s':>11} " \
             f"{'moezoo/dense':>13} {'moezoo/loop':>12} {'act mem/dense':>14}"
    print(header)
    for shape in [parse_shape(spec) for spec in args.shapes.split(",")]:
        r = bench_shape(shape, args.repeats, args.device, dtype, args.router, not args.no_memory)
        results["shapes"][shape.name] = r
        tps = r["tokens_per_s"]
        mem = f"{r['memory_vs_dense']:.2f}x" if "memory_vs_dense" in r else "-"
        print(f"{shape.name:<8} {shape.tokens:>6} {tps['moezoo']:>13,.0f} {tps['dense']:>12,.0f} "
              f"{tps['loop']:>11,.0f} {r['moezoo_vs_dense']:>12.2f}x {r['moezoo_vs_loop']:>11.2f}x {mem:>14}")
    print("act mem = peak memory of forward+backward minus parameter gradients (see moezoo/bench/moe_layer.py)")
    return results
