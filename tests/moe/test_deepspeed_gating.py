"""moezoo's ``deepspeed_top2`` MoE layer against DeepSpeed's top-2 MoE, written out here from DeepSpeed's source.

:class:`DeepSpeedMoE` below follows DeepSpeed 0.9.5 (the release MoE-LLaVA pins) line by line, each line
commented with the DeepSpeed file and function it comes from: ``deepspeed/moe/sharded_moe.py`` (``_capacity``,
``top2gating``, ``TopKGate.forward``, ``MOELayer.forward``), ``deepspeed/moe/experts.py`` (``Experts``) and
``deepspeed/moe/layer.py`` (``MoE.__init__``, ``MoE.forward``). One line differs, as moezoo does: 0.9.5 adds
Gumbel noise to the logits before picking the second expert, even at eval; DeepSpeed >= 0.14 with
``top2_2nd_expert_sampling=False`` does not, and neither does this reference.

The experts are transformers' own MLPs, deep-copied per expert as DeepSpeed's ``Experts`` copies the dense MLP
MoE-LLaVA hands it: ``PhiMLP`` (``fc1`` -> ``gelu_new`` -> ``fc2``, with biases: MoE-LLaVA-Phi2) and
``StableLmMLP`` (SwiGLU without biases: MoE-LLaVA-StableLM, and Qwen's alike).

If DeepSpeed is installed (it is not part of moezoo's install), the last test also compares against its own
``MoE`` layer with the noise off (``top2_2nd_expert_sampling=False``, or, before that flag, its Gumbel sampler
replaced by zeros). Checked with DeepSpeed 0.9.5 and 0.19.8, each built from its sdist with ``DS_BUILD_OPS=0`` in
a virtualenv beside moezoo's (0.9.5 needs ``numpy<2``).
"""

import copy
import inspect
import math
import socket

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PhiConfig, StableLmConfig
from transformers.models.phi.modeling_phi import PhiMLP
from transformers.models.stablelm.modeling_stablelm import StableLmMLP

from moezoo.moe import MoEConfig, MoELayer

DIM, HIDDEN, E = 16, 24, 4


def ds_capacity(gates: torch.Tensor, capacity_factor: torch.Tensor, min_capacity: torch.Tensor) -> torch.Tensor:
    num_tokens = gates.shape[0]  # sharded_moe.py, _capacity
    num_experts = gates.shape[1]  # sharded_moe.py, _capacity
    capacity = torch.ceil((num_tokens / num_experts) * capacity_factor).to(torch.int64)  # sharded_moe.py, _capacity
    if capacity < min_capacity:  # sharded_moe.py, _capacity
        capacity = min_capacity.to(torch.int64)  # sharded_moe.py, _capacity
    return capacity


def ds_top2gating(logits: torch.Tensor, capacity_factor: float, min_capacity: int):
    """sharded_moe.py, ``top2gating`` (0.9.5), without the Gumbel noise on the second choice."""
    gates = F.softmax(logits, dim=1)  # top2gating: "everything is in fp32 in this function"
    capacity = ds_capacity(gates, torch.tensor(capacity_factor * 2), torch.tensor(min_capacity))  # top2gating
    indices1_s = torch.argmax(gates, dim=1)  # top2gating
    num_experts = int(gates.shape[1])  # top2gating
    mask1 = F.one_hot(indices1_s, num_classes=num_experts)  # top2gating
    # top2gating: 0.9.5 has `logits_w_noise = logits + gumbel_rsample(...)` here; top2_2nd_expert_sampling=False not
    logits_except1 = logits.masked_fill(mask1.bool(), float("-inf"))  # top2gating
    indices2_s = torch.argmax(logits_except1, dim=1)  # top2gating
    mask2 = F.one_hot(indices2_s, num_classes=num_experts)  # top2gating
    locations1 = torch.cumsum(mask1, dim=0) - 1  # top2gating
    locations2 = torch.cumsum(mask2, dim=0) - 1  # top2gating
    locations2 += torch.sum(mask1, dim=0, keepdim=True)  # top2gating: every first choice before any second
    me = torch.mean(gates, dim=0)  # top2gating
    ce = torch.mean(mask1.float(), dim=0)  # top2gating
    l_aux = torch.mean(me * ce) * num_experts * num_experts  # top2gating
    mask1 *= torch.lt(locations1, capacity)  # top2gating: drop by position
    mask2 *= torch.lt(locations2, capacity)  # top2gating
    locations1_s = torch.sum(locations1 * mask1, dim=1)  # top2gating
    locations2_s = torch.sum(locations2 * mask2, dim=1)  # top2gating
    mask1_float = mask1.float()  # top2gating
    mask2_float = mask2.float()  # top2gating
    gates1_s = torch.einsum("se,se->s", gates, mask1_float)  # top2gating
    gates2_s = torch.einsum("se,se->s", gates, mask2_float)  # top2gating
    denom_s = gates1_s + gates2_s  # top2gating: renormalised after the drop
    denom_s = torch.clamp(denom_s, min=torch.finfo(denom_s.dtype).eps)  # top2gating
    gates1_s /= denom_s  # top2gating
    gates2_s /= denom_s  # top2gating
    gates1 = torch.einsum("s,se->se", gates1_s, mask1_float)  # top2gating
    gates2 = torch.einsum("s,se->se", gates2_s, mask2_float)  # top2gating
    locations1_sc = F.one_hot(locations1_s, num_classes=int(capacity)).float()  # top2gating (_one_hot_to_float)
    locations2_sc = F.one_hot(locations2_s, num_classes=int(capacity)).float()  # top2gating (_one_hot_to_float)
    combine1_sec = torch.einsum("se,sc->sec", gates1, locations1_sc)  # top2gating
    combine2_sec = torch.einsum("se,sc->sec", gates2, locations2_sc)  # top2gating
    combine_weights = combine1_sec + combine2_sec  # top2gating
    dispatch_mask = combine_weights.bool()  # top2gating
    return l_aux, combine_weights, dispatch_mask


class DeepSpeedMoE(nn.Module):
    """layer.py ``MoE`` with ``k=2``, ``ep_size=1``, ``noisy_gate_policy=None``, ``drop_tokens=True``."""

    def __init__(self, expert: nn.Module, capacity_factor: float, eval_capacity_factor: float, min_capacity: int,
                 use_residual: bool = False):
        super().__init__()
        self.wg = nn.Linear(DIM, E, bias=False).float()  # sharded_moe.py, TopKGate.__init__
        self.capacity_factor = capacity_factor  # sharded_moe.py, TopKGate.__init__
        self.eval_capacity_factor = eval_capacity_factor  # sharded_moe.py, TopKGate.__init__
        self.min_capacity = min_capacity  # sharded_moe.py, TopKGate.__init__
        self.deepspeed_experts = nn.ModuleList([copy.deepcopy(expert) for _ in range(E)])  # experts.py, Experts
        self.use_residual = use_residual  # layer.py, MoE.__init__
        if use_residual:
            self.mlp = expert  # layer.py, MoE.__init__
            self.coefficient = nn.Linear(DIM, 2)  # layer.py, MoE.__init__

    def forward(self, hidden_states: torch.Tensor):
        d_model = hidden_states.shape[-1]  # sharded_moe.py, MOELayer.forward
        reshaped_input = hidden_states.reshape(-1, d_model)  # sharded_moe.py, MOELayer.forward
        input_fp32 = reshaped_input.float()  # sharded_moe.py, TopKGate.forward
        logits = self.wg(input_fp32)  # sharded_moe.py, TopKGate.forward
        factor = self.capacity_factor if self.training else self.eval_capacity_factor  # TopKGate.forward
        l_aux, combine_weights, dispatch_mask = ds_top2gating(logits, factor, self.min_capacity)  # TopKGate.forward
        dispatched_input = torch.einsum("sec,sm->ecm", dispatch_mask.type_as(hidden_states),
                                        reshaped_input)  # sharded_moe.py, MOELayer.forward
        dispatched_input = dispatched_input.reshape(1, E, -1, d_model)  # MOELayer.forward (ep_size 1: no all-to-all)
        chunks = dispatched_input.chunk(E, dim=1)  # experts.py, Experts.forward
        expert_outputs = [expert(chunk) for chunk, expert in zip(chunks, self.deepspeed_experts)]  # Experts.forward
        expert_output = torch.cat(expert_outputs, dim=1)  # experts.py, Experts.forward
        expert_output = expert_output.reshape(E, -1, d_model)  # sharded_moe.py, MOELayer.forward
        combined_output = torch.einsum("sec,ecm->sm", combine_weights.type_as(hidden_states),
                                       expert_output)  # sharded_moe.py, MOELayer.forward
        output = combined_output.reshape(hidden_states.shape)  # sharded_moe.py, MOELayer.forward
        if self.use_residual:  # layer.py, MoE.forward
            output_mlp = self.mlp(hidden_states)  # layer.py, MoE.forward
            coef = self.coefficient(hidden_states)  # layer.py, MoE.forward
            coef = F.softmax(coef, dim=-1)  # layer.py, MoE.forward
            output = output * coef[..., 0:1] + output_mlp * coef[..., 1:]  # layer.py, MoE.forward
        return output, l_aux, combine_weights


def make_expert(kind: str) -> nn.Module:
    torch.manual_seed(0)
    if kind == "phi":
        expert = PhiMLP(PhiConfig(hidden_size=DIM, intermediate_size=HIDDEN, hidden_act="gelu_new"))
    else:
        expert = StableLmMLP(StableLmConfig(hidden_size=DIM, intermediate_size=HIDDEN, hidden_act="silu"))
    with torch.no_grad():  # unit-scale weights (and non-zero biases) so that 1e-5 is a meaningful tolerance
        for p in expert.parameters():
            p.normal_(std=0.3)
    return expert


def moezoo_config(kind: str, **gate) -> MoEConfig:
    experts = {"activation": "gelu_tanh", "expert_bias": True} if kind == "phi" else {"activation": "swiglu"}
    return MoEConfig(dim=DIM, expert_dim=HIDDEN, num_experts=E, top_k=2, router="deepspeed_top2", **experts, **gate)


def diverse_experts(ds: nn.Module) -> None:
    """Give each copied expert its own weights (DeepSpeed starts them equal; training makes them differ)."""
    with torch.no_grad():
        for i, expert in enumerate(ds.deepspeed_experts):
            for p in expert.parameters():
                p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(i)) * 0.1)


def copy_into_moezoo(ds: nn.Module, layer: MoELayer, experts: nn.ModuleList, kind: str) -> None:
    """DeepSpeed's per-expert modules into moezoo's fused layout (what the MoE-LLaVA converter does)."""
    with torch.no_grad():
        layer.router.weight.copy_(ds.wg.weight)
        for e, expert in enumerate(experts):
            if kind == "phi":
                layer.experts.up_proj[e].copy_(expert.fc1.weight)
                layer.experts.up_proj_bias[e].copy_(expert.fc1.bias)
                layer.experts.down_proj[e].copy_(expert.fc2.weight)
                layer.experts.down_proj_bias[e].copy_(expert.fc2.bias)
            else:
                layer.experts.gate_up_proj[e].copy_(torch.cat([expert.gate_proj.weight, expert.up_proj.weight]))
                layer.experts.down_proj[e].copy_(expert.down_proj.weight)
        if layer.config.use_residual:
            mlp, dense = layer.residual_mlp, ds.mlp
            if kind == "phi":
                pairs = [(mlp.up_proj, dense.fc1), (mlp.down_proj, dense.fc2)]
            else:
                pairs = [(mlp.gate_proj, dense.gate_proj), (mlp.up_proj, dense.up_proj),
                         (mlp.down_proj, dense.down_proj)]
            for mine, theirs in pairs + [(layer.coefficient, ds.coefficient)]:
                mine.load_state_dict(theirs.state_dict())


def expert_grads(layer: MoELayer, experts: nn.ModuleList, kind: str) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, moezoo gradient, reference gradient) of every expert tensor."""
    out = []
    for e, expert in enumerate(experts):
        if kind == "phi":
            out += [(f"fc1.weight[{e}]", layer.experts.up_proj.grad[e], expert.fc1.weight.grad),
                    (f"fc1.bias[{e}]", layer.experts.up_proj_bias.grad[e], expert.fc1.bias.grad),
                    (f"fc2.weight[{e}]", layer.experts.down_proj.grad[e], expert.fc2.weight.grad),
                    (f"fc2.bias[{e}]", layer.experts.down_proj_bias.grad[e], expert.fc2.bias.grad)]
        else:
            theirs = torch.cat([expert.gate_proj.weight.grad, expert.up_proj.weight.grad])
            out += [(f"gate_up[{e}]", layer.experts.gate_up_proj.grad[e], theirs),
                    (f"down[{e}]", layer.experts.down_proj.grad[e], expert.down_proj.weight.grad)]
    return out


def close(a: torch.Tensor, b: torch.Tensor, name: str, tol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, atol=tol * max(b.abs().max().item(), 1e-6), rtol=tol,
                               msg=lambda m: f"{name}: {m}")


def routed_weights(out) -> torch.Tensor:
    """moezoo's routing as a dense ``(T, E)`` matrix of combine weights (0 where not routed or dropped)."""
    r = out.routing
    return torch.zeros(r.probs.shape, dtype=r.weight.dtype).index_put((r.token_idx, r.expert_idx), r.weight,
                                                                        accumulate=True)


# (train factor, eval factor, min_capacity): 24 tokens, E=4, so each expert gets 48 / 4 = 12 choices on average.
GATES = {"train": (0.5, 0.75, 0), "eval": (2.0, 0.5, 0), "eval_min_capacity": (2.0, 0.25, 5)}


@pytest.mark.parametrize("residual", [False, True], ids=["moe", "residual"])
@pytest.mark.parametrize("mode", list(GATES))
@pytest.mark.parametrize("kind", ["phi", "stablelm"])
def test_layer_matches_deepspeed_reference(kind, mode, residual):
    """Output, ``l_aux`` and every gradient, on batches that overflow the capacity, in training and eval."""
    train_cf, eval_cf, min_cap = GATES[mode]
    torch.manual_seed(1)
    ds = DeepSpeedMoE(make_expert(kind), train_cf, eval_cf, min_cap, use_residual=residual)
    diverse_experts(ds)
    layer = MoELayer(moezoo_config(kind, capacity_factor=train_cf, eval_capacity_factor=eval_cf,
                                   min_capacity=min_cap, use_residual=residual))
    copy_into_moezoo(ds, layer, ds.deepspeed_experts, kind)
    training = mode == "train"
    ds.train(training)
    layer.train(training)
    x = torch.randn(2, 12, DIM)
    grad = torch.randn_like(x)
    x_ds, x_mz = x.clone().requires_grad_(), x.clone().requires_grad_()

    ref, ref_aux, combine = ds(x_ds)
    out = layer(x_mz)
    factor = train_cf if training else eval_cf
    capacity = max(min_cap, math.ceil(24 / E * factor * 2))
    assert layer.capacity(24) == capacity
    assert out.num_dropped.item() == 48 - combine.bool().sum().item() > 0  # the batch really overflowed
    kept_per_token = combine.bool().sum((1, 2))
    assert (kept_per_token == 1).any()  # a token whose other choice was dropped: its kept weight is 1
    close(routed_weights(out), combine.sum(-1), "combine weights")
    close(out.hidden_states, ref, "output")
    close(out.aux_loss, ref_aux, "l_aux")

    ((ref * grad).sum() + 0.1 * ref_aux).backward()
    ((out.hidden_states * grad).sum() + 0.1 * out.aux_loss).backward()
    close(x_mz.grad, x_ds.grad, "grad x")
    close(layer.router.weight.grad, ds.wg.weight.grad, "grad wg")
    assert layer.router.weight.grad.abs().sum() > 0
    for name, mine, theirs in expert_grads(layer, ds.deepspeed_experts, kind):
        close(mine, theirs if theirs is not None else torch.zeros_like(mine), f"grad {name}")
    if residual:
        close(layer.coefficient.weight.grad, ds.coefficient.weight.grad, "grad coefficient")
        for (name, mine), theirs in zip(layer.residual_mlp.named_parameters(), _dense_params(ds.mlp, kind)):
            close(mine.grad, theirs.grad, f"grad residual {name}")


def _dense_params(mlp: nn.Module, kind: str) -> list[torch.Tensor]:
    """The reference dense MLP's parameters in the order of moezoo's ``MLP.named_parameters``."""
    if kind == "phi":
        return [mlp.fc1.weight, mlp.fc1.bias, mlp.fc2.weight, mlp.fc2.bias]
    return [mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight]


@pytest.mark.parametrize("tokens,experts,factor,min_capacity", [
    (24, 4, 1.0, 0), (24, 4, 1.5, 0), (10, 4, 1.1, 0), (20, 4, 1.1, 4), (7, 3, 0.3, 0), (1000, 8, 1.25, 4),
    (5, 4, 0.1, 4), (33, 16, 2.0, 0), (96, 4, 1.1, 0),
])
def test_capacity_is_deepspeeds(tokens, experts, factor, min_capacity):
    """Including factors whose float32 product lands a hair off the exact one (1.1): the same integer."""
    config = MoEConfig(dim=8, expert_dim=8, num_experts=experts, top_k=2, router="deepspeed_top2",
                       capacity_factor=factor, min_capacity=min_capacity)
    expected = ds_capacity(torch.zeros(tokens, experts), torch.tensor(factor * 2), torch.tensor(min_capacity))
    assert config.capacity(tokens, training=True) == expected.item()


def test_gate_is_computed_in_float32_for_bfloat16_tokens():
    """bf16 hidden states: the routing (experts, weights, drops, l_aux) is DeepSpeed's float32 gate's, exactly."""
    torch.manual_seed(3)
    ds = DeepSpeedMoE(make_expert("stablelm"), 0.5, 0.5, 0)
    with torch.no_grad():  # a weight bf16 can hold, so a bf16 moezoo model carries the same gate
        ds.wg.weight.copy_(ds.wg.weight.bfloat16().float())
    layer = MoELayer(moezoo_config("stablelm", capacity_factor=0.5)).eval()
    copy_into_moezoo(ds, layer, ds.deepspeed_experts, "stablelm")
    layer = layer.to(torch.bfloat16)
    ds.deepspeed_experts.bfloat16()  # DeepSpeed's gate weight stays float32, the rest of the model is bf16
    x = torch.randn(40, DIM).bfloat16()
    with torch.no_grad():
        _, ref_aux, combine = ds.eval()(x)
        out = layer(x)
    assert out.routing.weight.dtype == torch.float32 and out.num_dropped > 0
    torch.testing.assert_close(routed_weights(out), combine.sum(-1), atol=0, rtol=0)
    torch.testing.assert_close(out.aux_loss, ref_aux, atol=1e-6, rtol=1e-6)


def test_eval_and_train_capacities_differ():
    layer = MoELayer(moezoo_config("stablelm", capacity_factor=0.5, eval_capacity_factor=2.0, min_capacity=0))
    x = torch.randn(40, DIM)
    assert layer.train()(x).num_dropped > 0  # capacity ceil(40 / 4 * 1.0) = 10 for 80 choices
    assert layer.capacity(40) == 10
    assert layer.eval()(x).num_dropped == 0  # capacity 40: nothing can overflow
    assert layer.capacity(40) == 40


def test_dropless_keeps_both_choices_renormalised():
    """``capacity_factor=None`` (DeepSpeed >= 0.14's ``drop_tokens=False``): both choices, weights summing to 1."""
    layer = MoELayer(moezoo_config("phi"))
    out = layer(torch.randn(30, DIM))
    assert out.num_dropped == 0 and layer.capacity(30) is None
    torch.testing.assert_close(routed_weights(out).sum(-1), torch.ones(30))
    probs = out.routing.probs
    top2 = probs.topk(2, dim=-1)
    torch.testing.assert_close(routed_weights(out).gather(1, top2.indices), top2.values / top2.values.sum(-1, True))


# --- DeepSpeed itself (optional: not part of moezoo's install) -------------------------------------------------


@pytest.fixture(scope="module")
def deepspeed_moe():
    """A builder of DeepSpeed's own ``MoE`` with a deterministic second choice; skips when DeepSpeed is absent.

    From DeepSpeed 0.14, ``top2_2nd_expert_sampling=False`` turns the Gumbel noise off, and ``ep_size=1`` needs no
    process group. Before (0.9.5, the release MoE-LLaVA pins) there is no flag: its ``gumbel_rsample`` is replaced
    by zeros, and, since its ``MOELayer.forward`` always calls the all-to-all, a one-process gloo group is opened.
    """
    layer_module = pytest.importorskip("deepspeed.moe.layer", reason="DeepSpeed is not installed (optional)")
    if "top2_2nd_expert_sampling" in inspect.signature(layer_module.MoE).parameters:
        yield lambda **kwargs: layer_module.MoE(top2_2nd_expert_sampling=False, **kwargs)
        return
    import deepspeed
    from deepspeed.moe import sharded_moe

    patch = pytest.MonkeyPatch()
    patch.setattr(sharded_moe, "gumbel_rsample", lambda shape, device: torch.zeros(shape, device=device))
    opened = not torch.distributed.is_initialized()
    if opened:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": "0", "WORLD_SIZE": "1",
                           "LOCAL_RANK": "0"}.items():
            patch.setenv(key, value)
        deepspeed.init_distributed(dist_backend="gloo")

    def build(**kwargs):
        moe = layer_module.MoE(**kwargs)
        moe.set_deepspeed_parallelism()
        return moe

    yield build
    patch.undo()
    if opened:
        torch.distributed.destroy_process_group()


@pytest.mark.parametrize("residual", [False, True], ids=["moe", "residual"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("kind", ["phi", "stablelm"])
def test_layer_matches_deepspeed_itself(deepspeed_moe, kind, training, residual):
    """DeepSpeed's own ``MoE(k=2)`` (``ep_size=1``), second choice without noise."""
    torch.manual_seed(2)
    train_cf, eval_cf, min_cap = 0.5, 0.75, 2
    ds = deepspeed_moe(hidden_size=DIM, expert=make_expert(kind), num_experts=E, ep_size=1, k=2,
                       capacity_factor=train_cf, eval_capacity_factor=eval_cf, min_capacity=min_cap,
                       use_residual=residual)
    experts = ds.deepspeed_moe.experts.deepspeed_experts
    holder = nn.Module()
    holder.deepspeed_experts = experts
    diverse_experts(holder)
    layer = MoELayer(moezoo_config(kind, capacity_factor=train_cf, eval_capacity_factor=eval_cf,
                                   min_capacity=min_cap, use_residual=residual))
    view = nn.Module()  # DeepSpeed's names, as copy_into_moezoo reads them
    view.wg, view.mlp, view.coefficient = ds.deepspeed_moe.gate.wg, getattr(ds, "mlp", None), getattr(
        ds, "coefficient", None)
    copy_into_moezoo(view, layer, experts, kind)
    ds.train(training)
    layer.train(training)
    x = torch.randn(2, 12, DIM)
    grad = torch.randn_like(x)
    x_ds, x_mz = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref, ref_aux, _ = ds(x_ds)
    out = layer(x_mz)
    assert out.num_dropped > 0
    close(out.hidden_states, ref, "output")
    close(out.aux_loss, ref_aux, "l_aux")
    ((ref * grad).sum() + 0.1 * ref_aux).backward()
    ((out.hidden_states * grad).sum() + 0.1 * out.aux_loss).backward()
    close(x_mz.grad, x_ds.grad, "grad x")
    close(layer.router.weight.grad, ds.deepspeed_moe.gate.wg.weight.grad, "grad wg")
    for name, mine, theirs in expert_grads(layer, experts, kind):
        close(mine, theirs if theirs is not None else torch.zeros_like(mine), f"grad {name}")
    if residual:
        close(layer.coefficient.weight.grad, ds.coefficient.weight.grad, "grad coefficient")
        for (name, mine), theirs in zip(layer.residual_mlp.named_parameters(), _dense_params(ds.mlp, kind)):
            close(mine.grad, theirs.grad, f"grad residual {name}")
