"""ESSLoss with the training index: oracle equality, logged terms, resume, class ids beyond 65535."""

import pytest
import torch
import torch.nn.functional as F

from esseg.data.base import default_ignore_index
from esseg.losses import ESSLoss, knn_cross_entropy


def unit(shape, seed, dim=-1, dtype=torch.float32):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype), dim=dim)


@pytest.mark.parametrize("stride", [1, 2])
def test_index_probing_every_list_equals_exact_loss_and_gradients(stride):
    x = unit((2, 8, 6, 6), 0, dim=1, dtype=torch.float64)  # float64: no near-ties between the two paths
    y = torch.randint(0, 300, (2, 6, 6), generator=torch.Generator().manual_seed(1))
    y[0, 0, :3] = 255 + 300  # ignored
    mu = unit((300, 8), 2, dtype=torch.float64)
    out = []
    for options in ({"backend": "torch"}, {"backend": "ivf", "nlist": 16, "nprobe": 16}):
        xs, ms = x.clone().requires_grad_(), mu.clone().requires_grad_()
        crit = ESSLoss(k=5, query_stride=stride, ignore_index=555, reg_weight=0.0, **options)
        loss = crit(xs, y, ms)
        loss.backward()
        out.append((loss, xs.grad, ms.grad, crit.terms))
    (l0, gx0, gm0, t0), (l1, gx1, gm1, t1) = out
    torch.testing.assert_close(l1, l0)
    torch.testing.assert_close(gx1, gx0)
    torch.testing.assert_close(gm1, gm0)
    assert "knn_recall" not in t0 and t1["knn_recall"] == 1.0 and t1["index_build_s"] >= 0


def test_partial_probe_loss_is_close_and_recall_is_logged():
    x, mu = unit((4000, 8), 3), unit((3000, 8), 4)
    y = torch.randint(0, 3000, (4000,), generator=torch.Generator().manual_seed(5))
    exact = knn_cross_entropy(x, y, mu, k=7, ignore_index=-1, backend="torch")
    crit = ESSLoss(k=7, reg_weight=0.0, ignore_index=-1, backend="ivf", nlist=100, nprobe=6)
    approx = crit(x, y, mu)
    # Missed negatives are farther ones, so the approximate loss is slightly lower, never higher.
    assert exact * 0.97 <= approx <= exact + 1e-6
    assert 0.6 < crit.terms["knn_recall"] < 1.0


def test_auto_uses_the_index_above_the_threshold(monkeypatch):
    import esseg.knn.search as search

    monkeypatch.setattr(search, "AUTO_INDEX_MIN_CLASSES", 100)
    monkeypatch.setattr(search, "AUTO_INDEX_MIN_CLASSES_FAISS", 100)
    x, y, mu = unit((50, 4), 6), torch.randint(0, 200, (50,)), unit((200, 4), 7)
    crit = ESSLoss(k=3, ignore_index=-1)
    crit(x, y, mu)
    assert crit.search_backend(200) == "ivf" and "knn_recall" in crit.terms and crit.index.index is not None
    crit_small = ESSLoss(k=3)
    crit_small(x, y % 99, mu[:99])
    assert crit_small.search_backend(99) in ("torch", "faiss") and "knn_recall" not in crit_small.terms


def test_training_index_state_survives_resume_exactly():
    g = torch.Generator().manual_seed(8)
    tables = [F.normalize(torch.randn(500, 4, generator=g, dtype=torch.float64), dim=1) for _ in range(7)]
    x = F.normalize(torch.randn(300, 4, generator=g, dtype=torch.float64), dim=1)
    y = torch.randint(0, 500, (300,), generator=g)
    opts = dict(k=3, ignore_index=-1, backend="ivf", nlist=20, nprobe=2, index_refresh_every=3, reg_candidates=2)
    straight, first = ESSLoss(**opts), ESSLoss(**opts)
    for mu in tables[:4]:
        straight(x, y, mu)
        first(x, y, mu)
    state = first.state_dict()
    assert state["_extra_state"]["index"]["assign"].shape == (500,)
    resumed, fresh = ESSLoss(**opts), ESSLoss(**opts)
    resumed.load_state_dict(state)
    differs = []
    for mu in tables[4:]:
        a, b, c = straight(x, y, mu), resumed(x, y, mu), fresh(x, y, mu)
        assert torch.equal(a, b) and straight.terms["knn_recall"] == resumed.terms["knn_recall"]
        differs.append(not torch.equal(a, c))
    assert any(differs)


def test_class_ids_beyond_65535():
    assert default_ignore_index(255) == 255 and default_ignore_index(65535) == 65535
    assert default_ignore_index(65536) == 2**31 - 1 and default_ignore_index(1_000_000) == 2**31 - 1
    c = 100_000
    ignore = default_ignore_index(c)
    mu = unit((c, 4), 9)
    y = torch.tensor([0, 65535, 99_999, ignore, 70_000])
    x = unit((5, 4), 10)
    loss = ESSLoss(k=3, ignore_index=ignore, reg_weight=0.0)(x, y, mu)
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match=r"e\.g\. 2147483647 or -1"):
        ESSLoss(k=3, ignore_index=65535)(x, y, mu)


def test_unknown_backend_fails_at_construction():
    from esseg.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown knn backend 'annoy'; known backends: auto, torch"):
        ESSLoss(backend="annoy")
