"""Exact and approximate k-nearest-neighbour search over class embeddings.

All backends share one contract (selection returns indices, scoring is elsewhere)::

    search(queries (N, d), database (C, d), k) -> (sq_dists (N, k) ascending, indices (N, k) int64)

and always run under ``torch.no_grad()``. ``sq_dists[i, j] = ||q_i - db[indices[i, j]]||^2``.
Indices are always valid database rows, in ``[0, C)``, even when an input holds NaN or inf.
"""

from __future__ import annotations

import math
import os
from typing import Callable

import numpy as np
import torch

from esseg.errors import ConfigError
from esseg.knn.index import IVFIndex, default_nlist

# Tile of the (queries x database) distance matrix computed at once (16 MiB in fp32), so peak
# memory does not grow with N or C; and the width of the groups whose minima prefilter top-k.
TILE_ROWS = 512
TILE_COLS = 8192
GROUP = 32

# ``backend="auto"`` searches exactly below this many classes and with the inverted-file index
# (:class:`~esseg.knn.index.IVFIndex`) from it on: where the index (default nlist / nprobe) is
# about 2x faster than exact search on the training step's 16,384 block queries (one CPU
# thread: equal at C = 10,000, 1.5x at 20,000, 3.9x at 50,000; docs/RESULTS.md, "A million classes").
AUTO_INDEX_MIN_CLASSES = 25_000
# With FAISS installed, ``"auto"`` searches CPU tables exactly with FAISS ``IndexFlatL2`` (2-3.6x
# faster than the exact torch search at C = 1,000-50,000, one thread) and switches to the index
# from this many classes on, where the index is the faster of the two for both the training
# step's search (20 probed lists) and prediction's (40): docs/RESULTS.md, "A million classes".
AUTO_INDEX_MIN_CLASSES_FAISS = 50_000
# The backends whose results are exact (no candidate set to approximate).
EXACT_BACKENDS = ("torch", "faiss")
# Lists probed by the cached one-shot index search (``backend="ivf"``/``"auto"``: prediction,
# evaluation) unless ``nprobe=`` is given: top-1 matters there. Top-1 agreement with exact
# search on random unit queries at C = 10^6 (nlist 2000): 0.978 at 20, 0.993 at 32, 0.998 at 48
# probed lists (the training index probes 20: its recall@8 stays >= 0.93).
SEARCH_NPROBE = 40


def _check(queries: torch.Tensor, database: torch.Tensor, k: int) -> None:
    if queries.dim() != 2 or database.dim() != 2:
        raise ValueError(
            f"knn_search expects queries (N, d) and database (C, d); got {tuple(queries.shape)} "
            f"and {tuple(database.shape)}"
        )
    if queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"queries have d={queries.shape[1]} but the database has d={database.shape[1]}; "
            "both must use the same embedding_dim"
        )
    if not 1 <= k <= database.shape[0]:
        raise ValueError(f"k={k} must be in [1, C] with C={database.shape[0]} database vectors; lower k")


def _tile_topk(d2: torch.Tensor, k: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact k smallest per row of a (R, W) tile whose W is a multiple of ``group``.

    The k smallest values lie in the k groups with the smallest minima, so ``topk`` runs over
    W/group group minima and then over k*group candidates instead of over all W columns.
    """
    r, w = d2.shape
    groups = w // group
    if groups <= k or group == 1:
        return torch.topk(d2, min(k, w), dim=1, largest=False, sorted=True)
    _, best = torch.topk(d2.view(r, groups, group).amin(2), k, dim=1, largest=False, sorted=False)
    cand = (best.unsqueeze(2) * group + torch.arange(group, device=d2.device)).view(r, -1)
    v, j = torch.topk(d2.gather(1, cand), k, dim=1, largest=False, sorted=True)
    return v, cand.gather(1, j)


@torch.no_grad()
def torch_exact_search(
    queries: torch.Tensor,
    database: torch.Tensor,
    k: int,
    tile_rows: int = TILE_ROWS,
    tile_cols: int = TILE_COLS,
    group: int = GROUP,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact search in plain torch over (tile_rows x tile_cols) tiles of the distance matrix.

    Each tile is one matmul of ``[-2 q, 1]`` with ``[mu, ||mu||^2]`` (``= ||mu||^2 - 2 q.mu``,
    no separate bias pass) followed by an exact grouped top-k
    (minima of ``group``-wide column groups select the candidate groups); per-tile results of
    a row block are merged by one more ``topk``. No (N x C) matrix is ever built.

    Args:
        queries: (N, d). database: (C, d). k: neighbours per query, 1 <= k <= C.
        tile_rows, tile_cols: tile shape (peak extra memory ~ tile_rows * tile_cols floats).
        group: column group width of the top-k prefilter (1 disables it).

    Returns:
        ``(sq_dists, indices)``, both (N, k); distances ascending, indices int64, always in
        ``[0, C)``. A NaN distance ranks last (as +inf): a NaN/inf query row gets valid but
        arbitrary ids, a NaN/inf class is never nearer than a finite one.
    """
    _check(queries, database, k)
    n, c = queries.shape[0], database.shape[0]
    if group > 1 and not bool(torch.isfinite(database).all()):
        group = 1  # no padding rows, so a NaN/inf class ranks after every finite one
    tile_cols = max(group, tile_cols // group * group)
    pad = -c % group  # pad with unreachable vectors (||mu||^2 = inf) to whole groups
    db = torch.cat([database, database.new_zeros(pad, database.shape[1])])
    db_aug = torch.cat([db, torch.cat([database.pow(2).sum(1), database.new_full((pad,), float("inf"))]).unsqueeze(1)], 1)
    ones = queries.new_ones(min(n, tile_rows), 1)
    dists = queries.new_empty((n, k))
    idx = torch.empty((n, k), dtype=torch.long, device=queries.device)
    for s in range(0, n, tile_rows):
        q = queries[s : s + tile_rows]
        q_aug = torch.cat([q * -2.0, ones[: q.shape[0]]], 1)
        vals, ids = [], []
        for t in range(0, db.shape[0], tile_cols):
            d2 = q_aug @ db_aug[t : t + tile_cols].t()
            v, i = _tile_topk(d2, k, group)
            vals.append(v)
            ids.append(i + t)
        if len(vals) > 1:
            v, j = torch.topk(torch.cat(vals, 1), k, dim=1, largest=False, sorted=True)
            i = torch.cat(ids, 1).gather(1, j)
        else:
            v, i = vals[0], ids[0]
        dists[s : s + tile_rows] = v.add_(q.pow(2).sum(1, keepdim=True)).clamp_(min=0)
        idx[s : s + tile_rows] = i
    if pad:  # only rows with non-finite distances (a NaN/inf query) can reach the padding rows
        bad = torch.nonzero((idx >= c).any(1)).flatten()
        if bad.numel():
            dists[bad], idx[bad] = torch_exact_search(queries[bad], database, k, tile_rows, tile_cols, group=1)
    return dists, idx


_FAISS_AVAILABLE: bool | None = None


def faiss_available() -> bool:
    """True when ``import faiss`` works (checked once per process)."""
    global _FAISS_AVAILABLE
    if _FAISS_AVAILABLE is None:
        try:
            import faiss  # noqa: F401, PLC0415
        except ImportError:
            _FAISS_AVAILABLE = False
        else:
            _FAISS_AVAILABLE = True
    return _FAISS_AVAILABLE


_FAISS_POOL_USED = False  # this process ran FAISS with more than one OpenMP thread
_IN_FORKED_CHILD = False  # ... and this is a child forked after that


def _after_fork_in_child() -> None:
    global _IN_FORKED_CHILD
    _IN_FORKED_CHILD = _IN_FORKED_CHILD or _FAISS_POOL_USED


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def faiss_threads() -> int:
    """OpenMP threads for the next FAISS call: torch's intra-op setting, but 1 in a process forked
    from one that ran FAISS multi-threaded (GNU OpenMP's thread pool does not survive ``fork``: a
    parallel region in the child would wait for threads that do not exist)."""
    global _FAISS_POOL_USED
    threads = 1 if _IN_FORKED_CHILD else max(1, torch.get_num_threads())
    _FAISS_POOL_USED = _FAISS_POOL_USED or threads > 1
    return threads


def _faiss():
    """The ``faiss`` module, its OpenMP threads set for the next call (:func:`faiss_threads`)."""
    try:
        import faiss  # noqa: PLC0415
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            'the FAISS kNN backends need FAISS: pip install "esseg[faiss]" (or faiss-gpu), '
            'or use backend="torch" (exact) or backend="ivf" (the plain-torch index)'
        ) from None
    faiss.omp_set_num_threads(faiss_threads())  # FAISS's OpenMP pool follows torch's thread setting
    return faiss


@torch.no_grad()
def faiss_search(
    queries: torch.Tensor,
    database: torch.Tensor,
    k: int,
    nlist: int | None = None,
    nprobe: int = 8,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Search with FAISS: ``IndexFlatL2`` (exact) by default, ``IndexIVFFlat`` when ``nlist`` is set.

    Args:
        queries: (N, d). database: (C, d). k: neighbours per query.
        nlist: number of inverted lists (clusters) for the non-exhaustive IVF index; None = exact.
            A database holding NaN/inf (which FAISS cannot cluster) is searched by
            :func:`torch_exact_search` instead.
        nprobe: lists visited per query with IVF (recall grows with nprobe; nprobe=nlist is exact).

    Returns:
        ``(sq_dists, indices)`` (N, k) on the queries' device; IVF may return fewer than k true
        neighbours per row when the probed lists hold fewer than k vectors: missing slots are
        filled with the nearest found; rows with none found (e.g. a NaN query) are searched
        by :func:`torch_exact_search`. Indices are never -1.
    """
    _check(queries, database, k)
    faiss = _faiss()
    if nlist is None and not bool(torch.isfinite(database).all()):
        return torch_exact_search(queries, database, k)  # NaN/inf classes rank last, as in the torch search
    d = queries.shape[1]
    xb = database.detach().float().cpu().contiguous().numpy()
    xq = queries.detach().float().cpu().contiguous().numpy()
    if nlist is None:
        index = faiss.IndexFlatL2(d)
    elif not np.isfinite(xb).all():  # FAISS cannot train IVF on NaN/inf: search exactly instead
        return torch_exact_search(queries, database, k)
    else:
        nlist = max(1, min(int(nlist), xb.shape[0]))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = seed
        index.cp.min_points_per_centroid = 1
        index.train(xb)
        index.nprobe = min(int(nprobe), nlist)
    index.add(xb)
    dist, idx = index.search(xq, k)
    dist_t = torch.from_numpy(dist).to(queries.device, queries.dtype)
    idx_t = torch.from_numpy(idx).to(queries.device, torch.long)
    missing = idx_t < 0
    if missing.any():
        idx_t = torch.where(missing, idx_t[:, :1], idx_t)
        dist_t = torch.where(missing, dist_t[:, :1], dist_t)
        none = torch.nonzero(idx_t[:, 0] < 0).flatten()
        if none.numel():
            dist_t[none], idx_t[none] = torch_exact_search(queries[none].to(dist_t.dtype), database.to(dist_t.dtype), k)
    return dist_t, idx_t


class ClusteredIndex:
    """A non-exhaustive index in plain torch: k-means over the database, search in nearby clusters.

    Each query is compared with the ``nlist`` centroids, then exactly with the members of its
    ``nprobe`` nearest clusters. Cost per query is ``O(nlist + nprobe * C / nlist)`` distances
    instead of ``O(C)``. Build once per database (e.g. once per training step's class table)
    and reuse for many queries.

    Args:
        database: (C, d). nlist: clusters (default ``round(sqrt(C))``). iters: k-means iterations.
    """

    def __init__(self, database: torch.Tensor, nlist: int | None = None, iters: int = 10, seed: int = 0):
        with torch.no_grad():
            c = database.shape[0]
            self.database = database
            self.nlist = max(1, min(c, nlist or round(math.sqrt(c))))
            gen = torch.Generator(device="cpu").manual_seed(seed)
            perm = torch.randperm(c, generator=gen)[: self.nlist].to(database.device)
            centroids = database[perm].clone()
            for _ in range(iters):
                assign = torch_exact_search(database, centroids, 1)[1][:, 0]
                sums = torch.zeros_like(centroids).index_add_(0, assign, database)
                counts = torch.bincount(assign, minlength=self.nlist).unsqueeze(1)
                centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
            self.centroids = centroids
            assign = torch_exact_search(database, centroids, 1)[1][:, 0]
            order = torch.argsort(assign, stable=True)
            counts = torch.bincount(assign, minlength=self.nlist)
            self.members = order  # database ids grouped by cluster
            self.offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
            self.max_size = int(counts.max())

    @torch.no_grad()
    def search(
        self, queries: torch.Tensor, k: int, nprobe: int = 8, block_elements: int = 1 << 22
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, d) queries -> ``(sq_dists, indices)`` (N, k) over the probed clusters only.

        Queries are processed in blocks so the (rows, nprobe * max cluster size, d) candidate
        gather stays under ``block_elements`` floats.
        """
        _check(queries, self.database, k)
        nprobe = max(1, min(nprobe, self.nlist))
        width = nprobe * self.max_size * queries.shape[1]
        rows = max(1, block_elements // width)
        parts = [self._search_block(queries[s : s + rows], k, nprobe) for s in range(0, queries.shape[0], rows)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

    def _search_block(self, queries: torch.Tensor, k: int, nprobe: int) -> tuple[torch.Tensor, torch.Tensor]:
        probe = torch_exact_search(queries, self.centroids, nprobe)[1]  # (n, nprobe)
        # Candidate slots: every member position of each probed cluster, padded to max_size.
        slot = torch.arange(self.max_size, device=queries.device)
        start = self.offsets[probe].unsqueeze(-1)  # (n, nprobe, 1)
        size = (self.offsets[probe + 1] - self.offsets[probe]).unsqueeze(-1)
        pos = (start + slot).reshape(queries.shape[0], -1)
        valid = (slot < size).reshape(queries.shape[0], -1)
        cand = self.members[pos.clamp(max=self.members.numel() - 1)]
        d2 = (queries.unsqueeze(1) - self.database[cand]).pow(2).sum(-1)
        d2 = d2.masked_fill(~valid, float("inf"))
        kk = min(k, d2.shape[1])
        dist, j = torch.topk(d2, kk, dim=1, largest=False, sorted=True)
        idx = cand.gather(1, j)
        if kk < k or torch.isinf(dist).any():  # fewer candidates than k: pad with the nearest found
            dist = torch.cat([dist, dist[:, :1].expand(-1, k - kk)], 1)
            idx = torch.cat([idx, idx[:, :1].expand(-1, k - kk)], 1)
            bad = torch.isinf(dist)
            dist = torch.where(bad, dist[:, :1], dist)
            idx = torch.where(bad, idx[:, :1], idx)
        return dist, idx


@torch.no_grad()
def clustered_search(
    queries: torch.Tensor, database: torch.Tensor, k: int, nlist: int | None = None, nprobe: int = 8, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-exhaustive torch search: build a :class:`ClusteredIndex` and query it once."""
    _check(queries, database, k)
    return ClusteredIndex(database, nlist=nlist, seed=seed).search(queries, k, nprobe=nprobe)


class _IndexCache:
    """The last index built by a one-shot ``knn_search`` call, reused while the table is unchanged.

    Keyed by the options and validated by comparing the table's values (O(C d), far cheaper than
    a build), so a new table with the same address never reuses a stale index.
    """

    def __init__(self):
        self.key, self.table, self.index = None, None, None

    def get(self, database: torch.Tensor, key: tuple, build: Callable[[], object]):
        full_key = (*key, tuple(database.shape), database.dtype, database.device)
        if self.key != full_key or not torch.equal(self.table, database):
            self.key, self.table, self.index = None, None, None  # free the old one before building
            self.index, self.table, self.key = build(), database.detach().clone(), full_key
        return self.index


_CACHE = _IndexCache()


@torch.no_grad()
def ivf_search(
    queries: torch.Tensor, database: torch.Tensor, k: int, nlist: int | None = None, nprobe: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-exhaustive plain-torch search with an :class:`~esseg.knn.index.IVFIndex` (CPU and GPU).

    The index is built on the first call for a table and cached until the table's values change
    (inference: once per class table). Distances are exact; only the candidate set (the
    ``nprobe`` probed lists of ``nlist``, default :data:`SEARCH_NPROBE`) is approximate;
    ``nprobe = nlist`` is exact search.
    """
    _check(queries, database, k)
    index = _CACHE.get(database, ("ivf", nlist, seed), lambda: IVFIndex(database, nlist=nlist, seed=seed))
    return index.search(queries, k, nprobe=min(index.nlist, SEARCH_NPROBE) if nprobe is None else nprobe)


class FaissIndex:
    """A FAISS ``IndexIVFFlat`` or ``IndexHNSWFlat`` over a (C, d) table, re-ranked exactly.

    FAISS proposes ``candidates`` neighbours per query from the vectors it was built on; their
    distances are then recomputed against the table passed to :meth:`search` (the current class
    embeddings), so only the candidate set is approximate.
    """

    def __init__(self, database: torch.Tensor, kind: str = "ivf", nlist: int | None = None, nprobe: int | None = None,
                 seed: int = 0, hnsw_m: int = 32, ef_search: int = 64):
        faiss = _faiss()
        c, self.dim = database.shape
        self.num_classes = c
        xb = database.detach().float().cpu().contiguous().numpy()
        if not np.isfinite(xb).all():
            raise ConfigError("FAISS cannot index a class table holding NaN/inf; use backend=\"torch\" or \"ivf\"")
        if kind == "ivf":
            self.nlist = default_nlist(c) if nlist is None else int(nlist)
            if not 1 <= self.nlist <= c:
                raise ConfigError(f"nlist={self.nlist} must be in [1, C={c}]; lower nlist")
            nprobe = max(8, self.nlist // 16) if nprobe is None else int(nprobe)
            if not 1 <= nprobe <= self.nlist:
                raise ConfigError(f"nprobe={nprobe} must be in [1, nlist={self.nlist}]; lower nprobe or raise nlist")
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatL2(self.dim), self.dim, self.nlist)
            self.index.cp.seed = seed
            self.index.train(xb)
            self.index.nprobe = min(nprobe, self.nlist)
        else:
            self.index = faiss.IndexHNSWFlat(self.dim, hnsw_m)
            self.index.hnsw.efSearch = ef_search
        self.index.add(xb)
        self.database = database.detach()

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, database: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, d) -> ``(sq_dists, indices)`` (N, k), exact distances to ``database`` (default: the built table)."""
        if queries.shape[1] != self.dim:
            raise ConfigError(f"this index was built for d={self.dim}; the queries have d={queries.shape[1]}: rebuild it")
        db = self.database if database is None else database.detach()
        xq = queries.detach().float().cpu().contiguous().numpy()
        _faiss()  # sets the OpenMP threads of this call
        _, cand = self.index.search(xq, min(self.num_classes, max(k, 2 * k)))
        cand = torch.from_numpy(cand).to(queries.device, torch.long)
        missing = cand < 0
        d2 = (queries.unsqueeze(1) - db[cand.clamp(min=0)]).pow(2).sum(-1).masked_fill(missing, float("inf"))
        d2 = torch.where(torch.isnan(d2), float("inf"), d2)
        v, j = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        idx = cand.gather(1, j)
        bad = torch.nonzero(~torch.isfinite(v[:, -1])).flatten()
        if bad.numel():  # too few candidates (or a NaN query): exact search for those rows
            v[bad], idx[bad] = torch_exact_search(queries[bad], db, k)
        return v, idx


def _faiss_index_search(kind: str):
    @torch.no_grad()
    def search(queries, database, k, nlist=None, nprobe=None, seed=0, **options):
        _check(queries, database, k)
        if not bool(torch.isfinite(database).all()):
            return torch_exact_search(queries, database, k)
        index = _CACHE.get(database, (kind, nlist, nprobe, seed, tuple(sorted(options.items()))),
                           lambda: FaissIndex(database, kind, nlist, nprobe, seed, **options))
        return index.search(queries, k)

    search.__doc__ = f"FAISS {kind.upper()} candidates re-ranked exactly (:class:`FaissIndex`), cached per table."
    return search


BACKENDS: dict[str, Callable[..., tuple[torch.Tensor, torch.Tensor]]] = {
    "torch": torch_exact_search,
    "faiss": faiss_search,
    "clustered": clustered_search,
    "ivf": ivf_search,
    "faiss_ivf": _faiss_index_search("ivf"),
    "faiss_hnsw": _faiss_index_search("hnsw"),
}


def resolve_backend(num_classes: int, backend: str = "auto", device: torch.device | str | None = None,
                    dtype: torch.dtype | None = None) -> str:
    """The backend ``backend="auto"`` uses for a C-class table on ``device`` (None: the CPU).

    On the CPU with FAISS installed, for tables of at most 32-bit floats (FAISS computes in
    float32; a float64 table keeps its precision in the torch search): ``"faiss"`` (exact, ``IndexFlatL2``) below
    :data:`AUTO_INDEX_MIN_CLASSES_FAISS` classes, else ``"ivf"``. Otherwise (no FAISS, or a GPU
    table): ``"torch"`` (exact) below :data:`AUTO_INDEX_MIN_CLASSES`, else ``"ivf"``. Any other
    name is returned as is (checked).
    """
    if backend == "auto":
        cpu = device is None or torch.device(device).type == "cpu"
        if cpu and dtype != torch.float64 and faiss_available():
            return "faiss" if num_classes < AUTO_INDEX_MIN_CLASSES_FAISS else "ivf"
        return "torch" if num_classes < AUTO_INDEX_MIN_CLASSES else "ivf"
    if backend not in BACKENDS:
        raise ConfigError(f"unknown knn backend {backend!r}; known backends: auto, {', '.join(BACKENDS)}")
    return backend


def knn_search(
    queries: torch.Tensor, database: torch.Tensor, k: int, backend: str = "auto", index=None, **options
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the ``k`` nearest database vectors of each query (squared L2 distance).

    Args:
        queries: (N, d) float tensor. database: (C, d) float tensor. k: 1 <= k <= C.
        backend: ``"auto"`` (default: exact search below :data:`AUTO_INDEX_MIN_CLASSES`
            classes, FAISS ``IndexFlatL2`` for CPU tensors when FAISS is installed, up to
            :data:`AUTO_INDEX_MIN_CLASSES_FAISS`; ``"ivf"`` from there on, see
            :func:`resolve_backend`), ``"torch"`` (exact,
            tiled), ``"ivf"`` (plain-torch inverted-file index, cached per table; ``nlist=``,
            ``nprobe=``), ``"faiss"`` (``IndexFlatL2``, or ``IndexIVFFlat`` with ``nlist=``),
            ``"faiss_ivf"`` / ``"faiss_hnsw"`` (FAISS candidates re-ranked exactly, cached per
            table) or ``"clustered"`` (the first plain-torch index; slower than ``"ivf"``).
        index: an object with ``search(queries, k, database=) -> (sq_dists, indices)`` (an
            :class:`~esseg.knn.index.IVFIndex` or the loss's refreshed index) to use instead of
            ``backend`` (e.g. a training index whose partition is refreshed every few steps).
        **options: passed to the backend (or to ``index.search``, e.g. ``nprobe=``).

    Returns:
        ``(sq_dists, indices)``: (N, k) squared distances ``||q_i - db_j||^2`` in ascending
        order and their int64 database indices, always in ``[0, C)`` (also for NaN/inf
        inputs, whose distances rank last). Computed without gradient. Exact for ``"torch"``
        and ``"faiss"``; the index backends return exact distances over approximate candidates.

    Raises:
        ValueError: ``k > C``, mismatched dimensions; ConfigError: an unknown backend, ``nprobe``
        above ``nlist``, FAISS asked for but not installed, an index built for another d.
    """
    if index is not None:
        _check(queries, database, k)
        return index.search(queries, k, database=database, **options)
    name = resolve_backend(database.shape[0] if database.dim() == 2 else 0, backend, database.device,
                           torch.promote_types(queries.dtype, database.dtype))
    return BACKENDS[name](queries, database, k, **options)
