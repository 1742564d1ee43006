"""ESS losses: kNN cross-entropy (Eq. 6), exact chunked cross-entropy (Eq. 5), max-margin (Eq. 7)."""

from esseg.losses.exact_ce import exact_cross_entropy
from esseg.losses.knn_ce import candidate_sq_dists, drop_target, knn_cross_entropy, knn_negatives, random_negatives
from esseg.losses.margin import max_margin_loss, nearest_other
from esseg.losses.modules import ESSLoss, SoftmaxCrossEntropyLoss

__all__ = [
    "ESSLoss",
    "SoftmaxCrossEntropyLoss",
    "candidate_sq_dists",
    "drop_target",
    "exact_cross_entropy",
    "knn_cross_entropy",
    "knn_negatives",
    "max_margin_loss",
    "nearest_other",
    "random_negatives",
]
