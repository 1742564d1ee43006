"""k-nearest-neighbour search backends (exact torch, FAISS flat/IVF, clustered torch)."""

from esseg.knn.search import BACKENDS, ClusteredIndex, knn_search, torch_exact_search

__all__ = ["BACKENDS", "ClusteredIndex", "knn_search", "torch_exact_search"]
