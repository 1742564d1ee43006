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
    d2 = (class_embeddings - class_embeddings[cand[:, 0]]).pow(2).sum(1)
    return torch.relu(margin - d2.clamp_min(1e-12).sqrt()).mean()
