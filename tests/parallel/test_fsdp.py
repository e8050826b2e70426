"""FSDP2 and EP + FSDP2 training through Lightning's ``ModelParallelStrategy`` on 2 gloo processes, against
one process on the same global batch; their checkpoints loaded on one process; compile and activation
checkpointing against eager; the GPU ``FSDPStrategy`` configuration.

Each run is ``train_worker.py`` in a subprocess: Lightning's strategies relaunch ``sys.argv``.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import moezoo
from moezoo.parallel import apply_activation_checkpointing, parallelize

WORKER = Path(__file__).with_name("train_worker.py")
sys.path.insert(0, str(WORKER.parent))
from train_worker import probe  # noqa: E402


def train(out: Path, devices: int, ep: int, compile: bool = False, steps: int = 4) -> list[dict]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), str(out), str(devices), str(ep), str(int(compile)), str(steps)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp")
    return {(d, ep): (root / f"d{d}ep{ep}", train(root / f"d{d}ep{ep}", d, ep)) for d, ep in [(1, 1), (2, 1), (2, 2)]}


@pytest.mark.multiprocess
@pytest.mark.parametrize("ep", [1, 2])
def test_two_processes_train_as_one(runs, ep):
    """FSDP2 (and EP + FSDP2) losses equal the one-process losses, step by step (fp32, 1e-5)."""
    (single,) = runs[1, 1][1]
    ranks = runs[2, ep][1]
    assert not single["parallelized"] and all(r["parallelized"] for r in ranks)
    assert len(single["losses"]) == 4 and len(set(single["losses"])) == 4  # the weights move
    for rank in ranks:
        assert rank["losses"] == pytest.approx(single["losses"], abs=1e-5, rel=0)


@pytest.mark.multiprocess
@pytest.mark.parametrize("ep", [1, 2])
def test_sharded_checkpoints_load_on_one_process(runs, ep):
    """The gathered Lightning checkpoint and the ``save_pretrained`` dir give the sharded model's logits."""
    from moezoo.train.module import MoEZooModule

    out = runs[2, ep][0]
    want = torch.load(out / "logits.pt")
    module = MoEZooModule.load_from_checkpoint(out / "last.ckpt", weights_only=True)
    module.configure_model()
    assert not module.parallelized  # one process: a plain model
    loaded = moezoo.load(out / "model")
    for model in (module.model.eval(), loaded):
        with torch.no_grad():
            logits = model(input_ids=probe()).logits
        torch.testing.assert_close(logits, want, atol=1e-5, rtol=0)
    fresh = moezoo.create_model("moe_lm_tiny")  # a trained model, not the initial one
    assert not torch.equal(fresh.layers[0].mlp.experts.down_proj, loaded.layers[0].mlp.experts.down_proj)


@pytest.mark.slow
def test_compile_gives_the_eager_losses(tmp_path):
    """``compile=True`` trains with the eager losses (inductor compiles slowly on CPU: about 2 minutes)."""
    eager, = train(tmp_path / "eager", 1, 1, steps=2)
    compiled, = train(tmp_path / "compiled", 1, 1, compile=True, steps=2)
    assert compiled["parallelized"]
    assert compiled["losses"] == pytest.approx(eager["losses"], abs=1e-5, rel=0)


def _loss_and_grads(model, ids):
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_activation_checkpointing_gives_the_same_loss_and_gradients():
    torch.manual_seed(0)
    model = moezoo.create_model("moe_lm_tiny", num_layers=1).train()
    ids = torch.randint(3, 500, (2, 8), generator=torch.Generator().manual_seed(0))
    ref = _loss_and_grads(model, ids)
    keys = list(model.state_dict())
    parallelize(model, activation_checkpointing=True)  # one process: only checkpointing applies
    assert list(model.state_dict()) == keys  # no wrapper module: checkpoints keep their names
    loss, grads = _loss_and_grads(model, ids)
    torch.testing.assert_close(loss, ref[0])
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref[1][name], atol=1e-6, rtol=1e-5)


def test_activation_checkpointing_refuses_a_moving_sigmoid_bias():
    model = moezoo.create_model("moe_lm_tiny", num_layers=1, moe={"router": "sigmoid"})
    with pytest.raises(ValueError, match="bias_update_rate"):
        apply_activation_checkpointing(copy.deepcopy(model))


GPU_RECIPE = Path(__file__).resolve().parents[2] / "configs" / "gpu" / "3_moe_upcycle_llava_fsdp.yaml"


def gpu_fsdp_strategy():
    """The GPU recipe's strategy, built from its shipped YAML as ``moezoo fit`` builds ``trainer.strategy``
    (jsonargparse against the Trainer's ``Union[str, Strategy]``): FSDP with one unit per transformer
    block and activation checkpointing."""
    import yaml
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import Strategy

    section = yaml.safe_load(GPU_RECIPE.read_text())["trainer"]["strategy"]
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=str | Strategy)
    config = parser.parse_object({"strategy": section})
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    return instantiate(config).strategy


def test_gpu_fsdp_strategy_builds_on_cpu():
    """The recipe's YAML becomes a working FSDP policy: its units are exactly the LLM's decoder blocks."""
    from lightning.pytorch.strategies import FSDPStrategy
    from torch.distributed.fsdp import ShardingStrategy

    strategy = gpu_fsdp_strategy()
    assert isinstance(strategy, FSDPStrategy)
    assert strategy.sharding_strategy is ShardingStrategy.FULL_SHARD  # Lightning's enum, from the YAML's string
    policy = strategy.kwargs["auto_wrap_policy"]  # the class paths, resolved and turned into a wrap policy
    model = moezoo.create_model("mm_tiny_cnn")
    wrapped = [name for name, m in model.named_modules() if policy(m, False)]
    blocks = {id(b) for b in model.language_model.layers}
    assert wrapped == [name for name, m in model.parallel_units() if id(m) in blocks] == ["llm.layers.0", "llm.layers.1"]


@pytest.mark.gpu
def test_fsdp_strategy_trains_on_gpus(tmp_path):
    import lightning.pytorch as pl

    from moezoo.train.module import MoEZooModule
    from train_worker import samples

    torch.manual_seed(0)
    module = MoEZooModule(arch="moe_lm_tiny", lr=1e-3)
    trainer = pl.Trainer(accelerator="cuda", devices=torch.cuda.device_count(), strategy=gpu_fsdp_strategy(),
                         max_steps=3, logger=False, enable_checkpointing=False, default_root_dir=tmp_path,
                         precision="bf16-mixed")
    trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(samples(), batch_size=2))
    assert torch.isfinite(torch.tensor(trainer.callback_metrics["train/loss"].item()))
