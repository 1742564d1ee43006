"""max_margin_loss against the brute-force C x C formula of Eq. 7."""

import pytest
import torch

from esseg.losses import max_margin_loss, nearest_other


def brute_force(mu, margin):
    d = torch.cdist(mu, mu)
    d = d + torch.diag(torch.full((mu.shape[0],), float("inf"), dtype=mu.dtype))
    return torch.relu(margin - d.min(1).values).mean()


@pytest.mark.parametrize("c,d,margin", [(2, 3, 5.0), (17, 4, 0.5), (300, 6, 0.8)])
def test_equals_brute_force(c, d, margin):
    g = torch.Generator().manual_seed(c)
    mu = torch.nn.functional.normalize(torch.randn(c, d, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    loss = max_margin_loss(mu, margin)
    ref = brute_force(mu, margin)
    assert ref > 0  # the margin is active for some classes
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, mu)[0], torch.autograd.grad(ref, mu)[0])


def test_nearest_other_never_self_even_with_duplicates():
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    nn = nearest_other(mu)
    assert nn.tolist()[:2] == [1, 0] and nn[2] != 2
    loss = max_margin_loss(mu.requires_grad_(), 0.5)
    loss.backward()
    assert torch.isfinite(mu.grad).all()


def test_zero_when_classes_are_far_apart():
    assert max_margin_loss(torch.eye(5) * 10, 0.5).item() == 0


def test_needs_two_classes():
    with pytest.raises(ValueError, match="at least 2 classes"):
        max_margin_loss(torch.randn(1, 3))


@pytest.mark.slow
def test_runs_at_100k_classes():
    g = torch.Generator().manual_seed(0)
    mu = torch.nn.functional.normalize(torch.randn(100_000, 12, generator=g), dim=1).requires_grad_()
    loss = max_margin_loss(mu, 0.5)  # backend="auto": the inverted-file index at this C
    loss.backward()
    assert torch.isfinite(loss) and 0 < loss < 0.5
    # Spot-check 50 classes against their brute-force nearest distance (exact backend).
    rows = torch.arange(0, 100_000, 2000)
    with torch.no_grad():
        d = torch.cdist(mu[rows], mu)
        d[torch.arange(rows.numel()), rows] = float("inf")
        nn = nearest_other(mu.detach(), backend="torch")
        torch.testing.assert_close((mu[rows] - mu[nn[rows]]).norm(dim=1), d.min(1).values, atol=1e-5, rtol=1e-5)
        exact = max_margin_loss(mu.detach(), 0.5, backend="torch")
    # A missed nearest other gives a larger d_i: the index's loss can only be a little smaller.
    assert exact * 0.95 <= loss <= exact + 1e-6


def test_candidate_neighbours_give_the_exact_value():
    g = torch.Generator().manual_seed(5)
    mu = torch.nn.functional.normalize(torch.randn(200, 4, generator=g, dtype=torch.float64), dim=1).requires_grad_()
    cand = nearest_other(mu.detach(), m=8)
    assert cand.shape == (200, 8)
    assert not (cand == torch.arange(200).unsqueeze(1)).any()
    loss = max_margin_loss(mu, 0.6, neighbours=cand)
    ref = brute_force(mu, 0.6)
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(torch.autograd.grad(loss, mu)[0], torch.autograd.grad(ref, mu)[0])


def test_non_finite_class_embeddings_give_valid_neighbours_and_nan_loss():
    # C = 20 < 32: the exact search pads the table with dummy rows, which NaN rows once reached.
    mu = torch.nn.functional.normalize(torch.randn(20, 4, generator=torch.Generator().manual_seed(7)), dim=1)
    mu[3] = float("nan")
    for m in (1, 8):
        others = nearest_other(mu, m=m).view(20, -1)
        assert int(others.min()) >= 0 and int(others.max()) < 20
        assert not (others == torch.arange(20).unsqueeze(1)).any()
        assert (others[torch.arange(20) != 3] != 3).all()  # the NaN class is nobody's nearest
    assert torch.isnan(max_margin_loss(mu))
    assert torch.isnan(max_margin_loss(torch.full((20, 4), float("nan"))))


def plain_margin(mu, nearest, margin):
    """The unfused expression the fused regulariser replaces (autograd differentiates it)."""
    d2 = (mu - mu[nearest]).pow(2).sum(1)
    return torch.relu(margin - d2.clamp_min(1e-12).sqrt()).mean()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_margin_equals_the_plain_expression_over_chunks(monkeypatch, dtype):
    import esseg.losses.margin as margin_module

    monkeypatch.setattr(margin_module, "MARGIN_CHUNK_ROWS", 7)  # several chunks, a ragged last one
    g = torch.Generator().manual_seed(3)
    mu = torch.nn.functional.normalize(torch.randn(50, 5, generator=g, dtype=dtype), dim=1)
    mu[10] = mu[11]  # a duplicate pair: distance 0, clamped, no gradient through it
    mu.requires_grad_()
    nearest = torch.randint(0, 50, (50,), generator=g)
    nearest = torch.where(nearest == torch.arange(50), (nearest + 1) % 50, nearest)
    nearest[10], nearest[11] = 11, 10
    for margin in (0.3, 1.5):
        fused = max_margin_loss(mu, margin, neighbours=nearest)
        ref = plain_margin(mu, nearest, margin)
        assert 0 < ref
        torch.testing.assert_close(fused, ref)
        torch.testing.assert_close(torch.autograd.grad(fused, mu)[0], torch.autograd.grad(ref, mu)[0])


def test_fused_margin_gradcheck():
    g = torch.Generator().manual_seed(4)
    mu = torch.randn(12, 3, generator=g, dtype=torch.float64).requires_grad_()
    nearest = (torch.arange(12) + 1) % 12
    assert torch.autograd.gradcheck(lambda m: max_margin_loss(m, 2.0, neighbours=nearest), (mu,))
