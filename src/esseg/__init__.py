"""esseg: embedding-based scalable semantic segmentation (ESS) for PyTorch.

The public API: models (:func:`create_model`, :class:`EmbeddingSegmenter`), kNN search
(:func:`knn_search`), losses (:func:`knn_cross_entropy`, :func:`exact_cross_entropy`,
:func:`max_margin_loss`, :class:`ESSLoss`), prediction (:func:`nearest_class`) and the
optimiser recipe (:func:`build_optimizer`, :class:`PolyLR`, :func:`set_backbone_bn_momentum`).
"""

__version__ = "0.1.0"

from esseg.knn import knn_search
from esseg.losses import ESSLoss, SoftmaxCrossEntropyLoss, exact_cross_entropy, knn_cross_entropy, max_margin_loss
from esseg.models import BaselineSegmenter, EmbeddingSegmenter, create_model, nearest_class
from esseg.optim import PolyLR, build_optimizer, set_backbone_bn_momentum

__all__ = [
    "BaselineSegmenter",
    "ESSLoss",
    "EmbeddingSegmenter",
    "PolyLR",
    "SoftmaxCrossEntropyLoss",
    "__version__",
    "build_optimizer",
    "create_model",
    "exact_cross_entropy",
    "knn_cross_entropy",
    "knn_search",
    "max_margin_loss",
    "nearest_class",
    "set_backbone_bn_momentum",
]
