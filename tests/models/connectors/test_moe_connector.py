"""The moe connector: upcycled from mlp2x_gelu exactly, and its routing exposed for the losses."""

import pytest
import torch

from moezoo.models.connectors.base import build_connector
from moezoo.models.connectors.linear import FiLMConfig, FiLMConnector, MLPConfig, MLPConnector
from moezoo.models.connectors.moe import MoEConnector, MoEConnectorConfig
from moezoo.moe.mlp_experts import MoEMLP


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
    assert connector.last_output is None
    out = connector(torch.randn(3, 5, 12))
    # The owning model finds every MoEMLP among its modules and weights its losses.
    (moe,) = [m for m in connector.modules() if isinstance(m, MoEMLP)]
    record = moe.last_output
    assert record is connector.last_output and record.hidden_states is out
    assert record.stats.tokens_per_expert.sum() == 3 * 5 * 2
    loss = out.mean() + moe.config.aux_loss_coef * record.aux_loss + moe.config.z_loss_coef * record.z_loss
    loss.backward()
    assert moe.config.aux_loss_coef == 0.1 and moe.config.z_loss_coef == 0.01
    assert connector.mlp.router.proj.grad.abs().sum() > 0
