"""Analysis figures and export (``esseg viz``, ``esseg export-embeddings``, ``esseg export``).

- ``esseg.viz.embeddings``: the numbers (PCA / t-SNE projection, embeddings as RGB, class
  pixel counts, pixel subsampling), pure torch, no plotting.
- ``esseg.viz.figures``: one ``plot_*`` function per figure, data in, PNG out (matplotlib,
  no pyplot).
- ``esseg.viz.analysis``: the figures from a checkpoint and its dataset (paper Fig. 5, 6/7,
  9, 10, 11, 12/13).
- ``esseg.viz.export``: class embeddings as files; the model as a TorchScript/ONNX graph
  that outputs the label map.
- ``esseg.viz.commands``: the CLI.

See ``docs/visualisation.md``. Nothing heavy is imported here.
"""

from esseg.viz.embeddings import embedding_rgb, pca, project

__all__ = ["embedding_rgb", "pca", "project"]
