"""`esseg bench knn` in --quick mode, shared (strided) search and recall."""

import pytest
import torch
import torch.nn.functional as F
from bench_helpers import ratio, read_outputs, recompute

from esseg import knn_search
from esseg.bench import knn as knn_bench
from esseg.cli import main


def test_knn_quick_rows_recall_and_goal(tmp_path):
    out = tmp_path / "knn"
    assert main(["bench", "knn", "--quick", "--threads", "1", "--out", str(out)]) == 0
    rows, data = read_outputs(out, "knn")
    methods = ["torch", "faiss_flat", "faiss_ivf", "clustered", "stride2", "stride4"]
    assert [(r["method"], r["C"]) for r in rows] == [(m, c) for c in ("19", "1284") for m in methods]
    for r in rows:
        assert r["status"] == "ok" and r["k"] == "8" and r["num_queries"] == str(1 * 32 * 32)
        assert 0.0 <= float(r["recall"]) <= 1.0
        if r["method"] in ("torch", "faiss_flat"):
            assert float(r["recall"]) >= 0.999
        if r["method"].startswith("stride"):
            assert r["query_stride"] == r["method"][-1]
    ivf = [r for r in rows if r["method"] == "faiss_ivf"]
    assert [r["nlist"] for r in ivf] == ["4", "36"] and float(ivf[0]["recall"]) == 1.0  # nprobe 8 >= nlist 4: exact
    goal = ratio(data, "goal_torch_over_faiss_flat_C1284")
    assert goal["goal"] == "<= 1.0" and goal["value"] == pytest.approx(recompute(rows, goal), rel=1e-12)
    r = ratio(data, "stride4_over_torch_time_C19")
    assert r["value"] == pytest.approx(recompute(rows, r), rel=1e-12)


def test_knn_without_faiss_marks_rows_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(knn_bench, "faiss_available", lambda: False)
    out = tmp_path / "nofaiss"
    assert main(["bench", "knn", "--quick", "--classes", "19", "--repeats", "1", "--out", str(out)]) == 0
    rows, data = read_outputs(out, "knn")
    assert {r["status"] for r in rows if r["method"].startswith("faiss")} == {"unavailable"}
    assert "pip install" in rows[1]["note"]
    assert ratio(data, "goal_torch_over_faiss_flat_C19")["verdict"] == "n/a"


def test_shared_search_gives_each_pixel_its_blocks_neighbours():
    g = torch.Generator().manual_seed(0)
    field = F.normalize(torch.randn(2, 5, 7, 9, generator=g), dim=1)  # sizes not multiples of the stride
    db = F.normalize(torch.randn(30, 5, generator=g), dim=1)
    idx = knn_bench.shared_search(field, db, 4, 2)
    assert idx.shape == (2 * 7 * 9, 4)
    per_pixel = idx.view(2, 7, 9, 4)
    b, y, x = 1, 5, 8  # block (2, 4): rows 4-5, column 8 only (ceil mode)
    block_mean = field[b, :, 4:6, 8:9].mean((1, 2))
    assert torch.equal(per_pixel[b, y, x], knn_search(block_mean[None], db, 4)[1][0])
    assert torch.equal(per_pixel[b, 4, 8], per_pixel[b, 5, 8])


def test_recall_at_k_counts_exact_neighbours_found():
    exact = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    approx = torch.tensor([[3, 2, 9, 9], [4, 5, 6, 7]])  # 2/4 (duplicates count once) and 4/4
    assert knn_bench.recall_at_k(approx, exact) == pytest.approx(0.75)


def test_clustered_chunked_equals_clustered_backend():
    g = torch.Generator().manual_seed(1)
    q, db = F.normalize(torch.randn(300, 6, generator=g), dim=1), F.normalize(torch.randn(200, 6, generator=g), dim=1)
    ref = knn_search(q, db, 5, backend="clustered", nlist=10, nprobe=3)[1]
    idx, rows = knn_bench.clustered_search_chunked(q, db, 5, 10, 3, max_bytes=20_000)
    assert rows < 300 and torch.equal(idx, ref)
