"""``esseg bench knn``: time and recall@k of each kNN search path against exact search, per C.

Queries are built like one training step's: N = batch * crop^2 unit pixel embeddings (d)
from :func:`~esseg.bench.common.smooth_pixel_embeddings` around C random unit class
embeddings (``--queries random``: independent random directions instead). For each path,
the time is the median of ``--repeats`` calls after ``--warmup``, each call doing everything a
training step would redo because the class table changed: building and training an index
included. Paths (all search k neighbours of every pixel):

- ``torch``: ``knn_search(q, mu, k, backend="torch")``, the library's exact search;
- ``faiss_flat``: ``backend="faiss"`` (``IndexFlatL2``, exact); ``faiss_ivf``: ``IndexIVFFlat``
  with ``nlist`` lists (default round(sqrt(C))), ``nprobe`` probed; both need FAISS;
- ``clustered``: ``backend="clustered"`` (k-means + probe in torch, same nlist / nprobe), its
  queries passed in chunks (see :func:`clustered_search_chunked`);
- ``stride2``, ``stride4``: pixel-subsampled search as ``knn_cross_entropy(query_stride=s)``
  does it: average-pool the embeddings over s x s blocks, search exactly for the pooled
  queries, and give every pixel its block's list (the time includes pooling and sharing).

``recall`` = mean over pixels of |approximate list ∩ exact k nearest| / k, against ``torch``.
"""

from __future__ import annotations

import argparse
import math

import torch
import torch.nn.functional as F

from esseg.bench import report
from esseg.bench.common import (
    FULL, QUICK, Settings, add_common_arguments, blocky_labels, median, parse_int_list,
    resolve_settings, smooth_pixel_embeddings, time_repeats, unit_vectors, start,
)
from esseg.bench.report import Ratio, fmt_seconds
from esseg.engine.distributed import resolve_device
from esseg.errors import EssegError
from esseg.knn import faiss_available

HELP = "time and recall@k of each kNN search path (torch, FAISS flat/IVF, clustered, strided) per C"
DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "")

KNN_FULL = dict(FULL, k=8)
KNN_QUICK = dict(QUICK, batch=1)
# Bound on the candidate temporaries of one clustered-search chunk.
CLUSTERED_CHUNK_BYTES = 256 * 2**20
COLUMNS = report.CORE_COLUMNS + ["measure", "status", "recall", "num_queries", "query_stride", "nlist", "nprobe",
                                 "seconds_min", "seconds_max", "threads", "note"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``esseg bench knn``."""
    add_common_arguments(p, KNN_FULL, KNN_QUICK, model=False, k_help="neighbours searched per query")
    p.add_argument("--nlist", type=int, metavar="L", help="lists / clusters of faiss_ivf and clustered (default round(sqrt(C)))")
    p.add_argument("--nprobe", type=int, default=8, metavar="P", help="lists probed per query (default 8)")
    p.add_argument("--strides", default="2,4", metavar="S,S", help="query strides of the subsampled search (default 2,4)")
    p.add_argument("--queries", choices=["smooth", "random"], default="smooth",
                   help="smooth: pixel embeddings like a network's output (default); random: i.i.d. directions")
    p.add_argument("--noise", type=float, default=0.15, help="per-coordinate noise around the class embedding (default 0.15)")


def shared_search(field: torch.Tensor, database: torch.Tensor, k: int, stride: int) -> torch.Tensor:
    """k nearest classes of each s x s block's mean embedding, shared by the block's pixels.

    Args:
        field: (B, d, H, W) pixel embeddings. database: (C, d). stride: s.

    Returns:
        (B*H*W, k) int64 indices, pixel order as ``field.permute(0, 2, 3, 1).reshape(-1, d)``.
    """
    from esseg import knn_search

    b, d, h, w = field.shape
    pooled = F.avg_pool2d(field, stride, stride, ceil_mode=True)
    hb, wb = pooled.shape[2:]
    _, idx = knn_search(pooled.permute(0, 2, 3, 1).reshape(-1, d), database, k, backend="torch")
    rows = torch.arange(h, device=field.device) // stride
    cols = torch.arange(w, device=field.device) // stride
    block = (torch.arange(b, device=field.device).view(b, 1, 1) * hb + rows.view(1, h, 1)) * wb + cols.view(1, 1, w)
    return idx[block.reshape(-1)]


def clustered_search_chunked(queries: torch.Tensor, database: torch.Tensor, k: int, nlist: int, nprobe: int,
                             max_bytes: int = CLUSTERED_CHUNK_BYTES) -> tuple[torch.Tensor, int]:
    """``knn_search(..., backend="clustered")`` (one index build per call), querying in chunks.

    ``ClusteredIndex.search`` gathers an (n, nprobe * largest cluster, d) candidate tensor for
    n queries at once (tens of GiB for a training step's N at C >= 1284), so the queries are
    passed in chunks whose temporaries stay near ``max_bytes``. Returns (indices, rows per chunk).
    """
    from esseg.knn import ClusteredIndex

    index = ClusteredIndex(database, nlist=nlist)
    width = min(nprobe, index.nlist) * index.max_size
    rows = max(1, max_bytes // (3 * 4 * width * database.shape[1]))  # gathered, difference, square
    out = [index.search(queries[i : i + rows], k, nprobe=nprobe)[1] for i in range(0, queries.shape[0], rows)]
    return torch.cat(out), rows


def recall_at_k(approx: torch.Tensor, exact: torch.Tensor) -> float:
    """Mean over rows of the fraction of ``exact``'s k indices that appear in ``approx``'s row."""
    hits = torch.zeros(exact.shape[0], device=exact.device)
    for j in range(exact.shape[1]):
        hits += (approx == exact[:, j : j + 1]).any(1).float()
    return float(hits.mean() / exact.shape[1])


def _paths(s: Settings, args, num_classes: int, faiss_ok: bool):
    from esseg import knn_search

    nlist = args.nlist or max(1, round(math.sqrt(num_classes)))
    paths = {
        "torch": (lambda q, f, db: knn_search(q, db, s.k, backend="torch")[1], dict()),
        "faiss_flat": (lambda q, f, db: knn_search(q, db, s.k, backend="faiss")[1], dict()),
        "faiss_ivf": (lambda q, f, db: knn_search(q, db, s.k, backend="faiss", nlist=nlist, nprobe=args.nprobe)[1],
                      dict(nlist=nlist, nprobe=args.nprobe)),
        "clustered": (lambda q, f, db: clustered_search_chunked(q, db, s.k, nlist, args.nprobe)[0],
                      dict(nlist=nlist, nprobe=args.nprobe, note="queries in chunks (see docs/benchmarks.md)")),
    }
    for stride in args.stride_list:
        paths[f"stride{stride}"] = (lambda q, f, db, stride=stride: shared_search(f, db, s.k, stride),
                                    dict(query_stride=stride))
    unavailable = {} if faiss_ok else {"faiss_flat": "FAISS not installed (pip install \"esseg[faiss]\")",
                                       "faiss_ivf": "FAISS not installed (pip install \"esseg[faiss]\")"}
    return paths, unavailable


def knn_ratios(classes: list[int], methods: list[str]) -> list[Ratio]:
    """Each path's time vs exact torch at equal C, torch vs FAISS flat, and the goal per C."""
    out = []
    for c in classes:
        for m in methods:
            if m != "torch":
                out.append(Ratio(f"{m}_over_torch_time_C{c}", f"{m} / torch exact time at C={c}", "seconds",
                                 dict(method=m, C=c), dict(method="torch", C=c)))
    for c in classes:
        out.append(Ratio(f"goal_torch_over_faiss_flat_C{c}",
                         f"default exact kNN / FAISS IndexFlatL2 at C={c} (same queries, k), time", "seconds",
                         dict(method="torch", C=c), dict(method="faiss_flat", C=c), "<= 1.0"))
    return out


def run(args: argparse.Namespace) -> int:
    """``esseg bench knn``: measure, print, write ``knn.*``."""
    s = resolve_settings(args, KNN_FULL, KNN_QUICK)
    device = resolve_device(s.device)
    args.stride_list = parse_int_list(args.strides, "--strides")
    if min(args.stride_list) < 2:
        raise EssegError(f"--strides must all be >= 2 (stride 1 is the exact search); got {args.strides}")
    if args.nprobe < 1 or (args.nlist is not None and args.nlist < 1):
        raise EssegError("--nlist and --nprobe must be >= 1")
    if s.k > min(s.classes):
        raise EssegError(f"--k {s.k} exceeds the smallest C={min(s.classes)}; use k <= C")
    faiss_ok = faiss_available()
    env = start(s, device)
    env["faiss"] = __import__("faiss").__version__ if faiss_ok else None
    n = s.num_pixels
    print(f"esseg bench knn: N={n} queries ({args.queries}, "
          f"{s.batch}x{s.crop}x{s.crop}), d={s.embedding_dim}, k={s.k}, {s.device}, {env['threads']} threads", flush=True)
    rows = []
    methods: list[str] = []
    for num_classes in s.classes:
        gen = torch.Generator().manual_seed(s.seed)
        db = unit_vectors(num_classes, s.embedding_dim, gen)
        if args.queries == "smooth":
            labels = blocky_labels(s.batch, s.crop, num_classes, generator=gen)
            field = smooth_pixel_embeddings(db, labels, noise=args.noise, generator=gen)
        else:
            field = F.normalize(torch.randn(s.batch, s.embedding_dim, s.crop, s.crop, generator=gen), dim=1)
        field, db = field.to(device), db.to(device)
        queries = field.permute(0, 2, 3, 1).reshape(-1, s.embedding_dim).contiguous()
        paths, unavailable = _paths(s, args, num_classes, faiss_ok)
        methods = list(paths)
        exact = None
        for method, (fn, extra) in paths.items():
            row = dict(method=method, C=num_classes, d=s.embedding_dim, k=s.k, batch=s.batch, crop=s.crop,
                       device=s.device, measure="search", num_queries=n, threads=env["threads"],
                       query_stride=extra.get("query_stride", 1), nlist=extra.get("nlist"), nprobe=extra.get("nprobe"),
                       note=extra.get("note"))
            if method in unavailable:
                row.update(status="unavailable", note=unavailable[method])
            else:
                result = fn(queries, field, db)
                times = time_repeats(lambda: fn(queries, field, db), s.repeats, s.warmup, device)
                if method == "torch":
                    exact = result
                row.update(status="ok", seconds=median(times), seconds_min=min(times), seconds_max=max(times),
                           recall=recall_at_k(result, exact))
            rows.append(row)
            print(f"  {method:10s} C={num_classes:<7d} {row['status']:8s} "
                  f"{fmt_seconds(row['seconds']) if row.get('seconds') is not None else '-':>9s} "
                  f"recall {row['recall'] if row.get('recall') is not None else float('nan'):.4f}", flush=True)
    table = [("method", "method", None), ("C", "C", None), ("median", "seconds", fmt_seconds),
             ("min", "seconds_min", fmt_seconds), ("recall@k", "recall", lambda v: f"{v:.4f}"),
             ("nlist", "nlist", None), ("nprobe", "nprobe", None), ("status", "status", None), ("note", "note", None)]

    def draw(axes):
        report.plot_by_method(axes[0], rows, "seconds", methods, logy=True)
        axes[0].set_ylabel("seconds per search of all N queries (median)")
        report.plot_by_method(axes[1], rows, "recall", methods)
        axes[1].set_ylabel(f"recall@{s.k} vs exact")
        for ax in axes:
            ax.set_title(f"kNN, N={n} ({args.queries}), d={s.embedding_dim}, k={s.k}, {s.device}", fontsize=9)

    extra = dict(nlist=args.nlist, nprobe=args.nprobe, strides=args.stride_list, queries=args.queries, noise=args.noise)
    return report.finish("knn", s, rows, COLUMNS, table, knn_ratios(s.classes, methods), draw, env, extra, ncols=2)
