"""Max-margin regulariser on the class embeddings (paper Eq. 7), without a C x C matrix."""

from __future__ import annotations

import torch

from esseg.knn import knn_search


@torch.no_grad()
def nearest_other(class_embeddings: torch.Tensor, **search_options) -> torch.Tensor:
    """Index of each class's nearest *other* class -> (C,) int64 (exact by default)."""
    c = class_embeddings.shape[0]
    _, idx = knn_search(class_embeddings, class_embeddings, 2, **search_options)
    self_first = idx[:, 0] == torch.arange(c, device=idx.device)
    return torch.where(self_first, idx[:, 1], idx[:, 0])


def max_margin_loss(
    class_embeddings: torch.Tensor, margin: float = 0.5, neighbours: torch.Tensor | None = None, **search_options
) -> torch.Tensor:
    """``L_r = (1/C) sum_i max(0, m - d_i)``, ``d_i = min_{j != i} ||mu_i - mu_j||`` (Eq. 7).

    The nearest other class of each class is found by a blocked kNN search without gradient
    (O(C) memory); the distance to it is then recomputed with gradient. Since the minimum is
    attained at that neighbour, value and gradient equal the brute-force C x C formula.

    Args:
        class_embeddings: (C, d), C >= 2. margin: m, in the embeddings' distance units.
        neighbours: optional (C,) precomputed nearest-other indices (e.g. refreshed every few
            steps); searched when None.
        **search_options: passed to :func:`esseg.knn.knn_search`.

    Returns:
        Scalar tensor.
    """
    c = class_embeddings.shape[0]
    if c < 2:
        raise ValueError(f"max_margin_loss needs at least 2 classes; got C={c}")
    if neighbours is None:
        neighbours = nearest_other(class_embeddings.detach(), **search_options)
    d = (class_embeddings - class_embeddings[neighbours]).pow(2).sum(1).clamp_min(1e-12).sqrt()
    return torch.relu(margin - d).mean()
