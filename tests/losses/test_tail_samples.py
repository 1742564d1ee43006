"""The tail estimate (``tail_samples``): uniform draws that stand in for the softmax mass beyond
the k nearest classes. Oracles: the exact softmax cross-entropy (when the draws are every class
once, the estimate is exact) and its expectation over many draws (it is unbiased)."""

import pytest
import torch
import torch.nn.functional as F

import esseg.losses.knn_ce as knn_ce
from esseg.engine.config import config_from_dict
from esseg.engine.train import build_criterion
from esseg.errors import ConfigError
from esseg.losses import ESSLoss, exact_cross_entropy, knn_cross_entropy

C, D = 12, 5


def problem(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, D, 4, 6, generator=g, dtype=dtype)  # free lengths: soft and sharp pixels
    mu = F.normalize(torch.randn(C, D, generator=g, dtype=dtype), dim=1)
    y = torch.randint(0, C, (2, 4, 6), generator=g)
    y[1, 0, :3] = 255
    return x, y, mu


def every_class_once(rows, num_classes, m, device, generator=None):
    """Stand-in for the uniform draws: each row draws every class exactly once (m = C)."""
    assert m == num_classes
    return torch.arange(num_classes, device=device).repeat(rows, 1)


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("k", [1, 4])
def test_draws_of_every_class_give_the_exact_softmax(monkeypatch, stride, k):
    # m = C draws covering every class once: weight C / m = 1 and every tail class counted once,
    # so the loss must equal the full softmax over all C classes (value and gradients).
    monkeypatch.setattr(knn_ce, "tail_samples_uniform", every_class_once)
    x, y, mu = problem()
    x.requires_grad_(), mu.requires_grad_()
    got = knn_cross_entropy(x, y, mu, k=k, tau=0.5, tail_samples=C, query_stride=stride)
    ref = exact_cross_entropy(x, y, mu, tau=0.5)
    plain = knn_cross_entropy(x, y, mu, k=k, tau=0.5, query_stride=stride)
    assert float((ref - plain).detach()) > 0.05  # the k nearest alone miss part of the mass here
    torch.testing.assert_close(got, ref)
    for a, b in zip(torch.autograd.grad(got, [x, mu]), torch.autograd.grad(ref, [x, mu])):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("stride", [1, 2])
def test_partition_estimate_is_unbiased(stride):
    # exp(l_i) = Z_hat_i / exp(z_{i,y_i}); its mean over many independent draws -> Z_i / exp(z_{i,y_i})
    x, y, mu = problem(seed=3)
    ref = exact_cross_entropy(x, y, mu, tau=1.0, reduction="none").exp()
    gen = torch.Generator().manual_seed(1)
    n = 2000
    draws = torch.stack([knn_cross_entropy(x, y, mu, k=3, tau=1.0, reduction="none", tail_samples=4, generator=gen,
                                           query_stride=stride).exp() for _ in range(n)])
    valid = y != 255
    mean, stderr = draws.mean(0)[valid], draws.std(0)[valid] / n**0.5
    assert float(stderr.max()) > 0  # the draws do vary
    # every pixel within 4.5 standard errors (deterministic: seeded draws); a wrong weight
    # (C-1-k)/m instead of C/m, or counting the k nearest twice, fails by tens of errors
    assert float(((mean - ref[valid]).abs() / stderr).max()) < 4.5
    # the k nearest alone are biased low by far more than that tolerance
    plain = knn_cross_entropy(x, y, mu, k=3, tau=1.0, reduction="none", query_stride=stride).exp()
    assert float(((ref - plain) / ref)[valid].mean()) > 0.1


def test_gradcheck_with_fixed_draws():
    x, y, mu = problem(seed=5)
    x, y, mu = x[:1, :, :2].requires_grad_(), y[:1, :2], mu.clone().requires_grad_()
    for stride in (1, 2):
        def f(a, b):
            gen = torch.Generator().manual_seed(7)  # the same draws at every call
            return knn_cross_entropy(a, y, b, k=2, tau=0.7, tail_samples=5, generator=gen, query_stride=stride)
        assert torch.autograd.gradcheck(f, (x, mu))


def test_no_tail_when_k_covers_every_class():
    x, y, mu = problem()
    gen = torch.Generator().manual_seed(0)
    torch.testing.assert_close(knn_cross_entropy(x, y, mu, k=C - 1, tau=0.5, tail_samples=8, generator=gen),
                               exact_cross_entropy(x, y, mu, tau=0.5))


def test_bad_tail_samples_are_refused():
    x, y, mu = problem()
    with pytest.raises(ValueError, match="tail_samples must be >= 0"):
        knn_cross_entropy(x, y, mu, k=3, tail_samples=-1)
    with pytest.raises(ValueError, match="needs negatives='knn'"):
        knn_cross_entropy(x, y, mu, k=3, tail_samples=4, negatives="random")
    with pytest.raises(ValueError, match="needs mode='knn'"):
        ESSLoss(mode="exact", tail_samples=4)


def test_essloss_draws_follow_the_call_counter():
    # the draws of call t depend only on (index_seed, t): a loss restored from a state_dict
    # continues with the draws the original would have made, and other seeds draw differently
    x, y, mu = problem(seed=2, dtype=torch.float32)
    a, b, other = ESSLoss(k=3, tau=0.5, tail_samples=4), ESSLoss(k=3, tau=0.5, tail_samples=4), ESSLoss(k=3, tau=0.5, tail_samples=4, index_seed=1)
    first = a(x, y, mu)
    assert float(first) != float(a(x, y, mu))  # call 1 draws other classes than call 0
    assert float(b(x, y, mu)) == float(first)
    assert float(other(x, y, mu)) != float(first)
    c = ESSLoss(k=3, tau=0.5, tail_samples=4)
    c.load_state_dict(a.state_dict())
    assert float(c(x, y, mu)) == float(a(x, y, mu))
    assert "tail_samples=4" in repr(a)


def test_config_and_criterion():
    for loss, message in [({"tail_samples": -2}, r"loss\.tail_samples must be >= 0"),
                          ({"tail_samples": 8, "mode": "exact"}, r"loss\.tail_samples=8 needs loss\.mode=knn.*set loss\.tail_samples=0")]:
        with pytest.raises(ConfigError, match=message):
            config_from_dict({"loss": loss})
    criterion = build_criterion(config_from_dict({"loss": {"k": 3, "tail_samples": 16}}), num_classes=40, ignore_index=255)
    assert criterion.tail_samples == 16
