"""esseg: embedding-based scalable semantic segmentation (ESS) for PyTorch."""

__version__ = "0.1.0"
