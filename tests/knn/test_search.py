"""Every kNN backend against brute force: cdist + sort."""

import pytest
import torch

from esseg.knn import ClusteredIndex, knn_search, torch_exact_search


def brute_force(q, db, k):
    d2 = torch.cdist(q.double(), db.double()).pow(2)
    v, i = d2.sort(1)
    return v[:, :k], i[:, :k]


@pytest.mark.parametrize("n,c,k", [(1, 1, 1), (37, 5, 5), (500, 300, 8), (3000, 2100, 16)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_exact_equals_brute_force(n, c, k, dtype):
    g = torch.Generator().manual_seed(n + c)
    q, db = torch.randn(n, 12, generator=g, dtype=dtype), torch.randn(c, 12, generator=g, dtype=dtype)
    d, i = knn_search(q, db, k)
    rd, ri = brute_force(q, db, k)
    assert i.dtype == torch.int64 and d.shape == (n, k) and i.shape == (n, k)
    assert torch.equal(i, ri)
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(d.double(), rd, atol=tol, rtol=tol)
    assert (d[:, 1:] >= d[:, :-1]).all()


def test_small_tiles_merge_across_tiles():
    # Tiles much smaller than N and C exercise the per-tile top-k merge.
    g = torch.Generator().manual_seed(0)
    q, db = torch.randn(300, 6, generator=g, dtype=torch.float64), torch.randn(500, 6, generator=g, dtype=torch.float64)
    ref = brute_force(q, db, 7)[1]
    for group in (1, 3, 16):
        _, i = torch_exact_search(q, db, 7, tile_rows=13, tile_cols=48, group=group)
        assert torch.equal(i, ref), group


def test_no_grad_and_k_errors():
    q = torch.randn(4, 3, requires_grad=True)
    db = torch.randn(6, 3, requires_grad=True)
    d, _ = knn_search(q, db, 2)
    assert not d.requires_grad
    with pytest.raises(ValueError, match="k=7 must be in"):
        knn_search(q, db, 7)
    with pytest.raises(ValueError, match="same embedding_dim"):
        knn_search(q, torch.randn(6, 4), 2)
    with pytest.raises(ValueError, match="unknown knn backend 'annoy'"):
        knn_search(q, db, 2, backend="annoy")


def test_faiss_flat_equals_brute_force():
    pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(1)
    q, db = torch.randn(800, 12, generator=g), torch.randn(1284, 12, generator=g)
    d, i = knn_search(q, db, 8, backend="faiss")
    rd, ri = brute_force(q, db, 8)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d.double(), rd, atol=1e-4, rtol=1e-4)


def _recall(i, ri):
    return (i.unsqueeze(2) == ri.unsqueeze(1)).any(2).float().mean().item()


def test_clustered_exact_when_probing_all_lists():
    g = torch.Generator().manual_seed(2)
    q, db = torch.randn(200, 8, generator=g), torch.randn(400, 8, generator=g)
    _, i = knn_search(q, db, 5, backend="clustered", nlist=10, nprobe=10)
    assert torch.equal(i, brute_force(q, db, 5)[1])


def test_non_exhaustive_recall_on_clustered_data():
    # Class embeddings with structure (groups of nearby classes), as learned tables have.
    g = torch.Generator().manual_seed(3)
    centers = torch.nn.functional.normalize(torch.randn(64, 12, generator=g), dim=1)
    db = torch.nn.functional.normalize(centers.repeat_interleave(50, 0) + 0.15 * torch.randn(3200, 12, generator=g), dim=1)
    q = torch.nn.functional.normalize(db[torch.randint(0, 3200, (2000,), generator=g)] + 0.1 * torch.randn(2000, 12, generator=g), dim=1)
    _, ri = brute_force(q, db, 8)
    index = ClusteredIndex(db, nlist=64)
    recall_1 = _recall(index.search(q, 8, nprobe=1)[1], ri)
    recall_8 = _recall(index.search(q, 8, nprobe=8)[1], ri)
    assert recall_8 >= 0.95, recall_8
    assert recall_8 >= recall_1
    pytest.importorskip("faiss")
    recall_ivf = _recall(knn_search(q, db, 8, backend="faiss", nlist=64, nprobe=8)[1], ri)
    assert recall_ivf >= 0.95, recall_ivf


def test_clustered_pads_when_probed_lists_are_small():
    db = torch.eye(4)
    q = torch.tensor([[1.0, 0, 0, 0]])
    d, i = ClusteredIndex(db, nlist=4).search(q, 3, nprobe=1)
    assert i.shape == (1, 3) and (i >= 0).all() and torch.isfinite(d).all()
    assert i[0, 0] == 0


def test_clustered_search_in_blocks_equals_one_block():
    g = torch.Generator().manual_seed(4)
    q, db = torch.randn(300, 6, generator=g), torch.randn(500, 6, generator=g)
    index = ClusteredIndex(db, nlist=20)
    d1, i1 = index.search(q, 5, nprobe=3)
    d2, i2 = index.search(q, 5, nprobe=3, block_elements=1)  # one query per block
    assert torch.equal(i1, i2) and torch.equal(d1, d2)
