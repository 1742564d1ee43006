"""The numbers behind the figures, on synthetic data: projections, RGB, counts, sampling."""

import sys

import numpy as np
import pytest
import torch

from esseg.errors import EssegError
from esseg.viz.embeddings import (class_pixel_counts, embedding_rgb, pca, project, sample_indices, subsample_pixels,
                                  top_classes)


def clusters(n_per: int = 40, d: int = 16, k: int = 3, seed: int = 0):
    """``k`` tight Gaussian clusters in ``d`` dimensions, centres far apart along random directions."""
    g = torch.Generator().manual_seed(seed)
    centres = 5 * torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    labels = torch.arange(k).repeat_interleave(n_per)
    return centres[labels] + 0.2 * torch.randn(k * n_per, d, generator=g), labels


def nearest_centroid_accuracy(xy: torch.Tensor, labels: torch.Tensor) -> float:
    cent = torch.stack([xy[labels == c].mean(0) for c in labels.unique()])
    return float((torch.cdist(xy, cent).argmin(1) == labels).float().mean())


def separation(xy: torch.Tensor, labels: torch.Tensor) -> float:
    """Smallest distance between cluster centres over the largest within-cluster spread."""
    cent = torch.stack([xy[labels == c].mean(0) for c in labels.unique()])
    spread = max(float((xy[labels == c] - cent[c]).norm(dim=1).max()) for c in labels.unique())
    gaps = torch.pdist(cent)
    return float(gaps.min()) / spread


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_projection_separates_known_clusters(method):
    if method == "tsne":
        pytest.importorskip("sklearn")
    x, labels = clusters()
    xy = project(x, 2, method, seed=0)
    assert xy.shape == (len(x), 2) and xy.dtype == torch.float32
    assert nearest_centroid_accuracy(xy, labels) == 1.0
    assert separation(xy, labels) > 1.0  # every cluster lies apart from the others


def test_pca_matches_reference_and_is_deterministic():
    x, _ = clusters(d=6)
    xy = pca(x, 2)
    centred = (x - x.mean(0)).double()
    _, s, _ = torch.linalg.svd(centred, full_matrices=False)
    assert torch.allclose(xy.double().var(0, unbiased=False) * len(x), s[:2] ** 2, rtol=1e-4)  # variance per axis
    assert torch.equal(pca(x, 2), xy)
    flipped = pca(-x, 2)  # a sign change of the data does not change the (sign-normalised) picture
    assert torch.allclose(flipped.abs(), xy.abs(), atol=1e-4)
    assert pca(torch.randn(10, 2), 3)[:, 2].abs().max() == 0  # missing axes are zero


def test_tsne_without_scikit_learn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(EssegError, match=r'pip install "esseg\[viz\]"'):
        project(torch.randn(20, 4), 2, "tsne")
    with pytest.raises(EssegError, match="unknown projection method 'umap'; use one of pca, tsne"):
        project(torch.randn(20, 4), 2, "umap")


def test_embedding_rgb_colours_pixels_by_embedding():
    emb = torch.zeros(5, 8, 8)
    emb[0, :4] = 1.0  # top half one embedding, bottom half another
    emb[1, 4:] = 1.0
    rgb = embedding_rgb(emb)
    assert rgb.shape == (8, 8, 3) and rgb.dtype == np.uint8
    assert (rgb[:4] == rgb[0, 0]).all() and (rgb[4:] == rgb[7, 7]).all()
    assert not np.array_equal(rgb[0, 0], rgb[7, 7])


class Labels(torch.utils.data.Dataset):
    num_classes, ignore_index = 4, 255

    def __init__(self, maps):
        self.maps = maps

    def __len__(self):
        return len(self.maps)

    def __getitem__(self, i):
        return torch.zeros(3, 2, 2), torch.tensor(self.maps[i])


def test_class_pixel_counts_and_top_classes():
    ds = Labels([[[0, 0], [1, 255]], [[3, 3], [3, 1]], [[2, 2], [2, 2]]])
    assert class_pixel_counts(ds).tolist() == [2, 2, 4, 3]
    assert class_pixel_counts(ds, num_samples=2).tolist() == [2, 1, 4, 0]  # samples 0 and 2
    assert top_classes(torch.tensor([2, 2, 4, 3]), 3).tolist() == [2, 3, 0]  # ties: lower index first
    with pytest.raises(EssegError, match="--top must be >= 2"):
        top_classes(torch.tensor([1, 2]), 1)
    with pytest.raises(EssegError, match=r"labels of sample 0 must be in \[0, 4\)"):
        class_pixel_counts(Labels([[[7, 0], [0, 0]]]))


def test_sampling_helpers():
    assert sample_indices(10, None) == list(range(10)) and sample_indices(10, 3) == [0, 4, 9]
    labels = torch.tensor([[0, 255], [1, 2]])
    assert subsample_pixels(labels, 255, 10).tolist() == [0, 2, 3]
    picked = subsample_pixels(torch.zeros(50, 50, dtype=torch.long), 255, 100, seed=1)
    assert len(picked) == 100 and len(picked.unique()) == 100
    assert torch.equal(picked, subsample_pixels(torch.zeros(50, 50, dtype=torch.long), 255, 100, seed=1))
