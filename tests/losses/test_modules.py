"""ESSLoss and SoftmaxCrossEntropyLoss: options, modes and logged terms."""

import pytest
import torch
import torch.nn.functional as F

from esseg.losses import ESSLoss, SoftmaxCrossEntropyLoss, exact_cross_entropy, knn_cross_entropy, max_margin_loss


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(2, 6, 5, 5, generator=g), dim=1).requires_grad_()
    mu = F.normalize(torch.randn(30, 6, generator=g), dim=1).requires_grad_()
    y = torch.randint(0, 30, (2, 5, 5), generator=g)
    return x, y, mu


def test_knn_mode_is_ce_plus_weighted_margin(batch):
    x, y, mu = batch
    crit = ESSLoss(k=5, reg_weight=2.0)
    total = crit(x, y, mu)
    ce, reg = knn_cross_entropy(x, y, mu, k=5, query_stride=4), max_margin_loss(mu, 0.5)
    torch.testing.assert_close(total, ce + 2.0 * reg)
    torch.testing.assert_close(crit.terms["ce"], ce.detach())
    torch.testing.assert_close(crit.terms["reg"], reg.detach())
    assert not crit.terms["ce"].requires_grad
    total.backward()
    assert mu.grad.abs().sum() > 0


def test_per_pixel_search_option_and_flat_inputs(batch):
    x, y, mu = batch
    torch.testing.assert_close(ESSLoss(k=5, reg_weight=0, query_stride=1)(x, y, mu), knn_cross_entropy(x, y, mu, k=5))
    flat_x, flat_y = x.permute(0, 2, 3, 1).reshape(-1, 6), y.reshape(-1)
    torch.testing.assert_close(ESSLoss(k=5, reg_weight=0)(flat_x, flat_y, mu), knn_cross_entropy(x, y, mu, k=5))


def test_exact_mode_and_no_regulariser(batch):
    x, y, mu = batch
    crit = ESSLoss(mode="exact", reg_weight=0)
    torch.testing.assert_close(crit(x, y, mu), exact_cross_entropy(x, y, mu))
    assert crit.terms["reg"].item() == 0


def test_random_mode_and_unknown_mode(batch):
    x, y, mu = batch
    assert torch.isfinite(ESSLoss(mode="random", k=3)(x, y, mu))
    with pytest.raises(ValueError, match="mode must be one of knn, random, exact"):
        ESSLoss(mode="full")


def test_softmax_baseline_loss():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 7, 4, 4, generator=g, requires_grad=True)
    y = torch.randint(0, 7, (2, 4, 4), generator=g)
    y[0] = 255
    crit = SoftmaxCrossEntropyLoss()
    torch.testing.assert_close(crit(logits, y), F.cross_entropy(logits, y, ignore_index=255))
    zero = crit(logits, torch.full_like(y, 255))
    zero.backward()
    assert zero.item() == 0 and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="found 7"):
        crit(logits, torch.full_like(y, 7))


def test_regulariser_refresh_caches_neighbours_between_refreshes():
    g = torch.Generator().manual_seed(4)
    mu = F.normalize(torch.randn(50, 3, generator=g, dtype=torch.float64), dim=1)
    x = F.normalize(torch.randn(20, 3, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, 50, (20,), generator=g)
    crit = ESSLoss(k=3, reg_refresh_every=3, reg_candidates=4)
    crit(x, y, mu)  # refresh: exact
    torch.testing.assert_close(crit.terms["reg"], max_margin_loss(mu, 0.5))
    far = int(((mu - mu[0]) ** 2).sum(1).argmax())
    moved = mu.clone()
    moved[far] = moved[0] + 1e-3  # the farthest class jumps next to class 0: only a fresh search sees it
    crit(x, y, moved)  # cached candidates of the old table
    stale = crit.terms["reg"]
    crit(x, y, moved)
    crit(x, y, moved)  # third call after refresh -> searches again: exact
    torch.testing.assert_close(crit.terms["reg"], max_margin_loss(moved, 0.5))
    assert crit.terms["reg"] > stale
    crit.eval()
    crit(x, y, moved)
    torch.testing.assert_close(crit.terms["reg"], max_margin_loss(moved, 0.5))


@pytest.mark.parametrize("tau", [0.0, -0.05, float("nan")])
def test_non_positive_tau_is_refused(batch, tau):
    x, y, mu = batch
    for call in (lambda: ESSLoss(tau=tau), lambda: knn_cross_entropy(x, y, mu, tau=tau),
                 lambda: exact_cross_entropy(x, y, mu, tau=tau)):
        with pytest.raises(ValueError, match=r"tau must be > 0 \(the softmax temperature"):
            call()


@pytest.mark.parametrize("mode", ["knn", "exact"])
@pytest.mark.parametrize("stride", [1, 4])
def test_nan_embeddings_give_nan_loss_not_index_error(batch, mode, stride):
    # C = 20 < 32: the exact search pads the class table, which NaN distances used to reach.
    x, y, _ = batch
    mu = F.normalize(torch.randn(20, 6, generator=torch.Generator().manual_seed(5)), dim=1)
    y = y % 20
    nan_x = x.detach().clone()
    nan_x[0, :, 1, 1] = float("nan")
    nan_mu = mu.clone()
    nan_mu[:] = float("nan")
    for xs, mus in [(nan_x, mu), (x.detach(), nan_mu)]:
        loss = ESSLoss(k=7, mode=mode, query_stride=stride, reg_refresh_every=2)(xs, y, mus)
        assert torch.isnan(loss)


def test_regulariser_refresh_state_is_in_the_state_dict():
    # A loss restored from state_dict() continues exactly like the uninterrupted one.
    g = torch.Generator().manual_seed(6)
    tables = [F.normalize(torch.randn(40, 3, generator=g, dtype=torch.float64), dim=1) for _ in range(5)]
    x = F.normalize(torch.randn(20, 3, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, 40, (20,), generator=g)
    straight = ESSLoss(k=3, reg_refresh_every=3, reg_candidates=2)
    first = ESSLoss(k=3, reg_refresh_every=3, reg_candidates=2)
    for mu in tables[:2]:
        straight(x, y, mu)
        first(x, y, mu)
    state = first.state_dict()
    assert state["_extra_state"]["calls"] == 2 and state["_extra_state"]["reg_cache"].shape == (40, 2)
    resumed = ESSLoss(k=3, reg_refresh_every=3, reg_candidates=2)
    resumed.load_state_dict(state)
    fresh = ESSLoss(k=3, reg_refresh_every=3, reg_candidates=2)  # what a resume did before: refresh at once
    differs = []
    for mu in tables[2:]:
        straight(x, y, mu)
        resumed(x, y, mu)
        fresh(x, y, mu)
        assert torch.equal(straight.terms["reg"], resumed.terms["reg"])
        differs.append(not torch.equal(straight.terms["reg"], fresh.terms["reg"]))
    assert any(differs)  # the test can tell a restored state from a fresh one
