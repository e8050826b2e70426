"""One module per family: a toy architecture defined entirely in this file joins moezoo through its
:class:`~moezoo.models.spec.ArchitectureSpec` and a ``register_model`` config function, and then gets, in
this process, everything a built-in family gets: ``create_model``, save -> ``moezoo.load``, a training stage
run by the LightningModule, ``moezoo eval``, and ``save_pretrained(format="hf")`` refused with its reason.

The toy is a text MoE LM (held as ``lm``) behind a residual ``adapter`` that the family calls a connector.
Neither name is one moezoo knows ("llm", "connectors"), so any table keyed by class or attribute name,
or any ``hasattr`` probe left in moezoo, fails here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

import moezoo
from moezoo.cli import main
from moezoo.models.base import ZooModel
from moezoo.models.lm import LMConfig, MoEForCausalLM
from moezoo.models.spec import ArchitectureSpec, register_architecture, spec_for, unregister_architecture
from moezoo.registry.core import model_config, unregister_model
from moezoo.train.datamodule import ShardDataModule
from moezoo.train.module import MoEZooModule
from moezoo.train.stages import set_stage
from moezoo.utils.config import Config

ARCH = "toy_adapter_lm"
REFUSAL = "the toy adapter has no transformers counterpart"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# -- the family: config, model, spec, named config ------------------------------------------------------
@dataclass
class ToyAdapterConfig(Config):
    """A text MoE LM and the width of the adapter in front of it."""

    lm: LMConfig = field(default_factory=lambda: model_config("moe_lm_tiny"))
    adapter_dim: int = 16

    def __post_init__(self) -> None:
        if isinstance(self.lm, dict):
            self.lm = LMConfig(**self.lm)


class ToyAdapterLM(ZooModel):
    """``lm(embeddings + adapter(embeddings))``: the adapter is the family's connector."""

    config_class = ToyAdapterConfig

    def __init__(self, config: ToyAdapterConfig):
        super().__init__()
        self.config = config
        self.lm = MoEForCausalLM(config.lm)
        dim = config.lm.dim
        self.adapter = nn.Sequential(nn.Linear(dim, config.adapter_dim), nn.GELU(), nn.Linear(config.adapter_dim, dim))

    @property
    def language_model(self) -> MoEForCausalLM:
        return self.lm

    def parts(self) -> dict[str, str]:
        return {"lm": "llm", "adapter": "connector"}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, **kwargs: Any) -> Any:
        x = self.lm.embed_tokens(input_ids)
        return self.lm(inputs_embeds=x + self.adapter(x), attention_mask=attention_mask, labels=labels, **kwargs)


def toy_adapter_lm() -> ToyAdapterConfig:
    """The toy family's one named architecture (its name is the function's, as timm's)."""
    return ToyAdapterConfig()


@pytest.fixture(scope="module")
def family():
    spec = register_architecture(ArchitectureSpec(name="ToyAdapterLM", config_class=ToyAdapterConfig,
                                                  model_class=ToyAdapterLM, language_config=lambda c: c.lm))
    spec.refuse_export(REFUSAL)
    moezoo.register_model(toy_adapter_lm)
    yield spec
    unregister_model(ARCH)
    unregister_architecture(spec.name)


@pytest.fixture(scope="module")
def saved(family, tmp_path_factory):
    model = moezoo.create_model(ARCH).eval()
    return model, model.save_pretrained(tmp_path_factory.mktemp("toy") / "model")


# -- what the family gets --------------------------------------------------------------------------------
def test_create_model_builds_the_family_with_its_tokenizer_and_protocol(family):
    model = moezoo.create_model(ARCH)
    assert type(model) is ToyAdapterLM and model.spec is family and spec_for(model_config(ARCH)) is family
    assert model.tokenizer is not None and model.tokenizer.vocab_size == model.config.lm.vocab_size
    sites = model.moe_sites()
    assert list(sites) == [f"lm.layers.{i}.mlp" for i in model.config.lm.sparse_layers()]
    units = [name for name, _ in model.parallel_units()]
    assert units == [f"lm.layers.{i}" for i in range(model.config.lm.num_layers)] + ["adapter"]



def test_save_then_load_gives_the_same_model(saved, deterministic):
    model, path = saved
    loaded = moezoo.load(path)
    assert type(loaded) is ToyAdapterLM and loaded.config == model.config
    assert json.loads((path / "moezoo_config.json").read_text())["architecture"] == "ToyAdapterLM"
    ids = torch.tensor([[1, 17, 305, 44, 9], [1, 8, 8, 2048, 3]])
    torch.testing.assert_close(loaded(input_ids=ids).logits, model(input_ids=ids).logits, rtol=0, atol=0)
    assert loaded.tokenizer.encode("a toy") == model.tokenizer.encode("a toy")


def test_the_stages_follow_the_familys_parts(family):
    model = moezoo.create_model(ARCH)
    count = {part: sum(p.numel() for p in getattr(model, part).parameters()) for part in ("lm", "adapter")}
    moe = sum(p.numel() for site in model.moe_sites().values() for p in site.parameters())
    align = set_stage(model, "align")
    assert (align["trainable"], align["connector"], align["llm"]) == (count["adapter"], count["adapter"], 0)
    assert set_stage(model, "finetune")["trainable"] == count["adapter"] + count["lm"]
    assert set_stage(model, "moe")["trainable"] == moe
    with pytest.raises(ValueError, match="ToyAdapterLM cannot be upcycled"):
        MoEZooModule(arch=ARCH, stage="moe", upcycle={"num_experts": 4}).configure_model()


def test_a_training_stage_trains_the_adapter_alone(family, text_dir):
    module = MoEZooModule(arch=ARCH, stage="align", lr=1e-2)
    data = ShardDataModule(text_dir, processor=module, batch_size=4, max_length=32, epoch_length=8, test_split=None)
    assert data.processor.tokenizer.vocab_size == 4096 and module.model is None  # from the spec: nothing built
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.model.named_parameters()}
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=data)
    assert trainer.global_step == 2
    after = dict(module.model.named_parameters())
    moved = {n for n in after if not torch.equal(after[n], before[n])}
    assert moved == {n for n in after if n.startswith("adapter.")}  # every adapter weight, nothing of the LM


def test_moezoo_eval_scores_the_family(saved, tmp_path, deterministic):
    model, path = saved
    out = tmp_path / "eval.json"
    assert main(["eval", str(path), "--tasks", "text_mc", "--limit", "2", "--json", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["model"] == str(path) and set(report["results"]) == {"text_mc"}
    result = report["results"]["text_mc"]
    assert result["num_items"] == 2 and {result["acc"], result["acc_norm"]} <= {0.0, 0.5, 1.0}
    from moezoo.eval.runner import evaluate

    in_memory = evaluate(model, ["text_mc"], limit=2).results["text_mc"]  # the model before it was saved
    assert result == pytest.approx(in_memory, abs=0)


def test_export_to_transformers_is_refused_with_the_familys_reason(saved, tmp_path):
    model, _ = saved
    with pytest.raises(ValueError, match=f"ToyAdapterLM has no transformers format: {REFUSAL}"):
        model.save_pretrained(tmp_path / "hf", format="hf")
    assert not (tmp_path / "hf").exists()
