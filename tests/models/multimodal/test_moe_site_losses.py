"""MoE losses travel with the output: a vision tower upcycled to MoE that encodes a batch's image and then
its video frames reports both passes' routings and losses, equal to an image-only and a video-only batch run
separately with the same weights; the training loss holds both passes, and so do its gradients."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

import moezoo
from moezoo.moe import load_balancing_loss, router_z_loss
from moezoo.moe.mlp_experts import MoEMLP

TOWER_SITE = "vision.vision_tower.encoder.layers.0.mlp"  # tiny CLIP: features from layer -2 of 2
CONNECTOR_SITE = "connectors.image.mlp"  # videos share the image connector (Video-LLaVA)


@pytest.fixture(scope="module")
def model():
    """mm_tiny_clip with 2-frame videos, its tower's MLPs and its connector upcycled to 4 experts (top-2)."""
    torch.manual_seed(0)
    dense = moezoo.create_model("mm_tiny_clip", llm={"moe": None}, video={"num_frames": 2, "mode": "pool"})
    return moezoo.upcycle(dense, num_experts=4, top_k=2, targets=("vision", "connector"), noise_std=0.2, seed=3)


def batch(model, image: bool, video: bool) -> dict[str, torch.Tensor]:
    """One sample per medium asked for: an image question, then a video question (left to right)."""
    p = model.processor
    texts, media = [], {}
    if image:
        texts.append(p.placeholders["image"] + "\nWhat colour?")
        media["images"] = [Image.new("RGB", (40, 30), "orange")]
    if video:
        texts.append(p.placeholders["video"] + "\nWhat happens?")
        media["videos"] = [[Image.new("RGB", (40, 30), c) for c in ("red", "navy")]]
    texts = [p.apply_chat_template([{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}])
             for t in texts]
    out = dict(p(text=texts, **media))
    out["labels"] = out["input_ids"].masked_fill(out["attention_mask"] == 0, -100)
    return out


def site_terms(out) -> torch.Tensor:
    """The MoE sites' share of the training loss: the loss less the LM loss and the LLM's router terms."""
    return out.loss - out.lm_loss


def test_both_passes_of_the_tower_are_reported_and_trained(model):
    model.train()
    inputs: dict[str, list[torch.Tensor]] = {}  # each MoEMLP call's input, seen by a forward hook
    handles = [m.register_forward_hook(lambda mod, args, _, n=n: inputs.setdefault(n, []).append(args[0]))
               for n, m in model.named_modules() if isinstance(m, MoEMLP)]
    try:
        both = model(**batch(model, image=True, video=True))
    finally:
        for h in handles:
            h.remove()
    image_only = model(**batch(model, image=True, video=False))
    video_only = model(**batch(model, image=False, video=True))

    # One record per call: each site ran for the image and again for the video frames.
    assert [(r.site, r.modality, r.call) for r in both.site_outputs] == [
        (TOWER_SITE, "image", 0), (CONNECTOR_SITE, "image", 0), (TOWER_SITE, "video", 1), (CONNECTOR_SITE, "video", 1)]
    assert [r.modality for r in image_only.site_outputs] == ["image", "image"]
    assert [r.modality for r in video_only.site_outputs] == ["video", "video"]

    # Each record is its call's routing: recomputed from the call's input by the site's router.
    for record, x in zip([r for r in both.site_outputs if r.site == TOWER_SITE], inputs[TOWER_SITE]):
        routing = model.get_submodule(TOWER_SITE).router(x.reshape(-1, x.shape[-1]))
        torch.testing.assert_close(record.output.aux_loss, load_balancing_loss(routing.probs, routing.expert_idx))
        torch.testing.assert_close(record.output.z_loss, router_z_loss(routing.logits))
    assert inputs[TOWER_SITE][0].shape[0] == 1 and inputs[TOWER_SITE][1].shape[0] == 2  # 1 image, then 2 frames

    # Each pass equals the same medium run on its own.
    alone = {r.modality: r for r in image_only.site_outputs + video_only.site_outputs if r.site == TOWER_SITE}
    for record in both.site_outputs:
        if record.site == TOWER_SITE:
            ref = alone[record.modality].output
            torch.testing.assert_close(record.output.aux_loss, ref.aux_loss)
            torch.testing.assert_close(record.output.z_loss, ref.z_loss)
            assert torch.equal(record.output.tokens_per_expert, ref.tokens_per_expert)
    for site in (TOWER_SITE, CONNECTOR_SITE):  # the per-site sums hold both passes
        for i in (0, 1):
            torch.testing.assert_close(both.site_losses[site][i],
                                       image_only.site_losses[site][i] + video_only.site_losses[site][i])
        assert torch.equal(both.site_stats[site].tokens_per_expert, image_only.site_stats[site].tokens_per_expert
                           + video_only.site_stats[site].tokens_per_expert)
    assert image_only.site_losses[TOWER_SITE][0] > 0  # the image pass is not lost behind the video's

    # The training loss adds every pass's weighted losses: the separate runs' together.
    coef = model.get_submodule(TOWER_SITE).config
    assert coef.aux_loss_coef > 0
    torch.testing.assert_close(site_terms(both), site_terms(image_only) + site_terms(video_only))
    expected = sum(r.config.aux_loss_coef * r.output.aux_loss + r.config.z_loss_coef * r.output.z_loss
                   for r in image_only.site_outputs + video_only.site_outputs)
    torch.testing.assert_close(site_terms(both), expected)

    # ... and so do its gradients: the tower router learns from the image pass and the video pass.
    router = list(model.get_submodule(TOWER_SITE).router.parameters())
    g_both = torch.autograd.grad(site_terms(both), router)
    g_image = torch.autograd.grad(site_terms(image_only), router)
    g_video = torch.autograd.grad(site_terms(video_only), router)
    for gb, gi, gv in zip(g_both, g_image, g_video):
        assert gi.abs().sum() > 0 and gv.abs().sum() > 0
        torch.testing.assert_close(gb, gi + gv)
    model.eval()


def test_eval_and_generate_keep_the_records_out_of_the_loss(model):
    model.eval()
    inputs = batch(model, image=True, video=True)
    with torch.no_grad():
        out = model(**inputs)
    assert out.loss == out.lm_loss and len(out.site_outputs) == 4  # reported, not added, outside training
    ids = model.generate(input_ids=inputs["input_ids"][:1], attention_mask=inputs["attention_mask"][:1],
                         pixel_values=inputs["pixel_values"], max_new_tokens=2, do_sample=False, eos_token_id=[])
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 2
