"""The inverted-file index and the auto backend against brute force: cdist + sort."""

import builtins

import pytest
import torch
import torch.nn.functional as F

from esseg.errors import ConfigError
from esseg.knn import AUTO_INDEX_MIN_CLASSES, IVFIndex, knn_search, resolve_backend
from esseg.knn.index import RefreshedIndex, recall_at_k


def brute_force(q, db, k):
    d2 = torch.cdist(q.double(), db.double()).pow(2)
    v, i = d2.sort(1)
    return v[:, :k], i[:, :k]


def unit(n, d, seed):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("c,k,nlist", [(1, 1, 1), (9, 9, 3), (300, 8, 17), (2100, 16, 64)])
def test_probing_every_list_equals_brute_force(c, k, nlist):
    q, db = unit(257, 6, c), unit(c, 6, c + 1)
    index = IVFIndex(db, nlist=nlist)
    d, i = index.search(q, k, nprobe=nlist)
    rd, ri = brute_force(q, db, k)
    assert i.dtype == torch.int64 and i.shape == (257, k)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d.double(), rd, atol=1e-5, rtol=1e-5)
    _, i2 = knn_search(q, db, k, backend="ivf", nlist=nlist, nprobe=nlist)
    assert torch.equal(i2, ri)


def test_partial_probe_rows_are_distinct_valid_and_exact_distances():
    q, db = unit(500, 12, 0), unit(3000, 12, 1)
    index = IVFIndex(db, nlist=60)
    d, i = index.search(q, 8, nprobe=2)  # few lists: some rows need the exact fallback
    assert int(i.min()) >= 0 and int(i.max()) < 3000
    assert all(len(set(row)) == 8 for row in i.tolist())
    ref = (q.unsqueeze(1) - db[i]).pow(2).sum(-1)
    torch.testing.assert_close(d, ref, atol=1e-5, rtol=1e-5)
    assert (d[:, 1:] >= d[:, :-1]).all()
    recall = recall_at_k(index.search(q, 8)[1], brute_force(q, db, 8)[1])
    assert 0.85 <= recall < 1.0  # default nprobe: approximate but good


def test_search_follows_a_moved_table_and_refresh_is_deterministic():
    db, moved = unit(800, 6, 2), unit(800, 6, 3)
    a, b = IVFIndex(db, nlist=20, seed=4), IVFIndex(db, nlist=20, seed=4)
    assert torch.equal(a.assign, b.assign)
    q = unit(100, 6, 5)
    _, i = a.search(q, 5, database=moved, nprobe=20)  # old partition, new vectors: still exact over all lists
    assert torch.equal(i, brute_force(q, moved, 5)[1])
    restored = IVFIndex(moved, assign=a.assign, nlist=20)
    assert torch.equal(restored.search(q, 5, nprobe=7)[1], a.search(q, 5, nprobe=7)[1])


@pytest.mark.parametrize("backend", ["ivf", "faiss_ivf", "faiss_hnsw"])
def test_index_backends_give_valid_ids_with_non_finite_values(backend):
    if backend.startswith("faiss"):
        pytest.importorskip("faiss")
    q, db = unit(40, 6, 6), unit(64, 6, 7)
    q[3], q[7, 2], q[9] = float("nan"), float("inf"), float("-inf")
    bad_db = db.clone()
    bad_db[5], bad_db[11, 0] = float("nan"), float("inf")
    for database in (db, bad_db):
        for k in (1, 5, 64):
            _, i = knn_search(q, database, k, backend=backend, nlist=4, nprobe=2)
            assert i.shape == (40, k) and int(i.min()) >= 0 and int(i.max()) < 64
            assert all(len(set(row)) == k for row in i.tolist())
    # finite queries never get a non-finite class before a finite one
    _, i = knn_search(q[10:], bad_db, 3, backend="ivf", nlist=4, nprobe=4)
    assert not ((i == 5) | (i == 11)).any()


def test_faiss_index_backends_rerank_exactly():
    pytest.importorskip("faiss")
    q, db = unit(300, 12, 8), unit(2000, 12, 9)
    rd, ri = brute_force(q, db, 8)
    for backend in ("faiss_ivf", "faiss_hnsw"):
        d, i = knn_search(q, db, 8, backend=backend, nlist=40, nprobe=40)
        assert recall_at_k(i, ri) > 0.95, backend
        torch.testing.assert_close(d, (q.unsqueeze(1) - db[i]).pow(2).sum(-1), atol=1e-5, rtol=1e-5)


def test_auto_backend_threshold_and_cache_invalidation(monkeypatch):
    import esseg.knn.search as search_module
    from esseg.knn import AUTO_INDEX_MIN_CLASSES_FAISS

    monkeypatch.setattr(search_module, "_FAISS_AVAILABLE", False)
    assert resolve_backend(AUTO_INDEX_MIN_CLASSES - 1) == "torch"
    assert resolve_backend(AUTO_INDEX_MIN_CLASSES) == "ivf"
    monkeypatch.setattr(search_module, "_FAISS_AVAILABLE", True)  # FAISS installed: flat FAISS on CPU tables
    assert resolve_backend(AUTO_INDEX_MIN_CLASSES_FAISS - 1) == "faiss"
    assert resolve_backend(AUTO_INDEX_MIN_CLASSES_FAISS - 1, device="cpu") == "faiss"
    assert resolve_backend(AUTO_INDEX_MIN_CLASSES_FAISS) == "ivf"
    assert resolve_backend(AUTO_INDEX_MIN_CLASSES - 1, device="cuda") == "torch"  # GPU tables: exact torch search
    assert resolve_backend(AUTO_INDEX_MIN_CLASSES, device="cuda") == "ivf"
    assert resolve_backend(10, "faiss") == "faiss"
    q, db = unit(50, 4, 10), unit(200, 4, 11)
    ref = brute_force(q, db, 3)[1]
    assert torch.equal(knn_search(q, db, 3, backend="ivf", nlist=5, nprobe=5)[1], ref)
    db[:] = unit(200, 4, 12)  # same tensor, new values: the cached index must not be reused
    assert torch.equal(knn_search(q, db, 3, backend="ivf", nlist=5, nprobe=5)[1], brute_force(q, db, 3)[1])


def test_bad_input_one_clear_line_each(monkeypatch):
    q, db = unit(10, 4, 13), unit(30, 4, 14)
    index = IVFIndex(db, nlist=5)
    cases = [
        (lambda: knn_search(q, db, 2, backend="annoy"), "unknown knn backend 'annoy'; known backends: auto, torch"),
        (lambda: index.search(q, 2, nprobe=6), r"nprobe=6 must be in \[1, nlist=5\]"),
        (lambda: IVFIndex(db, nlist=5, nprobe=9), r"nprobe=9 must be in \[1, nlist=5\]"),
        (lambda: index.search(q, 31), r"k=31 must be in \[1, C=30\]"),
        (lambda: index.search(unit(10, 6, 1), 2), "built for d=4.*rebuild the index"),
        (lambda: index.search(q, 2, database=unit(30, 6, 1)), "built for d=4.*rebuild the index"),
        (lambda: IVFIndex(db, nlist=31), r"nlist=31 must be in \[1, C=30\]"),
    ]
    for call, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            call()
        assert "\n" not in str(err.value)
    real_import = builtins.__import__

    def no_faiss(name, *args, **kwargs):
        if name == "faiss":
            raise ImportError("no faiss")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_faiss)
    for backend in ("faiss", "faiss_ivf", "faiss_hnsw"):
        with pytest.raises(ConfigError, match=r'pip install "esseg\[faiss\]"'):
            knn_search(q, unit(31, 4, 15), 2, backend=backend)


def test_refreshed_index_refreshes_measures_recall_and_restores_exactly():
    tables = [unit(600, 6, 20 + t) for t in range(6)]
    q = unit(200, 6, 30)
    idx = RefreshedIndex(refresh_every=3, nlist=12, nprobe=3, seed=1, recall_queries=50)
    rebuilt, results = [], []
    for it, mu in enumerate(tables[:4]):
        rebuilt.append(idx.step(mu, it))
        _, i = idx.search(q, 4, database=mu)
        results.append(i)
        if it in (0, 2, 3):  # a refresh step, and the step before the next refresh
            rows = torch.linspace(0, 199, 50).long()
            assert idx.recall == recall_at_k(i[rows], brute_force(q[rows], mu, 4)[1])
    assert rebuilt == [True, False, False, True]
    assert 0.5 < idx.recall < 1.0
    state = idx.state()
    resumed = RefreshedIndex(refresh_every=3, nlist=12, nprobe=3, seed=1, recall_queries=50)
    resumed.load(state)
    fresh = RefreshedIndex(refresh_every=3, nlist=12, nprobe=3, seed=1, recall_queries=50)
    differs = []
    for it, mu in enumerate(tables[4:], start=4):
        for ix in (idx, resumed, fresh):
            ix.step(mu, it)
        a, b, c = (ix.search(q, 4, database=mu)[1] for ix in (idx, resumed, fresh))
        assert torch.equal(a, b)
        differs.append(not torch.equal(a, c))
    assert any(differs)  # the test can tell a restored partition from a rebuilt one


def test_nearest_class_uses_the_cached_index_and_follows_table_changes(monkeypatch):
    import esseg.knn.search as search
    from esseg.models.segmenter import nearest_class, search_agreement

    monkeypatch.setattr(search, "AUTO_INDEX_MIN_CLASSES", 100)
    monkeypatch.setattr(search, "AUTO_INDEX_MIN_CLASSES_FAISS", 100)
    x, mu = unit(2 * 5 * 7, 6, 40).view(2, 7, 5, 6).permute(0, 3, 2, 1), unit(400, 6, 41)
    exact = nearest_class(x, mu, backend="torch")
    assert exact.shape == (2, 5, 7)
    built = []
    real = search.IVFIndex
    monkeypatch.setattr(search, "IVFIndex", lambda *a, **kw: built.append(1) or real(*a, **kw))
    fast = nearest_class(x, mu)
    assert (fast == exact).float().mean() > 0.9
    nearest_class(x, mu.clone())  # same values: the cached index is reused
    assert len(built) == 1
    mu2 = unit(400, 6, 42)
    assert (nearest_class(x, mu2) == nearest_class(x, mu2, backend="torch")).float().mean() > 0.9
    assert len(built) == 2  # a changed table rebuilds
    agreement = search_agreement(x, mu2, sample=50)
    assert agreement == float((nearest_class(x, mu2) == nearest_class(x, mu2, backend="torch")).float().mean())
    assert search_agreement(x, mu2[:99]) is None  # exact search below the threshold: nothing to compare


def test_neighbours_within_lists_equal_brute_force_inside_each_block():
    db = unit(500, 5, 50)
    db[7] = float("nan")
    assign = torch.arange(500) % 5
    assign[[0, 1, 2]] = 5  # a list of 3 classes: too few block members for m = 3
    index = IVFIndex(db, nlist=6, assign=assign)
    found = index.neighbours_within_lists(3)
    assert found.shape == (500, 3) and not (found == torch.arange(500).unsqueeze(1)).any()
    assert int(found.min()) >= 0 and int(found.max()) < 500
    d2 = torch.cdist(db.double().nan_to_num(), db.double().nan_to_num()).pow(2)
    d2[:, 7] = d2[7, :] = float("inf")
    d2.fill_diagonal_(float("inf"))
    same = torch.zeros(500, 500, dtype=torch.bool)
    for row in index.block_ids.tolist():
        ids = torch.tensor([i for i in row if i < 500])
        same[ids.unsqueeze(1), ids] = True
    ref = d2.masked_fill(~same, float("inf")).sort(1)[1][:, :3]
    full = (same.sum(1) >= 4) & (torch.arange(500) != 7)
    assert full.sum() > 450 and torch.equal(found[full], ref[full])
    small = (same.sum(1) < 4) & (torch.arange(500) != 7)  # too few block members: exact over the table
    assert small.any() and torch.equal(found[small], d2.sort(1)[1][:, :3][small])


def test_block_width_minimises_padded_columns_plus_a_per_block_cost():
    from esseg.knn.index import block_width

    counts = torch.tensor([374, 453, 499, 548, 637, 500])
    w = block_width(counts)
    assert w % 8 == 0

    def cost(width):
        return int(sum(-(-int(n) // width) * (width + 64) for n in counts))

    assert cost(w) == min(cost(v) for v in range(8, 4 * 502 + 8, 8))
    assert block_width(torch.tensor([3, 1, 0])) == 8
    index = IVFIndex(unit(300, 4, 1), nlist=7)
    sizes = torch.bincount(index.assign, minlength=7)
    assert torch.equal(index.list_blocks, (sizes + index.width - 1) // index.width)
    assert sorted(i for i in index.block_ids.flatten().tolist() if i < 300) == list(range(300))


def test_default_search_with_faiss_equals_brute_force_and_keeps_the_nan_contract():
    pytest.importorskip("faiss")
    from esseg.knn import resolve_backend as rb

    q, db = unit(300, 12, 21), unit(3000, 12, 22)
    assert rb(db.shape[0], "auto", db.device) == "faiss"
    d, i = knn_search(q, db, 9)  # backend="auto": FAISS IndexFlatL2
    rd, ri = brute_force(q, db, 9)
    assert torch.equal(i, ri)
    torch.testing.assert_close(d.double(), rd, atol=1e-5, rtol=1e-5)
    assert rb(db.shape[0], "auto", db.device, torch.float64) == "torch"  # FAISS is float32 only
    db[5] = float("nan")
    q[3] = float("nan")
    d, i = knn_search(q, db, 9)
    assert int(i.min()) >= 0 and int(i.max()) < 3000
    assert not (i[torch.arange(300) != 3] == 5).any()  # a NaN class is nobody's neighbour


def test_faiss_runs_single_threaded_in_a_child_forked_after_multithreaded_use(monkeypatch):
    import esseg.knn.search as search_module

    monkeypatch.setattr(search_module, "_IN_FORKED_CHILD", False)
    monkeypatch.setattr(search_module, "_FAISS_POOL_USED", False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    search_module._after_fork_in_child()  # a fork before any multi-threaded FAISS call: nothing changes
    assert search_module.faiss_threads() == 4 and search_module._FAISS_POOL_USED
    search_module._after_fork_in_child()  # a fork after it: the child keeps FAISS on one thread
    assert search_module.faiss_threads() == 1


def test_unit_table_recall_does_not_depend_on_the_query_length():
    # model.unit_pixels=false: unit class rows, pixel queries of any length. Probing lists by the
    # query's direction gives the unit query's neighbours (L2 probing lost recall for short queries: 0.89).
    q, db = unit(500, 12, 0), unit(3000, 12, 1)
    index = IVFIndex(db, nlist=60)
    assert index.unit
    ids = index.search(q, 8)[1]
    exact = brute_force(q, db, 8)[1]
    for r in (0.05, 20.0):
        scaled = index.search(q * r, 8)[1]
        assert (scaled == ids).float().mean() > 0.995, r
        assert recall_at_k(scaled, brute_force(q * r, db, 8)[1]) >= recall_at_k(ids, exact) - 0.005
    # a table that is not unit length keeps L2 probing (and exactness when every list is probed)
    long_rows = db * torch.linspace(0.5, 2, 3000).unsqueeze(1)
    index = IVFIndex(long_rows, nlist=60)
    assert not index.unit
    assert torch.equal(index.search(q * 0.05, 8, nprobe=60)[1], brute_force(q * 0.05, long_rows, 8)[1])
