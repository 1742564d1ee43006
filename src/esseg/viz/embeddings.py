"""The numbers behind the analysis figures: projections, class frequencies, pixel samples.

Pure torch/numpy (no plotting), so they can be unit-tested on synthetic data and reused in a
notebook. The figures themselves are in :mod:`esseg.viz.figures`.
"""

from __future__ import annotations

import numpy as np
import torch

from esseg.errors import EssegError

PROJECTIONS = ("pca", "tsne")


def _sklearn_tsne():
    try:
        from sklearn.manifold import TSNE  # noqa: PLC0415
    except ImportError:
        raise EssegError('--method tsne needs scikit-learn; install it with pip install "esseg[viz]" (or use --method pca)') from None
    return TSNE


def pca(points: torch.Tensor, dim: int = 2) -> torch.Tensor:
    """Project ``points`` (N, d) onto their ``dim`` leading principal components.

    Centred SVD, ``(x - mean) @ V[:dim].T``; each axis is signed so that its largest loading is
    positive (deterministic output). With ``d < dim`` the missing axes are zero.

    Returns:
        (N, dim) float32 coordinates, the first axis carrying the most variance.
    """
    x = points.detach().to(torch.float64).cpu()
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"pca needs a non-empty (N, d) tensor; got shape {tuple(points.shape)}")
    x = x - x.mean(0, keepdim=True)
    _, _, vh = torch.linalg.svd(x, full_matrices=False)
    axes = vh[:dim]
    flip = torch.sign(axes.gather(1, axes.abs().argmax(1, keepdim=True)))
    axes = axes * torch.where(flip == 0, torch.ones_like(flip), flip)
    out = x @ axes.T
    if out.shape[1] < dim:
        out = torch.cat([out, out.new_zeros(out.shape[0], dim - out.shape[1])], dim=1)
    return out.float()


def project(points: torch.Tensor, dim: int = 2, method: str = "pca", seed: int = 0) -> torch.Tensor:
    """Embed ``points`` (N, d) in ``dim`` dimensions for plotting.

    Args:
        points: (N, d) embeddings (pixel and class embeddings stacked, so they share one map).
        dim: output dimensions (2 for scatter plots, 3 for RGB).
        method: ``"pca"`` (:func:`pca`, exact and fast) or ``"tsne"`` (scikit-learn, lazy
            import; neighbourhoods are kept, global distances are not).
        seed: t-SNE's random state.

    Returns:
        (N, dim) float32 coordinates.
    """
    if method == "pca":
        return pca(points, dim)
    if method != "tsne":
        raise EssegError(f"unknown projection method {method!r}; use one of {', '.join(PROJECTIONS)}")
    tsne = _sklearn_tsne()
    x = points.detach().cpu().double().numpy()
    if x.shape[0] < 5:
        raise EssegError(f"t-SNE needs at least 5 points; got {x.shape[0]}")
    perplexity = float(min(30.0, (x.shape[0] - 1) / 3))
    out = tsne(n_components=dim, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
    return torch.from_numpy(np.asarray(out, dtype=np.float32))


def embedding_rgb(pixel_embeddings: torch.Tensor, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Pixel embeddings (d, H, W) -> an (H, W, 3) uint8 image: PCA to 3-D, each axis stretched to [0, 255].

    The stretch maps the ``low``/``high`` percentiles of each axis to 0/255 (clipped), so a few
    outlying pixels do not wash out the rest. Pixels of the same colour have nearby embeddings.
    """
    d, h, w = pixel_embeddings.shape
    xyz = pca(pixel_embeddings.reshape(d, h * w).T, 3)
    lo = torch.quantile(xyz, low / 100, dim=0)
    hi = torch.quantile(xyz, high / 100, dim=0)
    scaled = ((xyz - lo) / (hi - lo).clamp(min=1e-8)).clamp(0, 1)
    return (scaled.reshape(h, w, 3).numpy() * 255).round().astype(np.uint8)


def sample_indices(length: int, num: int | None) -> list[int]:
    """``num`` indices spread evenly over ``range(length)`` (all of them when ``num`` is None or larger)."""
    if num is None or num >= length:
        return list(range(length))
    if num < 1:
        raise EssegError(f"--num-samples must be >= 1; got {num}")
    return sorted({int(i) for i in np.linspace(0, length - 1, num).round()})


def class_pixel_counts(dataset, num_samples: int | None = None) -> torch.Tensor:
    """Ground-truth pixels per class over ``num_samples`` evenly spread samples of ``dataset``.

    Returns:
        (C,) int64 counts (``ignore_index`` pixels are not counted).
    """
    c, ignore = dataset.num_classes, dataset.ignore_index
    counts = torch.zeros(c, dtype=torch.int64)
    for i in sample_indices(len(dataset), num_samples):
        label = dataset[i][1].reshape(-1)
        label = label[label != ignore]
        if label.numel() and (label.min() < 0 or label.max() >= c):
            raise EssegError(f"labels of sample {i} must be in [0, {c}) or equal ignore_index={ignore}; "
                             f"found {int(label[(label < 0) | (label >= c)][0])}")
        counts += torch.bincount(label, minlength=c)
    return counts


def top_classes(counts: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` most frequent classes, most frequent first (ties: lower index first)."""
    if n < 2:
        raise EssegError(f"--top must be >= 2 (a dendrogram needs two leaves); got {n}")
    order = sorted(range(len(counts)), key=lambda c: (-int(counts[c]), c))
    return torch.tensor(order[:n], dtype=torch.long)


def subsample_pixels(labels: torch.Tensor, ignore_index: int, max_pixels: int, seed: int = 0) -> torch.Tensor:
    """Flat indices of at most ``max_pixels`` labelled pixels of ``labels`` (H, W), drawn without replacement."""
    flat = labels.reshape(-1)
    valid = torch.nonzero(flat != ignore_index).squeeze(1)
    if valid.numel() <= max_pixels:
        return valid
    g = torch.Generator().manual_seed(seed)
    return valid[torch.randperm(valid.numel(), generator=g)[:max_pixels]].sort().values


__all__ = ["PROJECTIONS", "class_pixel_counts", "embedding_rgb", "pca", "project", "sample_indices",
           "subsample_pixels", "top_classes"]
