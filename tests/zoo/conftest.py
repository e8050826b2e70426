"""A tiny model published into a temporary zoo: what the zoo tests load, verify and corrupt."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

import moezoo
from moezoo.zoo.publish import publish

NAME = "mm_tiny_cnn.zootest"
TASKS = ("shapes_vqa", "text_mc")
LIMIT = 6
FACTS = {"seed": 0, "steps": 3, "wall_time_s": 1.5, "final_train_loss": 7.25, "machine": "the test machine",
         "seeds": [{"seed": 0, "metrics": {"text_mc": {"acc": 0.5}}}, {"seed": 1, "metrics": {"text_mc": {"acc": 0.25}}}],
         "notes": "A test model: random weights."}


@pytest.fixture(scope="session")
def trained_dir(tmp_path_factory):
    """A model dir as `moezoo fit` exports it (here: random weights, saved with save_pretrained)."""
    torch.manual_seed(0)
    return moezoo.create_model("mm_tiny_cnn").save_pretrained(tmp_path_factory.mktemp("run") / "model")


@pytest.fixture(scope="session")
def zoo_root(tmp_path_factory, trained_dir):
    """A checkpoints root holding NAME, published in bf16 from ``trained_dir``."""
    root = tmp_path_factory.mktemp("checkpoints")
    publish(trained_dir, NAME, TASKS, config="configs/quickstart.yaml", limit=LIMIT, bf16=True, train_facts=FACTS,
            description="A tiny test model.", root=root)
    return root


@pytest.fixture(scope="session")
def published(zoo_root, trained_dir):
    """What was published: ``name, tasks, limit, facts`` and the ``root`` and ``trained_dir``."""
    return SimpleNamespace(name=NAME, tasks=TASKS, limit=LIMIT, facts=FACTS, root=zoo_root, trained_dir=trained_dir)


@pytest.fixture
def zoo(zoo_root, monkeypatch):
    """``$MOEZOO_CHECKPOINTS`` pointed at the published zoo for this test."""
    monkeypatch.setenv("MOEZOO_CHECKPOINTS", str(zoo_root))
    return zoo_root
