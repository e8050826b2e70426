"""The LM head's backward skips unsupervised rows and still computes autograd's gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from moezoo.models.lm.head import lm_head


@pytest.mark.parametrize("supervised", ["all", "some", "none"])
def test_gradients_equal_plain_linear(supervised):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 7, 16, generator=g, requires_grad=True)
    w = torch.randn(50, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 50, (2, 7), generator=g)
    if supervised == "some":
        labels[0, :5] = -100
        labels[1, 2:] = -100
    elif supervised == "none":
        labels[:] = -100
        labels[0, 0] = 3  # cross-entropy needs one target; only this row has a gradient
    grads = []
    for head in (lm_head, F.linear):
        x.grad = w.grad = None
        logits = head(x, w)
        F.cross_entropy(logits.reshape(-1, 50), labels.reshape(-1), ignore_index=-100).backward()
        grads.append((x.grad.clone(), w.grad.clone(), logits.detach()))
    (gx, gw, logits), (rx, rw, ref) = grads
    assert torch.equal(logits, ref)
    torch.testing.assert_close(gx, rx, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gw, rw, atol=1e-6, rtol=1e-5)
    unsupervised = labels == -100
    assert (gx[unsupervised] == 0).all()  # exactly zero, as autograd's


def test_frozen_weight_and_no_grad_paths():
    x, w = torch.randn(3, 8, requires_grad=True), torch.randn(5, 8)
    lm_head(x, w).sum().backward()
    torch.testing.assert_close(x.grad, w.sum(0).expand(3, 8))
    with torch.no_grad():
        assert torch.equal(lm_head(x, w), F.linear(x, w))
