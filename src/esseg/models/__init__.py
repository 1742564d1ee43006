"""ESS and baseline segmentation models."""

from esseg.models.factory import create_model
from esseg.models.segmenter import BaselineSegmenter, EmbeddingSegmenter, nearest_class

__all__ = ["BaselineSegmenter", "EmbeddingSegmenter", "create_model", "nearest_class"]
