"""The zoo's training recipes, configs/zoo/*.yaml: one per model of issue H's table (and the dense comparator),
each a fixed-step run that resumes with ``--ckpt_path last``, whose sections build (models on the meta device);
the router family differs only in its MoE variant; the dense comparator has the MoE LM's active parameters.

(tests/train/test_cli.py parses every shipped config with ``moezoo fit --print_config``, these included.)
"""

from __future__ import annotations

import copy
import importlib
import itertools
from pathlib import Path

import pytest
import yaml

import moezoo
from moezoo.bench.router_runs import CARD_TASKS, VARIANTS
from moezoo.eval.runner import split_tasks
from moezoo.registry.core import model_config
from moezoo.train.datamodule import ShardDataModule
from moezoo.train.module import MoEZooModule
from moezoo.zoo.facts import model_facts

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "configs" / "zoo"
MODELS = {"shapes_flagship", "shapes_flagship_2_typed", "digits_vqa", "image_audio", "three_stage_1_align",
          "three_stage_2_finetune", "three_stage_3_moe", "text_moe_lm", "text_dense_lm", *VARIANTS.values()}
CONFIGS = sorted(ZOO.glob("*.yaml"))
CHECKPOINT = "lightning.pytorch.callbacks.ModelCheckpoint"


def _load(name: str) -> dict:
    return yaml.safe_load((ZOO / f"{name}.yaml").read_text())


def _build(model: dict, device: str = "meta"):
    return moezoo.create_model(model["arch"], device=device, **(model.get("overrides") or {}))


def test_every_model_of_the_table_has_its_recipe():
    assert {p.stem for p in CONFIGS} == MODELS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_a_recipe_is_a_fixed_step_run_that_resumes_and_its_sections_build(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = yaml.safe_load(path.read_text())
    trainer, model, data = config["trainer"], config["model"], config["data"]
    root = f"runs/zoo/{path.stem}"
    assert "max_time" not in trainer and isinstance(trainer["max_steps"], int)  # reproducible on any machine
    assert trainer["default_root_dir"] == root and isinstance(config["seed_everything"], int)
    callbacks = trainer["callbacks"]
    paths = [c["class_path"] for c in callbacks]
    assert paths[0] == "moezoo.train.callbacks.ExportModel"
    # `--ckpt_path last` finds last.ckpt in a fixed dir; the checkpointer is last, so that seed 1's
    # `--trainer.callbacks.dirpath DIR` (the header's command, router_runs.fit_args) sets its dir.
    saver = callbacks[-1]
    assert saver["class_path"] == CHECKPOINT and paths.count(CHECKPOINT) == 1
    assert saver["init_args"]["dirpath"] == f"{root}/checkpoints" and saver["init_args"]["save_last"] is True
    assert 0 < saver["init_args"]["every_n_train_steps"] <= trainer["max_steps"]
    for callback in callbacks:  # each instantiates with its arguments (FinalEvaluation checks its task names)
        module, _, name = callback["class_path"].rpartition(".")
        getattr(importlib.import_module(module), name)(**callback.get("init_args", {}))
    if path.stem != "three_stage_1_align":  # every shipped stage evaluates itself on the card's tasks
        final = next(c for c in callbacks if c["class_path"].endswith("FinalEvaluation"))
        split_tasks(final["init_args"]["tasks"])
    MoEZooModule(**model)  # the module's arguments (the model is built below, or loaded from the previous stage)
    if "arch" in model:
        assert model_facts(_build(model))["parameters"] > 0
    ShardDataModule(**data, processor=model.get("arch", "film_cnn_moe_small"))  # indexes, splits, train_data


def test_the_router_family_differs_only_in_its_moe_variant():
    recipes = {name: _load(name) for name in VARIANTS.values()}

    def rest(config: dict) -> dict:
        config = copy.deepcopy(config)
        moe = config["model"]["overrides"]["llm"].pop("moe")
        # The family ties the LM head to the embedding (half its size on disk); nothing else but llm.moe changes.
        assert config["model"]["overrides"] == {"llm": {"tie_embeddings": True}}, "only llm.moe may differ"
        assert config["trainer"].pop("default_root_dir") == config["trainer"]["callbacks"][-1]["init_args"].pop(
            "dirpath").removesuffix("/checkpoints")
        return moe, config

    moes, rests = zip(*(rest(c) for c in recipes.values()))
    for name, other in zip(recipes, rests):
        assert other == rests[0], f"{name} differs from router_softmax beyond model.overrides.llm.moe"
    routers = [m.get("router", "softmax") for m in moes]
    assert routers[:5] == ["softmax", "cosine", "sigmoid", "hyper", "perturbed_cosine"]  # LibMoE's five
    assert moes[5] == {"num_heads": 2} and moes[6] == {"num_experts": 7, "top_k": 1, "num_shared_experts": 1}
    # The recipe is the quickstart's: architecture, optimiser, data and data order; 1,000 fixed steps.
    quickstart = yaml.safe_load((ROOT / "configs" / "quickstart.yaml").read_text())
    softmax = rests[0]
    assert softmax["seed_everything"] == quickstart["seed_everything"] and softmax["data"] == quickstart["data"]
    assert {k: v for k, v in softmax["model"].items() if k != "overrides"} == quickstart["model"]
    assert softmax["trainer"]["max_steps"] == 1000
    final = softmax["trainer"]["callbacks"][1]["init_args"]
    assert tuple(final["tasks"]) == CARD_TASKS and final["blank_images"] is True


def test_the_variants_keep_the_active_parameters_comparable():
    facts = {name: model_facts(_build(_load(name)["model"])) for name in VARIANTS.values()}
    reference = facts["router_softmax"]["active_parameters_per_token"]
    for name in ("router_cosine", "router_sigmoid", "router_hyper", "router_perturbed_cosine", "shared_expert"):
        # Routers differ in their own few thousand weights; the shared expert + top-1 of 7 uses 2 experts' worth.
        assert facts[name]["active_parameters_per_token"] == pytest.approx(reference, rel=2e-3), name
    assert facts["shared_expert"]["parameters"] == pytest.approx(facts["router_softmax"]["parameters"], rel=1e-3)
    # MH-MoE: each token's h sub-tokens (width dim/h) take top-k experts each: h * k * (dim/h) * expert_dim
    # expert weights per token and matrix, the reference's k * dim * expert_dim.
    reference_moe = model_config("film_cnn_moe_small").llm.moe
    mh = model_config("film_cnn_moe_small", llm={"moe": {"num_heads": 2}}).llm.moe
    assert mh.num_experts == reference_moe.num_experts and mh.expert_dim == reference_moe.expert_dim
    assert mh.num_heads * mh.top_k * mh.head_dim == reference_moe.top_k * reference_moe.dim


def test_the_dense_comparator_has_the_moe_lms_active_parameters_and_tokens():
    moe, dense = _load("text_moe_lm"), _load("text_dense_lm")
    moe_facts, dense_facts = model_facts(_build(moe["model"])), model_facts(_build(dense["model"]))
    assert "num_experts" not in dense_facts  # dense
    # 344,384 against 345,408 active: the MoE's two 8 x 64 routers are the difference.
    assert dense_facts["parameters"] == moe_facts["active_parameters_per_token"] - 2 * 8 * 64
    for key in ("seed_everything", "data"):
        assert dense[key] == moe[key]
    strip = ("default_root_dir", "callbacks")
    assert {k: v for k, v in dense["trainer"].items() if k not in strip} == \
        {k: v for k, v in moe["trainer"].items() if k not in strip}
    assert {k: v for k, v in dense["model"].items() if k != "overrides"} == \
        {k: v for k, v in moe["model"].items() if k != "overrides"}
    assert dense["model"]["overrides"]["tie_embeddings"] == moe["model"]["overrides"]["tie_embeddings"]


def test_the_three_stages_chain_through_their_exported_models():
    stages = ["three_stage_1_align", "three_stage_2_finetune", "three_stage_3_moe"]
    for before, after in itertools.pairwise(stages):
        assert _load(after)["model"]["checkpoint"] == f"runs/zoo/{before}/model"
    assert _load(stages[0])["model"]["overrides"] == {"llm": {"moe": None, "tie_embeddings": True}}  # dense until stage 3
