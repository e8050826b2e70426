"""The model card: Hugging Face's format (checked with huggingface_hub's own parser) and every fact the zoo
promises on it."""

from __future__ import annotations

import pytest

from moezoo.registry.shipped import read_manifest
from moezoo.zoo.card import read_front_matter, render_card
from moezoo.zoo.datasets import config_datasets, dataset_licence


@pytest.fixture(scope="module")
def card(published):
    return (published.root / published.name / "README.md").read_text()


def test_the_front_matter_is_hub_metadata_with_the_eval_figures(card, published):
    from huggingface_hub import ModelCard

    cfg = read_manifest(published.root / published.name)
    hub = ModelCard(card).data  # parsed by the Hub's own code, model-index included
    assert (hub.license, hub.library_name, hub.datasets) == ("apache-2.0", "moezoo", ["shapes-vqa"])
    assert {"moezoo", "mixture-of-experts", "multimodal", "router-softmax"} <= set(hub.tags)
    parsed = {(r.task_type, r.dataset_type, r.dataset_split, r.metric_type): r.metric_value for r in hub.eval_results}
    expected = {(t, d, s, m): round(v, 6) for (task, t, d, s) in [("shapes_vqa", "visual-question-answering",
                                                                    "shapes-vqa", "test"),
                                                                   ("text_mc", "text-generation", "text", "val")]
                for m, v in cfg.metrics[task].items()}
    assert parsed == expected
    meta = read_front_matter(card)
    assert meta["seeds"] == published.facts["seeds"]  # every seed's figures, for the router recipes
    assert meta["moezoo"]["recipe"]["config"] == "configs/quickstart.yaml"
    assert meta["moezoo"]["eval"] == {"tasks": list(published.tasks), "limit": published.limit}


def test_the_body_gives_architecture_recipe_baselines_limits_and_licences(card, published):
    cfg = read_manifest(published.root / published.name)
    body = card.split("\n---\n", 1)[1]
    for text in (f"{cfg.params_total:,} total, {cfg.params_active:,} active per token", "4 per MoE layer, top-2",
                 "`softmax`", "image, text", "bfloat16 safetensors, computed in float32",
                 "| config | `configs/quickstart.yaml` |", "| steps | 3 |", "| wall time | 2 s (the test machine) |",
                 "| final training loss | 7.2500 |", "moezoo fit -c configs/quickstart.yaml",
                 f"moezoo zoo publish MODEL_DIR --name {cfg.name} --config configs/quickstart.yaml --tasks "
                 f"shapes_vqa,text_mc --limit {published.limit} --bf16 --train-facts FACTS.json",
                 "## Intended use and limitations", "A test model: random weights.",
                 "| shapes-vqa | Apache-2.0 (moezoo's) |", "### Seeds"):
        assert text in body, text
    blank = cfg.baselines["shapes_vqa"]["blank"]["vqa_accuracy"]
    majority = cfg.baselines["shapes_vqa"]["majority"]["vqa_accuracy"]
    row = (f"| VQAv2 accuracy | {cfg.metrics['shapes_vqa']['vqa_accuracy']:.4f} | {blank:.4f} | {majority:.4f} | "
           f"{published.limit} |")
    assert row in body
    for file in cfg.files:
        if file.path != "README.md":
            assert f"| {file.path} | {file.size:,} | `{file.sha256[:16]}` |" in body
    assert render_card(cfg) == card


def test_dataset_licences_and_config_datasets():
    assert "UCI" in dataset_licence("digits-vqa").source and dataset_licence("digits-vqa").hub_id == "cc-by-4.0"
    assert dataset_licence("text").licence == "PSF-2.0"
    assert config_datasets("configs/uni_moe_image_audio.yaml") == ["shapes-vqa", "tones-qa"]
