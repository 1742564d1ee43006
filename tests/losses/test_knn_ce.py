"""knn_cross_entropy against plain oracles: a direct Eq. 6 loop and F.cross_entropy at k = C-1."""

import pytest
import torch
import torch.nn.functional as F

from esseg.knn import knn_search
from esseg.losses import candidate_sq_dists, drop_target, knn_cross_entropy, knn_negatives, random_negatives


def unit(*shape, gen, dtype=torch.float64, dim=-1):
    return F.normalize(torch.randn(*shape, generator=gen, dtype=dtype), dim=dim)


def eq6_oracle(x, y, mu, k, tau):
    """Per-pixel Eq. 6 written plainly: sort all distances, take the k nearest non-targets."""
    losses = []
    for xi, yi in zip(x, y):
        d2 = ((xi - mu) ** 2).sum(1)
        order = [c for c in d2.argsort().tolist() if c != int(yi)][:k]
        z = -d2[[int(yi)] + order] / tau
        losses.append(torch.logsumexp(z, 0) - z[0])
    return torch.stack(losses).mean()


@pytest.mark.parametrize("k", [1, 3, 7])
def test_equals_direct_eq6(k):
    g = torch.Generator().manual_seed(k)
    x, mu = unit(300, 6, gen=g).requires_grad_(), unit(40, 6, gen=g).requires_grad_()
    y = torch.randint(0, 40, (300,), generator=g)
    loss = knn_cross_entropy(x, y, mu, k=k, tau=0.05)
    ref = eq6_oracle(x, y, mu, k, 0.05)
    torch.testing.assert_close(loss, ref)
    for a, b in zip(torch.autograd.grad(loss, [x, mu]), torch.autograd.grad(ref, [x, mu])):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-4), (torch.float64, 1e-10)])
@pytest.mark.parametrize("k_extra", [0, 5])  # k = C-1 and k > C-1 both mean "all other classes"
def test_full_k_equals_softmax_cross_entropy(dtype, tol, k_extra):
    g = torch.Generator().manual_seed(0)
    c = 23
    x = unit(2, 5, 8, 8, gen=g, dtype=dtype, dim=1).requires_grad_()
    mu = unit(c, 5, gen=g, dtype=dtype).requires_grad_()
    y = torch.randint(0, c, (2, 8, 8), generator=g)
    y[0, :2] = 255
    loss = knn_cross_entropy(x, y, mu, k=c - 1 + k_extra, tau=0.05)
    logits = -torch.cdist(x.permute(0, 2, 3, 1).reshape(-1, 5), mu).pow(2) / 0.05
    ref = F.cross_entropy(logits, y.reshape(-1), ignore_index=255)
    torch.testing.assert_close(loss, ref, atol=tol, rtol=tol)
    for a, b in zip(torch.autograd.grad(loss, [x, mu]), torch.autograd.grad(ref, [x, mu])):
        torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.mark.parametrize("backend", ["torch", "clustered"])
def test_knn_negatives_are_distinct_non_targets(backend):
    g = torch.Generator().manual_seed(1)
    x, mu = unit(500, 4, gen=g), unit(30, 4, gen=g)
    y = torch.randint(0, 30, (500,), generator=g)
    neg = knn_negatives(x, y, mu, 7, backend=backend, **({"nlist": 10, "nprobe": 1} if backend == "clustered" else {}))
    assert neg.shape == (500, 7) and neg.dtype == torch.int64
    assert not (neg == y[:, None]).any()
    assert (neg.sort(1).values.diff(dim=1) > 0).all()
    if backend == "torch":  # exactly the nearest others
        d2 = torch.cdist(x, mu).pow(2)
        d2[torch.arange(500), y] = float("inf")
        assert torch.equal(neg.sort(1).values, d2.topk(7, largest=False).indices.sort(1).values)


def test_drop_target_fills_rows_with_repeats():
    idx = torch.tensor([[3, 3, 3, 3], [0, 1, 2, 3], [5, 1, 2, 3]])
    y = torch.tensor([3, 9, 5])
    neg = drop_target(idx, y, 3, num_classes=10)
    assert neg[1].tolist() == [0, 1, 2] and neg[2].tolist() == [1, 2, 3]
    assert len(set(neg[0].tolist())) == 3 and 3 not in neg[0].tolist()


def test_random_negatives_uniform_and_valid():
    g = torch.Generator().manual_seed(2)
    c, k, n = 12, 5, 20000
    y = torch.randint(0, c, (n,), generator=g)
    neg = random_negatives(y, c, k, generator=g)
    assert not (neg == y[:, None]).any()
    assert (neg.sort(1).values.diff(dim=1) > 0).all()
    assert neg.min() >= 0 and neg.max() < c
    # For pixels of class 0 each other class appears with probability k/(C-1).
    rows = neg[y == 0]
    freq = torch.bincount(rows.flatten(), minlength=c)[1:].double() / rows.shape[0]
    torch.testing.assert_close(freq, torch.full_like(freq, k / (c - 1)), atol=0.03, rtol=0)


def test_random_mode_runs_and_differs_from_knn():
    g = torch.Generator().manual_seed(3)
    x, mu = unit(400, 6, gen=g), unit(50, 6, gen=g)
    y = torch.randint(0, 50, (400,), generator=g)
    knn = knn_cross_entropy(x, y, mu, k=4)
    rnd = knn_cross_entropy(x, y, mu, k=4, negatives="random", generator=g)
    assert rnd < knn  # hard (nearest) negatives give the larger loss


def test_ignored_pixels_have_no_effect():
    g = torch.Generator().manual_seed(4)
    x, mu = unit(100, 6, gen=g).requires_grad_(), unit(10, 6, gen=g)
    y = torch.randint(0, 10, (100,), generator=g)
    y[::3] = 255
    loss = knn_cross_entropy(x, y, mu, k=3)
    (grad,) = torch.autograd.grad(loss, [x])
    assert (grad[::3] == 0).all() and grad[1].abs().sum() > 0
    keep = y != 255
    torch.testing.assert_close(loss, knn_cross_entropy(x[keep], y[keep], mu, k=3))
    per_pixel = knn_cross_entropy(x, y, mu, k=3, reduction="none")
    assert per_pixel.shape == (100,) and (per_pixel[::3] == 0).all()
    torch.testing.assert_close(per_pixel[keep].mean(), loss)


def test_all_ignored_gives_zero_with_finite_gradients():
    x = torch.randn(2, 4, 3, 3, requires_grad=True)
    mu = torch.randn(5, 4, requires_grad=True)
    y = torch.full((2, 3, 3), 255)
    loss = knn_cross_entropy(x, y, mu)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(x.grad).all() and torch.isfinite(mu.grad).all()


def test_out_of_range_label_names_the_value():
    x, mu = torch.randn(4, 3), torch.randn(5, 3)
    with pytest.raises(ValueError, match=r"labels must be in \[0, 5\) or equal ignore_index=255; found 7"):
        knn_cross_entropy(x, torch.tensor([0, 1, 7, 2]), mu)
    with pytest.raises(ValueError, match="found -1"):
        knn_cross_entropy(x, torch.tensor([0, 1, -1, 2]), mu)
    with pytest.raises(ValueError, match="ignore_index=255 is a real class id"):
        knn_cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 3]), torch.randn(300, 3))


@pytest.mark.parametrize("h,w,s", [(6, 8, 2), (7, 5, 3), (8, 8, 4)])
def test_query_stride_shares_block_negatives(h, w, s):
    g = torch.Generator().manual_seed(5)
    b, d, c, k = 2, 6, 40, 4
    x = unit(b, d, h, w, gen=g, dim=1).requires_grad_()
    mu = unit(c, d, gen=g).requires_grad_()
    y = torch.randint(0, c, (b, h, w), generator=g)
    y[0, 0, 0] = 255
    y[1, :s, :s] = 255  # a fully ignored block
    loss = knn_cross_entropy(x, y, mu, k=k, query_stride=s)
    # Oracle: each pixel uses the k+1 nearest classes of its block's mean embedding, minus target.
    pooled = F.avg_pool2d(x.detach(), s, s, ceil_mode=True)
    losses = []
    for bi in range(b):
        for i in range(h):
            for j in range(w):
                if y[bi, i, j] == 255:
                    continue
                q = pooled[bi, :, i // s, j // s]
                near = ((q - mu) ** 2).sum(1).argsort()[: k + 1].tolist()
                t = int(y[bi, i, j])
                neg = [n for n in near if n != t][:k]
                z = -((x[bi, :, i, j] - mu[[t] + neg]) ** 2).sum(1) / 0.05
                losses.append(torch.logsumexp(z, 0) - z[0])
    ref = torch.stack(losses)
    torch.testing.assert_close(loss, ref.mean())
    for a, r in zip(torch.autograd.grad(loss, [x, mu]), torch.autograd.grad(ref.mean(), [x, mu])):
        torch.testing.assert_close(a, r)
    none = knn_cross_entropy(x, y, mu, k=k, query_stride=s, reduction="none")
    assert none.shape == (b, h, w) and (none[y == 255] == 0).all()
    torch.testing.assert_close(none[y != 255], ref.detach())
    assert not torch.allclose(loss, knn_cross_entropy(x, y, mu, k=k))


def test_query_stride_with_all_other_classes_equals_full_softmax():
    g = torch.Generator().manual_seed(7)
    x = unit(2, 5, 8, 8, gen=g, dim=1).requires_grad_()
    mu = unit(11, 5, gen=g).requires_grad_()
    y = torch.randint(0, 11, (2, 8, 8), generator=g)
    loss = knn_cross_entropy(x, y, mu, k=10, query_stride=4)
    ref = F.cross_entropy(-torch.cdist(x.permute(0, 2, 3, 1).reshape(-1, 5), mu).pow(2) / 0.05, y.reshape(-1))
    torch.testing.assert_close(loss, ref)


def test_candidate_sq_dists_gradcheck():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    cand = torch.randint(0, 5, (7, 4), generator=g)
    torch.testing.assert_close(candidate_sq_dists(x, mu, cand), ((x[:, None] - mu[cand]) ** 2).sum(-1))
    assert torch.autograd.gradcheck(candidate_sq_dists, (x, mu, cand))


def test_block_sq_dists_gradcheck_and_saved_tensors():
    from esseg.losses.knn_ce import _BlockSqDist

    g = torch.Generator().manual_seed(8)
    u, p, d, c, kk = 3, 4, 3, 6, 5
    x = torch.randn(u, p, d, generator=g, dtype=torch.float64, requires_grad=True)
    mu = torch.randn(c, d, generator=g, dtype=torch.float64, requires_grad=True)
    cand = torch.randint(0, c, (u, kk), generator=g)  # repeats and targets among the candidates on purpose
    target = torch.randint(0, c, (u, p), generator=g)
    d2, d2_t = _BlockSqDist.apply(x, mu, cand, target)
    torch.testing.assert_close(d2, ((x[:, :, None] - mu[cand][:, None]) ** 2).sum(-1))
    torch.testing.assert_close(d2_t, ((x - mu[target]) ** 2).sum(-1))
    assert torch.autograd.gradcheck(lambda a, b: _BlockSqDist.apply(a, b, cand, target), (x, mu))
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        _BlockSqDist.apply(x, mu, cand, target)
    assert max(sizes) <= u * p * d  # x, mu and the indices; never a (U, K, d) gather


def test_graph_keeps_no_gathered_candidates():
    # Saved tensors: x (N,d), mu (C,d), candidates (N,k+1) -- never an (N, k+1, d) gather.
    n, d, c, k = 512, 8, 64, 7
    x = torch.randn(n, d, requires_grad=True)
    mu = torch.randn(c, d, requires_grad=True)
    y = torch.randint(0, c, (n,))
    sizes = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
        knn_cross_entropy(x, y, mu, k=k)
    assert max(sizes) <= n * d, max(sizes)


def test_query_stride_with_approximate_backend_never_counts_a_class_twice():
    g = torch.Generator().manual_seed(8)
    x = unit(1, 4, 8, 8, gen=g, dim=1)
    mu = unit(12, 4, gen=g)
    y = torch.randint(0, 12, (1, 8, 8), generator=g)
    opts = dict(backend="clustered", nlist=12, nprobe=2)  # 2 candidates, padded with repeats
    loss = knn_cross_entropy(x, y, mu, k=5, query_stride=4, **opts)
    pooled = F.avg_pool2d(x, 4, 4).permute(0, 2, 3, 1).reshape(-1, 4)
    cand = knn_search(pooled, mu, 6, **opts)[1]
    losses = []
    for i in range(8):
        for j in range(8):
            t = int(y[0, i, j])
            distinct = list(dict.fromkeys(cand[(i // 4) * 2 + j // 4].tolist()))
            neg = [c for c in distinct if c != t][:5]
            z = -((x[0, :, i, j] - mu[[t] + neg]) ** 2).sum(1) / 0.05
            losses.append(torch.logsumexp(z, 0) - z[0])
    torch.testing.assert_close(loss, torch.stack(losses).mean())
