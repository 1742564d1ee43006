"""A sub-linear kNN index in plain torch: inverted lists over k-means clusters of the class table.

The index keeps only a *partition* of the C classes into ``nlist`` lists (``assign``, (C,) int64);
the vectors it searches are always taken from the database passed to :meth:`IVFIndex.search`
(or from the table it was built on), so results are exact distances to the *current* class
embeddings over an approximate candidate set. A search:

1. ranks the list centroids (the mean of each list's current members) for every query and
   keeps the ``nprobe`` nearest lists;
2. groups the (query, list) pairs by list: each list is stored as padded blocks of ``width``
   vectors, and up to ``group`` queries that probe one block form one item of a batched
   matmul ``||mu||^2 - 2 q . mu`` (``baddbmm``; no per-query gather of candidate vectors);
3. keeps the minimum of every 8-wide column group; per query, the ``k`` groups with the
   smallest minima hold its ``k`` nearest probed vectors (exactly), whose distances are then
   recomputed from the table and ranked.

Cost per query: ``O(nlist + nprobe * C / nlist)`` distances instead of ``O(C)``; with
``nprobe = nlist`` the result equals exact search (the oracle tests check this). Rows whose
probed lists hold fewer than ``k`` finite candidates (tiny lists, a NaN query) are searched
exactly, so every row holds ``k`` distinct valid ids.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from esseg.errors import ConfigError

# Floats of one batched-matmul chunk (items x group x width): bounds the search's temporaries.
CHUNK_ELEMENTS = 1 << 21
# Floats of the per-query block minima of one scan (queries x probed blocks x width / 8).
SCAN_ELEMENTS = 1 << 21
# a table whose squared row lengths are all within this of 1 is searched by query direction (update())
UNIT_TOLERANCE = 1e-3
# k-means runs on at most this many points per list (a seeded subsample), then assigns all C.
TRAIN_POINTS_PER_LIST = 64


def default_nlist(num_classes: int) -> int:
    """Lists for C classes: ``2 * sqrt(C)`` (at least 1, at most C)."""
    return max(1, min(num_classes, round(2 * math.sqrt(num_classes))))


def default_nprobe(nlist: int) -> int:
    """Lists probed per query: 20, capped at ``nlist`` (recall@8 >= 0.9 in
    docs/RESULTS.md's measurements at d = 12 on random unit vectors, the hardest case)."""
    return min(nlist, 20)


def block_width(counts: torch.Tensor, overhead: int = 64) -> int:
    """Block width (a multiple of 8) for lists of ``counts`` (nlist,) members: the one that
    minimises ``sum_l ceil(n_l / w) (w + overhead)``, the scanned columns plus a per-block cost
    (lists longer than w take several blocks, so the padding is below one block per list).
    Widths up to 4x the mean list length are tried."""
    mean = max(1.0, float(counts.sum()) / max(1, counts.numel()))
    top = min(int(counts.max()), int(4 * mean)) if counts.numel() else 8
    widths = torch.arange(8, max(8, -(-top // 8) * 8) + 1, 8, dtype=torch.float64)
    n = counts.to(torch.float64).cpu().unsqueeze(0)
    cost = (torch.ceil(n / widths.unsqueeze(1)) * (widths.unsqueeze(1) + overhead)).sum(1)
    return int(widths[int(torch.argmin(cost))])


def _exact(queries, database, k):
    from esseg.knn.search import torch_exact_search  # noqa: PLC0415 - search.py imports this module

    return torch_exact_search(queries, database, k)



def kmeans_assign(database: torch.Tensor, nlist: int, iters: int = 10, seed: int = 0) -> torch.Tensor:
    """Seeded Lloyd k-means over the finite rows of ``database`` (C, d) -> list of each row (C,) int64.

    Centroids start from a seeded random subset, are trained on a seeded subsample of at most
    ``TRAIN_POINTS_PER_LIST * nlist`` rows, and every row is then assigned to its nearest
    centroid (non-finite rows get a valid but arbitrary list). Deterministic for a fixed seed
    on one device type.
    """
    c = database.shape[0]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    finite = torch.isfinite(database).all(1)
    pool = torch.nonzero(finite).flatten().cpu() if not bool(finite.all()) else torch.arange(c)
    if pool.numel() == 0:
        return torch.arange(c, device=database.device) % nlist
    sample = pool[torch.randperm(pool.numel(), generator=gen)[: TRAIN_POINTS_PER_LIST * nlist]]
    train = database[sample.to(database.device)].float()
    centroids = train[: min(nlist, train.shape[0])].clone()
    if centroids.shape[0] < nlist:  # fewer finite rows than lists: the extra lists stay empty
        centroids = torch.cat([centroids, centroids[:1].expand(nlist - centroids.shape[0], -1)])
    for _ in range(iters):
        a = _exact(train, centroids, 1)[1][:, 0]
        sums = torch.zeros_like(centroids).index_add_(0, a, train)
        counts = torch.bincount(a, minlength=nlist).unsqueeze(1)
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    return _exact(database.float(), centroids, 1)[1][:, 0]


class IVFIndex:
    """Inverted-file index over a (C, d) class table, searched with batched matmuls (module doc).

    Args:
        database: (C, d) table to partition (and to search when ``search`` gets no database).
        nlist: number of lists (default :func:`default_nlist`: ``2 sqrt(C)``).
        nprobe: default lists probed per query (default :func:`default_nprobe`).
        iters, seed: k-means iterations and seed (deterministic under a fixed seed).
        assign: a saved partition (C,) int64 to reuse instead of running k-means (``--resume``).

    Shapes:
        search(queries (N, d), k, database (C, d) | None) -> (sq_dists (N, k) ascending, indices (N, k) int64)
    """

    def __init__(
        self,
        database: torch.Tensor,
        nlist: int | None = None,
        nprobe: int | None = None,
        iters: int = 10,
        seed: int = 0,
        assign: torch.Tensor | None = None,
    ):
        if database.dim() != 2 or database.shape[0] < 1:
            raise ConfigError(f"an index needs a (C, d) table with C >= 1; got {tuple(database.shape)}")
        c, self.dim = database.shape
        self.num_classes = c
        self.nlist = default_nlist(c) if nlist is None else int(nlist)
        if not 1 <= self.nlist <= c:
            raise ConfigError(f"nlist={self.nlist} must be in [1, C={c}]; lower nlist")
        self.nprobe = default_nprobe(self.nlist) if nprobe is None else self._check_nprobe(nprobe)
        with torch.no_grad():
            if assign is None:
                assign = kmeans_assign(database.detach(), self.nlist, iters, seed)
            elif assign.shape != (c,):
                raise ConfigError(f"a saved index partition has {tuple(assign.shape)} entries; the table has C={c}")
            self._layout(assign.to(database.device, torch.long))
            self.update(database)

    def _check_nprobe(self, nprobe: int) -> int:
        if not 1 <= int(nprobe) <= self.nlist:
            raise ConfigError(f"nprobe={nprobe} must be in [1, nlist={self.nlist}]; lower nprobe or raise nlist")
        return int(nprobe)

    def _layout(self, assign: torch.Tensor) -> None:
        """Lists -> padded blocks of ``width`` ids (``_ids``, int32, padding = C, one extra all-padding row)."""
        c, dev = self.num_classes, assign.device
        self.assign = assign
        counts = torch.bincount(assign, minlength=self.nlist)
        self.width = width = block_width(counts)
        blocks = (counts + width - 1) // width  # blocks per list (0 for an empty list)
        self.list_blocks = blocks
        self.list_first = torch.cumsum(blocks, 0) - blocks
        order = torch.argsort(assign, stable=True)  # ids grouped by list
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.arange(c, device=dev) - starts[assign[order]]  # position inside its list
        slot = self.list_first[assign[order]] * width + pos
        ids = torch.full(((int(blocks.sum()) + 1) * width,), c, dtype=torch.int32, device=dev)
        ids[slot] = order.to(torch.int32)
        self._ids = ids.view(-1, width)
        self._padding = self._ids[:-1] == c
        self._counts = counts.unsqueeze(1)

    @property
    def block_ids(self) -> torch.Tensor:
        """(blocks, width) int64 class ids of the padded list blocks; padding slots hold C."""
        return self._ids[:-1].long()

    @torch.no_grad()
    def update(self, database: torch.Tensor) -> None:
        """Take block vectors and list centroids from ``database`` (C, d), keeping the partition.

        O(C d): used every training step, so the search sees the current embeddings while the
        partition (the costly k-means) is refreshed only every few steps.
        """
        self._check_table(database)
        db = database.detach()
        finite = torch.isfinite(db.sum(1))  # a NaN/inf anywhere in a row makes its sum non-finite
        if bool(finite.all()):
            sums = torch.zeros(self.nlist, self.dim, device=db.device).index_add_(0, self.assign, db.float())
            counts = self._counts
        else:
            safe = torch.where(finite.unsqueeze(1), db, torch.zeros_like(db)).float()
            sums = torch.zeros(self.nlist, self.dim, device=db.device).index_add_(0, self.assign, safe)
            counts = torch.bincount(self.assign[finite], minlength=self.nlist).unsqueeze(1)
        # An empty list gets an unreachable centroid, so it is never probed in place of a real one.
        self.centroids = torch.where(counts > 0, sums / counts.clamp(min=1), torch.full_like(sums, 1e30))
        shape = (*self._padding.shape, self.dim)
        blocks = getattr(self, "blocks", None)
        if blocks is None or blocks.shape != shape or blocks.dtype != db.dtype or blocks.device != db.device:
            self.blocks = blocks = db.new_empty(shape)  # (blocks, width, d)
            self.block_sq = db.new_empty(shape[:2])  # (blocks, width)
        # In place and in chunks: no second (C, d) copy alive while the old blocks are replaced
        # (training calls this every step).
        step = max(1, CHUNK_ELEMENTS // (self.width * self.dim))
        for s in range(0, shape[0], step):
            src = self._ids[s : min(s + step, shape[0])].clamp(max=self.num_classes - 1).view(-1)
            torch.index_select(db, 0, src, out=blocks[s : s + step].view(-1, self.dim))
            torch.sum(blocks[s : s + step].pow(2), -1, out=self.block_sq[s : s + step])
        # A unit-length table (normalised class embeddings): the nearest rows of any query are those of
        # its direction, so search() probes lists with the unit query (recall then does not depend on the
        # query's length, e.g. model.unit_pixels=false pixels, where short queries probed by L2 lose recall).
        self.unit = bool(((self.block_sq - 1).abs().masked_fill_(self._padding, 0) < UNIT_TOLERANCE).all())
        self.block_sq.masked_fill_(self._padding, float("inf"))
        self.database = db

    def _check_table(self, database: torch.Tensor) -> None:
        if database.dim() != 2 or database.shape[1] != self.dim:
            raise ConfigError(
                f"this index was built for d={self.dim} but the class table has shape {tuple(database.shape)}; "
                "rebuild the index for the new embedding_dim"
            )
        if database.shape[0] != self.num_classes:
            raise ConfigError(
                f"this index was built for C={self.num_classes} classes but the table has {database.shape[0]}; "
                "rebuild the index"
            )

    @torch.no_grad()
    def search(
        self, queries: torch.Tensor, k: int, database: torch.Tensor | None = None, nprobe: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest classes among the ``nprobe`` probed lists of each query (module doc).

        Args:
            queries: (N, d). k: 1 <= k <= C.
            database: the current (C, d) table (the index's partition, its vectors and centroids
                taken from it, :meth:`update`); None searches the table last given.
            nprobe: lists probed per query (default ``self.nprobe``; ``nlist`` = exact search).

        Returns:
            ``(sq_dists, indices)`` (N, k): exact squared distances to ``database``, ascending;
            int64 ids, distinct per row, always in ``[0, C)``.
        """
        if queries.dim() != 2 or queries.shape[1] != self.dim:
            raise ConfigError(
                f"this index was built for d={self.dim}; the queries have shape {tuple(queries.shape)}: "
                "rebuild the index for the new embedding_dim"
            )
        if not 1 <= k <= self.num_classes:
            raise ConfigError(f"k={k} must be in [1, C={self.num_classes}]; lower k")
        nprobe = self.nprobe if nprobe is None else self._check_nprobe(nprobe)
        if database is not None:
            self.update(database)
        elif self.database is None:
            raise ConfigError("this index keeps no class table: pass search(..., database=table)")
        n = queries.shape[0]
        if n == 0:
            return queries.new_empty((0, k)), torch.empty((0, k), dtype=torch.long, device=queries.device)
        q = queries.to(self.blocks.dtype)
        # Query chunks bound the (queries, probed blocks, width / 8) minima tensor of a scan.
        rows = max(1, SCAN_ELEMENTS // (nprobe * int(self.list_blocks.max()) * (self.width // 8)))
        probe_q = F.normalize(q.float(), dim=1) if self.unit else q.float()
        parts = [self._scan(q[s : s + rows], _exact(probe_q[s : s + rows], self.centroids, nprobe)[1], k)
                 for s in range(0, n, rows)]
        dists, i = (torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])) if len(parts) > 1 else parts[0]
        bad = torch.nonzero(~torch.isfinite(dists[:, -1]) | (i[:, -1] >= self.num_classes)).flatten()
        if bad.numel():  # too few finite candidates: search those rows exactly
            dists[bad], i[bad] = _exact(q[bad], self.database, k)
        return dists.to(queries.dtype), i

    def _scan(self, q: torch.Tensor, probe: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The k nearest classes over the blocks of each query's probed lists (steps 2-3 of the module doc)."""
        n, dev, width = q.shape[0], q.device, self.width
        # (query, block) pairs, query-major, and each pair's rank among its query's pairs.
        lists = probe.reshape(-1)
        nb = self.list_blocks[lists]
        pair_q = torch.arange(n, device=dev).repeat_interleave(probe.shape[1]).repeat_interleave(nb)
        total = int(nb.sum())
        within = torch.arange(total, device=dev) - (torch.cumsum(nb, 0) - nb).repeat_interleave(nb)
        pair_b = self.list_first[lists].repeat_interleave(nb) + within
        per_query = torch.bincount(pair_q, minlength=n)
        pair_rank = torch.arange(total, device=dev) - (torch.cumsum(per_query, 0) - per_query)[pair_q]
        # Group the pairs by block: ``group`` queries probing one block form one matmul item.
        nblocks = self._padding.shape[0]
        group = int(min(256, max(4, 2 ** math.ceil(math.log2(max(1.0, total / nblocks))))))
        order = torch.argsort(pair_b, stable=True)
        sb = pair_b[order]
        cnt = torch.bincount(pair_b, minlength=nblocks)
        pos = torch.arange(total, device=dev) - (torch.cumsum(cnt, 0) - cnt)[sb]
        items = (cnt + group - 1) // group
        item = (torch.cumsum(items, 0) - items)[sb] + pos // group
        slot = pos % group
        item_block = torch.repeat_interleave(torch.arange(nblocks, device=dev), items)
        num_items = int(items.sum())
        # Minima of 8-wide column groups, every query's side by side (inf where it probed fewer
        # blocks): the k nearest lie in the k groups with the smallest minima.
        cols = width // 8
        pmax = int(per_query.max())
        minima = q.new_full((n, pmax, cols), float("inf"))
        dest_q, dest_r = pair_q[order], pair_rank[order]
        step = max(1, CHUNK_ELEMENTS // (group * width))
        bounds = torch.searchsorted(item, torch.arange(0, num_items + step, step, device=dev)).tolist()
        for c, s in enumerate(range(0, num_items, step)):  # sorted pairs are in item order
            lo, hi = bounds[c], bounds[c + 1]
            blk = item_block[s : s + step]
            # The chunk's query blocks (items, group, d), zero where a block has fewer than group queries.
            qs = q.new_zeros(blk.shape[0], group, self.dim)
            qs[item[lo:hi] - s, slot[lo:hi]] = q[dest_q[lo:hi]]
            # ||mu||^2 - 2 q.mu (||q||^2 does not change the order)
            d2 = torch.baddbmm(self.block_sq[blk].unsqueeze(1), qs, self.blocks[blk].transpose(1, 2), alpha=-2.0)
            del qs
            m = d2.view(-1, group, cols, 8).amin(3)
            del d2  # freed before the next chunk's is allocated
            minima[dest_q[lo:hi], dest_r[lo:hi]] = m[item[lo:hi] - s, slot[lo:hi]]
        ids = torch.full((n, pmax), nblocks, dtype=torch.long, device=dev)
        ids[pair_q, pair_rank] = pair_b
        kk = min(k, pmax * cols)
        _, best = torch.topk(minima.view(n, -1), kk, dim=1, largest=False, sorted=False)
        start = (ids.gather(1, best // cols) * width + best % cols * 8).unsqueeze(2) + torch.arange(8, device=dev)
        cand = self._ids.view(-1)[start.view(n, -1)].long()  # (n, kk * 8) class ids (C = padding)
        # Exact distances to the candidates, then the final top-k.
        d = (q.unsqueeze(1) - self.database[cand.clamp(max=self.num_classes - 1)].to(q.dtype)).pow(2).sum(-1)
        d = torch.where(torch.isnan(d) | (cand == self.num_classes), float("inf"), d)
        v, j = torch.topk(d, min(k, d.shape[1]), dim=1, largest=False, sorted=True)
        if v.shape[1] < k:
            v = torch.cat([v, v.new_full((n, k - v.shape[1]), float("inf"))], 1)
            j = torch.cat([j, j[:, :1].expand(-1, k - j.shape[1])], 1)
        return v, cand.gather(1, j)

    @torch.no_grad()
    def neighbours_within_lists(self, m: int, database: torch.Tensor | None = None) -> torch.Tensor:
        """The m nearest *other* classes of every class among the members of its own block -> (C, m).

        One batched matmul per chunk of blocks (``blocks @ blocks^T``), O(C * width * d) instead of a
        C-query search: the class-to-class search of the max-margin regulariser at large C, whose
        nearest other class almost always shares its k-means list. Rows whose block holds fewer than
        m + 1 classes are searched exactly. Never contains the row's own id.
        """
        if database is not None:
            self.update(database)
        elif self.database is None:
            raise ConfigError("this index keeps no class table: pass neighbours_within_lists(m, database=table)")
        c, width = self.num_classes, self.width
        out = torch.full((c + 1, m), c, dtype=torch.long, device=self.blocks.device)
        mm = min(m, width - 1)
        step = max(1, CHUNK_ELEMENTS // (width * width))
        eye = torch.eye(width, dtype=torch.bool, device=self.blocks.device)
        for s in range(0, self.blocks.shape[0], step):
            b = self.blocks[s : s + step]
            d2 = torch.baddbmm(self.block_sq[s : s + step].unsqueeze(1), b, b.transpose(1, 2), alpha=-2.0)
            d2 = d2.masked_fill_(eye, float("inf"))
            d2 = torch.where(torch.isnan(d2), float("inf"), d2)
            v, j = torch.topk(d2, mm, dim=2, largest=False, sorted=True)
            ids = self._ids[s : s + b.shape[0]].long()
            found = ids.gather(1, j.view(j.shape[0], -1)).view(j.shape)
            found = torch.where(torch.isinf(v), c, found)
            out[ids.reshape(-1), :mm] = found.reshape(-1, mm)  # padding rows land on row C
        out = out[:c]
        bad = torch.nonzero((out == c).any(1)).flatten()
        if bad.numel():
            m_exact = min(m + 1, c)
            idx = _exact(self.database[bad].float(), self.database.float(), m_exact)[1]
            own = idx == bad.unsqueeze(1)
            own[:, -1] |= ~own.any(1)
            out[bad, : m_exact - 1] = idx[~own].view(-1, m_exact - 1)
        return out[:, :m]

    def state(self) -> dict:
        """What rebuilds this index exactly: ``{"nlist", "nprobe", "assign" (C,) int64}``."""
        return {"nlist": self.nlist, "nprobe": self.nprobe, "assign": self.assign}


class RefreshedIndex:
    """A training-time :class:`IVFIndex` whose partition follows a moving class table.

    Every search takes the vectors and list centroids from the current table (O(C d)); the
    k-means partition is rebuilt every ``refresh_every`` training steps (its build time is
    kept in ``build_s``). Recall@k of the returned neighbours against exact search is measured
    on ``recall_queries`` evenly spaced queries of the search at a refresh step (the fresh
    partition) and of the search one step before the next refresh (the stalest); the last
    value is ``recall``. Under ``torch.distributed`` the partition is broadcast from rank 0, so
    every rank searches the same lists. :meth:`state` / :meth:`load` save and restore it
    exactly (``--resume``).

    Args:
        refresh_every: steps between partition rebuilds (R). nlist, nprobe: see :class:`IVFIndex`.
        seed: k-means seed. recall_queries: queries per recall measurement (0 disables it).
    """

    def __init__(self, refresh_every: int = 100, nlist: int | None = None, nprobe: int | None = None, seed: int = 0,
                 recall_queries: int = 256):
        if refresh_every < 1:
            raise ConfigError(f"the index refresh period must be >= 1 step; got {refresh_every}")
        self.refresh_every, self.nlist, self.nprobe, self.seed = refresh_every, nlist, nprobe, seed
        self.recall_queries = recall_queries
        self.index: IVFIndex | None = None
        self.built_at = -1
        self.build_s = 0.0
        self.recall = float("nan")
        self._measure = False
        self._saved: dict | None = None

    @torch.no_grad()
    def step(self, class_embeddings: torch.Tensor, iteration: int) -> bool:
        """Rebuild the partition if ``iteration`` is a refresh step (or the table's shape changed);
        returns True when it rebuilt. Call once per training step before searching."""
        c, d = class_embeddings.shape
        if self._saved is not None and self._saved["assign"].shape[0] == c:
            self._restore(class_embeddings)
        stale = self.index is None or (self.index.num_classes, self.index.dim) != (c, d)
        due = stale or iteration - self.built_at >= self.refresh_every or iteration < self.built_at
        self._measure = self.recall_queries > 0 and (due or iteration - self.built_at == self.refresh_every - 1)
        if not due:
            return False
        start = time.perf_counter()
        index = IVFIndex(class_embeddings, nlist=self.nlist, nprobe=self.nprobe, seed=self.seed)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            assign = index.assign.clone()
            torch.distributed.broadcast(assign, 0)
            index = IVFIndex(class_embeddings, nlist=index.nlist, nprobe=index.nprobe, assign=assign)
        self.index, self.built_at, self.build_s = index, iteration, time.perf_counter() - start
        return True

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int, database: torch.Tensor | None = None, nprobe: int | None = None):
        """:meth:`IVFIndex.search` on the current table (built on first use if :meth:`step` was not called)."""
        if self.index is None and self._saved is not None and database is not None:
            self._restore(database)
        if self.index is None:
            if database is None:
                raise ConfigError("the training index has no class table yet; call step(class_embeddings, iteration)")
            self.step(database, max(self.built_at, 0))
        dists, idx = self.index.search(queries, k, database=database, nprobe=nprobe)
        if self._measure and queries.shape[0] and database is not None:
            self._measure = False
            rows = torch.linspace(0, queries.shape[0] - 1, min(self.recall_queries, queries.shape[0])).long()
            exact = _exact(queries[rows.to(queries.device)], database.detach(), k)[1]
            self.recall = recall_at_k(idx[rows.to(idx.device)], exact)
        self._release(database)
        return dists, idx

    @torch.no_grad()
    def neighbours_within_lists(self, m: int, database: torch.Tensor) -> torch.Tensor:
        """:meth:`IVFIndex.neighbours_within_lists` on the current table (C, d) -> (C, m)."""
        if self.index is None:
            self.step(database, max(self.built_at, 0))
        out = self.index.neighbours_within_lists(m, database)
        self._release(database)
        return out

    def _release(self, database: torch.Tensor | None) -> None:
        # The index holds its own block copy of the vectors; given a table, it need not also keep
        # that (C, d) table alive until the next step, when a new one exists beside it.
        if database is not None:
            self.index.database = None

    def state(self) -> dict:
        """``{"built_at", "assign" (C,) int64 or None, "nlist", "nprobe", "build_s", "recall"}``."""
        ix = self.index
        return {"built_at": self.built_at, "assign": None if ix is None else ix.assign.cpu(),
                "nlist": None if ix is None else ix.nlist, "nprobe": None if ix is None else ix.nprobe,
                "build_s": self.build_s, "recall": self.recall}

    def load(self, state: dict, class_embeddings: torch.Tensor | None = None) -> None:
        """Restore :meth:`state`; the index itself is rebuilt from ``assign`` on the table (now or
        at the next :meth:`step`/:meth:`search`)."""
        self.built_at, self.build_s, self.recall = int(state["built_at"]), float(state["build_s"]), float(state["recall"])
        self._saved = state if state.get("assign") is not None else None
        self.index = None
        if self._saved is not None and class_embeddings is not None:
            self._restore(class_embeddings)

    def _restore(self, class_embeddings: torch.Tensor) -> None:
        s, self._saved = self._saved, None
        self.index = IVFIndex(class_embeddings, nlist=s["nlist"], nprobe=s["nprobe"], assign=s["assign"])


def recall_at_k(found: torch.Tensor, exact: torch.Tensor) -> float:
    """Share of each row's exact neighbours (N, k) present in ``found`` (N, k'), averaged over rows."""
    if exact.numel() == 0:
        return float("nan")
    hit = (found.unsqueeze(2) == exact.unsqueeze(1)).any(1)
    return float(hit.float().mean())
