"""exact_cross_entropy against F.cross_entropy on materialised logits."""

import pytest
import torch
import torch.nn.functional as F

from esseg.losses import exact_cross_entropy


def reference(x, y, mu, tau, ignore_index=255, reduction="mean"):
    return F.cross_entropy(-torch.cdist(x, mu).pow(2) / tau, y, ignore_index=ignore_index, reduction=reduction)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.float64, 1e-10)])
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64])
def test_equals_cross_entropy_on_logits(dtype, tol, chunk_size):
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(257, 6, generator=g, dtype=dtype), dim=1).requires_grad_()
    mu = F.normalize(torch.randn(50, 6, generator=g, dtype=dtype), dim=1).requires_grad_()
    y = torch.randint(0, 50, (257,), generator=g)
    y[::5] = 255
    loss = exact_cross_entropy(x, y, mu, tau=0.05, chunk_size=chunk_size)
    ref = reference(x, y, mu, 0.05)
    torch.testing.assert_close(loss, ref, atol=tol, rtol=tol)
    for a, b in zip(torch.autograd.grad(loss, [x, mu]), torch.autograd.grad(ref, [x, mu])):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


def test_unnormalised_inputs_and_4d_none_reduction():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(9, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 9, (2, 5, 6), generator=g)
    y[1, 2] = 255
    out = exact_cross_entropy(x, y, mu, tau=0.7, reduction="none", chunk_size=4)
    flat = x.permute(0, 2, 3, 1).reshape(-1, 4)
    ref = reference(flat, y.reshape(-1), mu, 0.7, reduction="none").view(2, 5, 6)
    torch.testing.assert_close(out, ref)
    w = torch.randn(2, 5, 6, generator=g, dtype=torch.float64)
    for a, b in zip(torch.autograd.grad((out * w).sum(), [x, mu]), torch.autograd.grad((ref * w).sum(), [x, mu])):
        torch.testing.assert_close(a, b)


def test_gradcheck():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(11, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(6, 3, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 6, (11,), generator=g)
    assert torch.autograd.gradcheck(lambda a, b: exact_cross_entropy(a, y, b, tau=0.5, chunk_size=4), (x, mu))


def test_sum_reduction_and_all_ignored():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(20, 3, generator=g, requires_grad=True)
    mu = torch.randn(4, 3, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (20,), generator=g)
    torch.testing.assert_close(exact_cross_entropy(x, y, mu, reduction="sum"), reference(x, y, mu, 0.05, reduction="sum"))
    loss = exact_cross_entropy(x, torch.full((20,), 255), mu)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(x.grad).all() and torch.isfinite(mu.grad).all()


def test_memory_does_not_grow_with_classes():
    # No tensor the graph keeps, nor any block, is N x C: saved tensors stay O(N d + C d).
    n, d, c = 1024, 8, 5000
    x = torch.randn(n, d, requires_grad=True)
    mu = torch.randn(c, d, requires_grad=True)
    y = torch.randint(0, c, (n,))
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        loss = exact_cross_entropy(x, y, mu, chunk_size=256, ignore_index=-1)
    assert max(sizes) <= c * d
    loss.backward()


def test_bad_labels():
    with pytest.raises(ValueError, match="found 9"):
        exact_cross_entropy(torch.randn(3, 2), torch.tensor([0, 9, 1]), torch.randn(4, 2))
