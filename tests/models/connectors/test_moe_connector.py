"""The moe connector: upcycled from mlp2x_gelu exactly, and its routing exposed for the losses."""

import pytest
import torch

from moezoo.models.connectors.base import build_connector
from moezoo.models.connectors.linear import FiLMConfig, FiLMConnector, MLPConfig, MLPConnector
from moezoo.models.connectors.moe import MoEConnector, MoEConnectorConfig
from moezoo.moe import load_balancing_loss, router_z_loss
from moezoo.moe.recording import SiteRecorder, modality_pass


@pytest.mark.parametrize("router", ["softmax", "cosine", "sigmoid", "perturbed_cosine"])
@pytest.mark.parametrize("activation", ["gelu", "quick_gelu"])
def test_upcycled_connector_equals_the_dense_one(router, activation):
    dense = MLPConnector(MLPConfig(activation=activation), in_dim=12, out_dim=20)
    moe = MoEConnector.from_dense(dense, num_experts=4, top_k=2, router=router, aux_loss_coef=0.02).train()
    assert moe.config == MoEConnectorConfig(num_experts=4, top_k=2, router=router, activation=activation,
                                            aux_loss_coef=0.02)
    assert moe.mlp.config.aux_loss_coef == 0.02 and moe.mlp.activation == activation
    features = torch.randn(2, 9, 12)
    with torch.no_grad():
        torch.testing.assert_close(moe(features), dense(features), atol=1e-6, rtol=0)
    # The upcycled connector saves and loads like one built from its config.
    fresh = build_connector(moe.config.to_dict(), in_dim=12, out_dim=20)
    fresh.load_state_dict(moe.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(features), moe.eval()(features), atol=0, rtol=0)


def test_upcycling_breaks_symmetry_with_noise_and_rejects_other_connectors():
    dense = MLPConnector(MLPConfig(), in_dim=12, out_dim=20)
    moe = MoEConnector.from_dense(dense, num_experts=4, top_k=2, noise_std=0.05)
    assert not torch.equal(moe.mlp.fc2_weight[0], moe.mlp.fc2_weight[1])
    with pytest.raises(ValueError, match="upcycles an mlp2x_gelu connector .*got FiLMConnector"):
        MoEConnector.from_dense(FiLMConnector(FiLMConfig(), in_dim=12, out_dim=20))
    with pytest.raises(ValueError, match="keeps the dense hidden width 20, got hidden_dim=8"):
        MoEConnector.from_dense(dense, hidden_dim=8)


def test_routing_is_exposed_for_the_owning_model():
    connector = build_connector({"kind": "moe", "num_experts": 4, "top_k": 2, "router": "cosine",
                                 "hidden_dim": 8, "aux_loss_coef": 0.1, "z_loss_coef": 0.01}, in_dim=12, out_dim=20)
    assert connector.mlp.fc1_weight.shape == (4, 8, 12) and connector.mlp.fc2_weight.shape == (4, 20, 8)
    features = torch.randn(3, 5, 12)
    # The owning model opens a recorder around its forward; each call of the connector's MoEMLP lands there.
    with SiteRecorder(connector) as recorder:
        with modality_pass("image"):
            out = connector(features)
        with modality_pass("video"):
            connector(features[:1])
    image, video = recorder.records
    assert (image.site, image.modality, image.call, video.modality, video.call) == ("mlp", "image", 0, "video", 1)
    assert torch.equal(image.output.hidden_states, out.reshape(3 * 5, 20))
    assert image.output.stats.tokens_per_expert.sum() == 3 * 5 * 2
    assert video.output.stats.tokens_per_expert.sum() == 1 * 5 * 2
    r = image.output.routing  # the loss the owner adds, against the router's own output
    torch.testing.assert_close(image.weighted_loss, 0.1 * load_balancing_loss(r.probs, r.expert_idx)
                               + 0.01 * router_z_loss(r.logits))
    (out.mean() + image.weighted_loss + video.weighted_loss).backward()
    assert image.config is connector.mlp.config and image.config.aux_loss_coef == 0.1
    assert connector.mlp.router.proj.grad.abs().sum() > 0
    connector(features)  # outside a recorder: nothing is kept
    assert len(recorder.records) == 2
