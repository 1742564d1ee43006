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


BACKEND_OPTIONS = [("torch", {}), ("faiss", {}), ("faiss", {"nlist": 4, "nprobe": 2}), ("clustered", {"nlist": 4, "nprobe": 2})]


@pytest.mark.parametrize("backend, options", BACKEND_OPTIONS)
@pytest.mark.parametrize("c", [20, 64])  # 20: the torch search pads the table to whole groups of 32
def test_non_finite_inputs_give_valid_ids(backend, options, c):
    if backend == "faiss":
        pytest.importorskip("faiss")
    g = torch.Generator().manual_seed(c)
    q, db = torch.randn(40, 6, generator=g), torch.randn(c, 6, generator=g)
    q[3], q[7, 2], q[9] = float("nan"), float("inf"), float("-inf")
    bad_db = db.clone()
    bad_db[5], bad_db[11, 0] = float("nan"), float("inf")
    for queries, database in [(q, db), (q, bad_db), (q, torch.full_like(db, float("nan")))]:
        for k in (1, 5, c):
            _, i = knn_search(queries, database, k, backend=backend, **options)
            assert i.shape == (40, k) and i.dtype == torch.int64
            assert int(i.min()) >= 0 and int(i.max()) < c, (k, int(i.min()), int(i.max()))


@pytest.mark.parametrize("c", [20, 64, 500])
def test_torch_exact_ranks_non_finite_classes_last(c):
    # Oracle: brute force with NaN/inf distances as +inf; finite queries get the finite classes first.
    g = torch.Generator().manual_seed(c)
    q, db = torch.randn(30, 6, generator=g, dtype=torch.float64), torch.randn(c, 6, generator=g, dtype=torch.float64)
    db[4], db[c - 1, 3] = float("nan"), float("inf")
    k = c - 2
    d2 = torch.cdist(q, db.nan_to_num(nan=0.0, posinf=0.0)).pow(2)
    d2[:, [4, c - 1]] = float("inf")
    ref_d, ref_i = d2.sort(dim=1, stable=True)
    for tiles in ({}, {"tile_rows": 7, "tile_cols": 64}):
        d, i = torch_exact_search(q, db, k, **tiles)
        assert torch.equal(i, ref_i[:, :k])
        torch.testing.assert_close(d, ref_d[:, :k])
    _, i = torch_exact_search(q, db, c)
    assert set(i[:, -2:].flatten().tolist()) == {4, c - 1}
