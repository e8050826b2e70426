"""§3 of the zoo: every shipped model loads by name and its card's figures are what ``moezoo eval`` measures now,
within one question's worth (1/N). With no model shipped yet, the same check runs on a model the tests publish."""

from __future__ import annotations

import json
import shutil

import pytest

from moezoo.registry.shipped import MANIFEST_NAME, shipped_entries
from moezoo.shipped import ROOT
from moezoo.zoo.verify import card_is_current, verify_model

SHIPPED = sorted(shipped_entries(ROOT / "checkpoints"))  # the package's own zoo, whatever $MOEZOO_CHECKPOINTS says


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_model_matches_its_card(name, monkeypatch):
    monkeypatch.delenv("MOEZOO_CHECKPOINTS", raising=False)
    checks = verify_model(name)
    assert checks and all(c.ok for c in checks), "\n".join(map(str, checks))
    assert card_is_current(shipped_entries()[name]), f"{name}'s README.md is not the card its manifest renders"


def test_the_check_passes_on_a_published_model(zoo, published):
    checks = verify_model(published.name)
    cfg = shipped_entries()[published.name]
    assert len(checks) == sum(len(m) for m in cfg.metrics.values()) > 0
    assert all(c.ok for c in checks), "\n".join(map(str, checks))
    assert {c.tolerance for c in checks if c.task == "shapes_vqa" and "/" not in c.metric} == {1 / published.limit}
    assert card_is_current(cfg)


def test_the_check_fails_when_a_card_claims_another_figure(zoo_root, tmp_path, monkeypatch, published):
    root = tmp_path / "checkpoints"
    shutil.copytree(zoo_root, root)
    monkeypatch.setenv("MOEZOO_CHECKPOINTS", str(root))
    manifest = root / published.name / MANIFEST_NAME
    data = json.loads(manifest.read_text())
    acc = data["entry"]["metrics"]["text_mc"]["acc"]
    data["entry"]["metrics"]["text_mc"]["acc"] = acc + 1.5 / published.limit  # off by one and a half questions
    manifest.write_text(json.dumps(data))
    failed = [c for c in verify_model(published.name) if not c.ok]
    assert [(c.task, c.metric) for c in failed] == [("text_mc", "acc")]
    assert failed[0].measured == pytest.approx(acc)
    assert not card_is_current(shipped_entries()[published.name])  # the card no longer renders from it
