"""Max-margin regulariser on the class embeddings (paper Eq. 7), without a C x C matrix."""

from __future__ import annotations

import torch

from esseg.knn import knn_search
from esseg.losses.knn_ce import candidate_sq_dists


@torch.no_grad()
def nearest_other(class_embeddings: torch.Tensor, m: int = 1, **search_options) -> torch.Tensor:
    """The m nearest *other* classes of each class, nearest first -> (C,) for m=1, else (C, m).

    Searches m+1 neighbours and removes the class itself (or, when duplicates tie with it,
    the farthest of them), so no row contains its own index.
    """
    c = class_embeddings.shape[0]
    m = min(m, c - 1)
    _, idx = knn_search(class_embeddings, class_embeddings, m + 1, **search_options)
    own = idx == torch.arange(c, device=idx.device).unsqueeze(1)
    own[:, -1] |= ~own.any(1)
    others = idx[~own].view(c, m)
    return others[:, 0] if m == 1 else others


def max_margin_loss(
    class_embeddings: torch.Tensor, margin: float = 0.5, neighbours: torch.Tensor | None = None, **search_options
) -> torch.Tensor:
    """``L_r = (1/C) sum_i max(0, m - d_i)``, ``d_i = min_{j != i} ||mu_i - mu_j||`` (Eq. 7).

    The nearest other class of each class is found by a blocked kNN search without gradient
    (O(C) memory); the distance to it is then recomputed with gradient. Since the minimum is
    attained at that neighbour, value and gradient equal the brute-force C x C formula.

    Args:
        class_embeddings: (C, d), C >= 2. margin: m, in the embeddings' distance units.
        neighbours: optional precomputed candidates, (C,) or (C, m) other-class indices
            (e.g. from :func:`nearest_other`, refreshed every few steps); ``d_i`` is then the
            minimum over the candidates. Searched exactly when None.
        **search_options: passed to :func:`esseg.knn.knn_search`.

    Returns:
        Scalar tensor.
    """
    c = class_embeddings.shape[0]
    if c < 2:
        raise ValueError(f"max_margin_loss needs at least 2 classes; got C={c}")
    if neighbours is None:
        neighbours = nearest_other(class_embeddings.detach(), **search_options)
    cand = neighbours.view(c, -1)
    if cand.shape[1] > 1:  # the nearest candidate, chosen without a graph: d_i's value and gradient are its distance's
        with torch.no_grad():
            cand = cand.gather(1, candidate_sq_dists(class_embeddings, class_embeddings, cand).argmin(1, keepdim=True))
    return _MarginToNeighbour.apply(class_embeddings, cand[:, 0].contiguous(), float(margin))


# Rows of one chunk of the fused regulariser: bounds its temporaries (~3 MiB at d = 12).
MARGIN_CHUNK_ROWS = 1 << 16


def _margin_chunk(mu: torch.Tensor, nearest: torch.Tensor, s: int, e: int, margin: float):
    """Rows s:e -> (diff (n, d) = mu_i - mu_j, d_i (n,), hinge (n,) = max(0, m - d_i), active (n,) bool)."""
    diff = mu[s:e] - mu[nearest[s:e]]
    d2 = diff.pow(2).sum(1)
    dist = d2.clamp_min(1e-12).sqrt()
    hinge = margin - dist
    return diff, dist, hinge.clamp_min(0), (hinge > 0) & (d2 >= 1e-12)


class _MarginToNeighbour(torch.autograd.Function):
    """``(1/C) sum_i max(0, m - ||mu_i - mu_j(i)||)`` for given neighbours j(i), in row chunks.

    Autograd on the plain expression keeps (C, d) differences for the backward pass and makes
    three more (C, d) buffers in it (the gather, the difference's gradient, the scatter); this
    keeps only ``mu`` and ``j`` and writes the gradient into one (C, d) buffer:
    ``dL/dmu_i -= a_i (mu_i - mu_j) / (C d_i)`` and ``dL/dmu_j += a_i (mu_i - mu_j) / (C d_i)`` for
    each active pair (``a_i = [m - d_i > 0]``; the clamp of ``d_i^2`` at 1e-12 passes no gradient,
    as autograd's ``clamp_min`` would not). The oracle is the plain expression (tests/losses/test_margin.py).
    """

    @staticmethod
    def forward(ctx, mu: torch.Tensor, nearest: torch.Tensor, margin: float) -> torch.Tensor:
        c = mu.shape[0]
        total = mu.new_zeros((), dtype=torch.float64 if mu.dtype == torch.float64 else torch.float32)
        for s in range(0, c, MARGIN_CHUNK_ROWS):
            total += _margin_chunk(mu, nearest, s, min(c, s + MARGIN_CHUNK_ROWS), margin)[2].sum()
        ctx.save_for_backward(mu, nearest)
        ctx.margin = margin
        return (total / c).to(mu.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        mu, nearest = ctx.saved_tensors
        c = mu.shape[0]
        out = torch.zeros_like(mu)
        for s in range(0, c, MARGIN_CHUNK_ROWS):
            e = min(c, s + MARGIN_CHUNK_ROWS)
            diff, dist, _, active = _margin_chunk(mu, nearest, s, e, ctx.margin)
            coef = (grad / c) * active.to(mu.dtype) / dist
            step = diff.mul_(coef.unsqueeze(1))
            out[s:e] -= step
            out.index_add_(0, nearest[s:e], step)
        return out, None, None
