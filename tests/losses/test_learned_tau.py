"""ESSLoss with a tensor temperature: equal to the float one, and its gradient is exact."""

import pytest
import torch
import torch.nn.functional as F

from esseg.losses import ESSLoss


def _batch(c=7, d=3):
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(1, d, 4, 4, generator=g, dtype=torch.float64), dim=1)
    mu = F.normalize(torch.randn(c, d, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, c, (1, 4, 4), generator=g)
    y[0, 0, 0] = 255
    return x, y, mu


@pytest.mark.parametrize("mode, k", [("knn", 6), ("knn", 3), ("exact", 6)])
def test_tensor_tau_equals_float_tau(mode, k):
    x, y, mu = _batch()
    crit = ESSLoss(k=k, tau=0.2, mode=mode, reg_weight=1.0)
    fixed = crit(x, y, mu)
    assert "tau" not in crit.terms
    torch.testing.assert_close(crit(x, y, mu, tau=torch.tensor(0.2, dtype=torch.float64)), fixed)
    assert float(crit.terms["tau"]) == pytest.approx(0.2)


@pytest.mark.parametrize("mode", ["knn", "exact"])
def test_log_scale_gradient_matches_the_softmax_oracle(mode):
    # k = C - 1: the loss is full softmax CE over logits -exp(s) ||x - mu||^2 (Eq. 5 with tau = exp(-s)).
    x, y, mu = _batch()
    crit = ESSLoss(k=6, tau=1.0, mode=mode, reg_weight=0.0, query_stride=1)
    s = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: crit(x, y, mu, tau=torch.exp(-s)), (s,))
    loss = crit(x, y, mu, tau=torch.exp(-s))
    (grad,) = torch.autograd.grad(loss, s)
    xf, yf = x.permute(0, 2, 3, 1).reshape(-1, 3), y.reshape(-1)
    s2 = s.detach().clone().requires_grad_(True)
    oracle = F.cross_entropy(-torch.exp(s2) * torch.cdist(xf, mu) ** 2, yf, ignore_index=255)
    (expected,) = torch.autograd.grad(oracle, s2)
    torch.testing.assert_close(loss, oracle)
    torch.testing.assert_close(grad, expected)
    assert abs(float(grad)) > 1e-4


def test_tau_must_be_a_scalar():
    x, y, mu = _batch()
    with pytest.raises(ValueError, match="0-dim tensor"):
        ESSLoss(k=3)(x, y, mu, tau=torch.ones(2, dtype=torch.float64))
