"""Run by ``test_expert_parallel.py`` under ``torchrun --nproc-per-node 2`` (gloo): the expert-parallel
MoE layer against the single-process layer, for several routers, the refusal of expert choice, and the
gradients of a whole model under ``parallelize`` (FSDP2, with and without expert parallelism, global loss
normalisation) against one process on the global batch. Rank 0 writes the largest differences found to
``OUT_DIR/ep_layer.json``."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import moezoo
from moezoo.moe import MoEConfig, MoELayer
from moezoo.parallel import apply_expert_parallel, build_mesh, parallelize

# (config, oracle): "halves" runs the single-process layer on each rank's tokens separately (what per-rank
# capacity means); "full" runs it once on the whole batch (dropless: the same thing, and the sigmoid bias
# then sees the global load).
CASES = {
    "softmax_capacity": (MoEConfig(dim=16, expert_dim=8, num_experts=4, top_k=2, capacity_factor=0.75), "halves"),
    "sigmoid_bias": (MoEConfig(dim=16, expert_dim=8, num_experts=4, top_k=2, router="sigmoid",
                               bias_update_rate=0.1), "full"),
    "cosine_shared_mh": (MoEConfig(dim=16, expert_dim=8, num_experts=4, top_k=1, router="cosine", num_heads=2,
                                   num_shared_experts=1, activation="gelu"), "full"),
    # MoE-LLaVA-Phi2's layer: DeepSpeed's top-2 gate with capacity, biased GELU experts, a residual MLP.
    "deepspeed_bias": (MoEConfig(dim=16, expert_dim=8, num_experts=4, top_k=2, router="deepspeed_top2",
                                 capacity_factor=0.75, min_capacity=0, activation="gelu_tanh", expert_bias=True,
                                 use_residual=True), "halves"),
}
T = 12  # tokens per rank


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().float() - b.detach().float()).abs().max().item()


def run_case(config: MoEConfig, oracle_kind: str, rank: int, world: int) -> dict[str, float]:
    torch.manual_seed(0)
    layer = MoELayer(config).train()
    oracle = copy.deepcopy(layer)
    x = torch.randn(world * T, config.dim, generator=torch.Generator().manual_seed(1))
    g = torch.randn(world * T, config.dim, generator=torch.Generator().manual_seed(2))
    halves = list(zip(x.split(T), g.split(T)))
    # The oracle: one process, all experts; the loss sums over every rank's tokens.
    x_ref = x.clone().requires_grad_()
    if oracle_kind == "halves":
        outs = [oracle(xh) for xh in x_ref.split(T)]
        y_ref = torch.cat([o.hidden_states for o in outs])
        counts_ref = outs[rank].tokens_per_expert
        dropped_ref = outs[rank].num_dropped
    else:
        out = oracle(x_ref)
        y_ref, counts_ref, dropped_ref = out.hidden_states, None, None
    (y_ref * g).sum().backward()
    # Expert parallel: this rank's tokens only.
    apply_expert_parallel(layer, dist.group.WORLD)
    x_mine = halves[rank][0].clone().requires_grad_()
    out = layer(x_mine)
    (out.hidden_states * halves[rank][1]).sum().backward()
    diffs = {"out": max_diff(out.hidden_states, y_ref.split(T)[rank]),
             "grad_x": max_diff(x_mine.grad, x_ref.grad.split(T)[rank])}
    if counts_ref is not None:
        diffs["counts"] = max_diff(out.tokens_per_expert, counts_ref)
        diffs["dropped"] = max_diff(out.num_dropped, dropped_ref)
        diffs["num_dropped_total"] = float(dropped_ref)  # the case must really drop something
    per = config.num_experts // world
    for name, p in layer.named_parameters():
        ref = dict(oracle.named_parameters())[name].grad
        if hasattr(p, "to_local"):  # an expert shard: its gradient already sums every rank's tokens
            diffs[f"grad:{name}"] = max_diff(p.grad.to_local(), ref[rank * per:(rank + 1) * per])
        else:  # replicated: each rank's gradient is its tokens' part
            grad = p.grad.clone()
            dist.all_reduce(grad)
            diffs[f"grad:{name}"] = max_diff(grad, ref)
    if config.router == "sigmoid":
        diffs["bias"] = max_diff(layer.router.bias, oracle.router.bias)
        diffs["bias_moved"] = oracle.router.bias.abs().max().item()
    return diffs


def model_grads(ep: int, rank: int, world: int) -> dict[str, float]:
    """Relative gradient differences of every parameter: ``parallelize(dp=world, ep=ep)`` on this rank's
    sequences against one process on all of them (padding differs per rank, so the global normalisation
    of the LM loss and of the balancing statistics matters)."""
    torch.manual_seed(0)
    model = moezoo.create_model("moe_lm_tiny", moe={"aux_loss_coef": 0.1, "z_loss_coef": 0.01}).train()
    oracle = copy.deepcopy(model)
    ids = torch.randint(3, 500, (2 * world, 10), generator=torch.Generator().manual_seed(3))
    mask = (torch.arange(10) < torch.tensor([10, 3, 7, 5])[:2 * world, None]).long()
    labels = ids.masked_fill(mask == 0, -100)
    oracle(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    parallelize(model, mesh=build_mesh(world, ep))
    mine = slice(2 * rank, 2 * rank + 2)
    model(input_ids=ids[mine], attention_mask=mask[mine], labels=labels[mine]).loss.backward()
    ref = dict(oracle.named_parameters())
    return {name: ((p.grad.full_tensor() - ref[name].grad).abs().max() / ref[name].grad.abs().max()).item()
            for name, p in model.named_parameters()}


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    results = {name: run_case(cfg, kind, rank, world) for name, (cfg, kind) in CASES.items()}
    results.update({f"model_ep{ep}": model_grads(ep, rank, world) for ep in (1, world)})
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    try:
        apply_expert_parallel(MoELayer(MoEConfig(dim=8, expert_dim=8, num_experts=4, router="expert_choice")),
                              dist.group.WORLD)
        error = None
    except ValueError as e:
        error = str(e)
    if rank == 0:
        Path(out_dir, "ep_layer.json").write_text(json.dumps({"ranks": gathered, "expert_choice_error": error}))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
