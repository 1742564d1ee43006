"""k-nearest-neighbour search backends (exact torch, plain-torch IVF index, FAISS flat/IVF/HNSW)."""

from esseg.knn.index import IVFIndex
from esseg.knn.search import (
    AUTO_INDEX_MIN_CLASSES, AUTO_INDEX_MIN_CLASSES_FAISS, BACKENDS, EXACT_BACKENDS, ClusteredIndex, FaissIndex,
    faiss_available, knn_search, resolve_backend, torch_exact_search,
)

__all__ = [
    "AUTO_INDEX_MIN_CLASSES", "AUTO_INDEX_MIN_CLASSES_FAISS", "BACKENDS", "EXACT_BACKENDS", "ClusteredIndex",
    "FaissIndex", "IVFIndex", "faiss_available", "knn_search", "resolve_backend", "torch_exact_search",
]
