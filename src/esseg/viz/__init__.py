"""Analysis figures (``esseg viz``); the CLI of ``esseg export-embeddings`` and ``esseg export``.

- ``esseg.viz.embeddings``: the numbers (PCA / t-SNE projection, embeddings as RGB, class
  pixel counts, pixel subsampling), pure torch, no plotting.
- ``esseg.viz.images``: palettes, colourised masks, overlays and panels (uint8 images; the
  engine draws its prediction PNGs and panels with them).
- ``esseg.viz.figures``: one ``plot_*`` function per figure, data in, PNG out (matplotlib,
  no pyplot).
- ``esseg.viz.analysis``: the figures from a checkpoint and its dataset (paper Fig. 5, 6/7,
  9, 10, 11, 12/13).
- ``esseg.viz.commands``: the CLI (the export work is in :mod:`esseg.export`).

See ``docs/visualisation.md``. Nothing heavy is imported here.
"""

from esseg.viz.embeddings import embedding_rgb, pca, project

__all__ = ["embedding_rgb", "pca", "project"]
