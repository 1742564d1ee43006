"""Wrappers that turn any dense network into an ESS model or a C-logit baseline."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from esseg.errors import NonFiniteError
from esseg.knn import knn_search, resolve_backend


def _upsample(out: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if out.shape[-2:] == tuple(size):
        return out
    return F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def _split_params(net: nn.Module) -> dict[str, list[nn.Parameter]]:
    backbone = list(net.encoder.parameters()) if isinstance(getattr(net, "encoder", None), nn.Module) else []
    ids = {id(p) for p in backbone}
    return {"backbone": backbone, "head": [p for p in net.parameters() if id(p) not in ids]}


def check_finite(values: torch.Tensor, what: str) -> None:
    """Raise :class:`~esseg.errors.NonFiniteError` if ``values`` hold NaN or inf (one check, one sync)."""
    if not bool(torch.isfinite(values).all()):
        bad = int((~torch.isfinite(values)).sum())
        raise NonFiniteError(
            f"the model's {what} hold NaN or inf ({bad} of {values.numel()} values): its weights are not finite "
            "(training diverged?); use an earlier checkpoint or retrain with a lower optim.lr"
        )


@torch.no_grad()
def nearest_class(
    pixel_embeddings: torch.Tensor, class_embeddings: torch.Tensor, chunk_size: int | None = None, k: int = 1,
    backend: str = "auto",
) -> torch.Tensor:
    """Label of the nearest class embedding of each pixel (squared L2), in blocks.

    ``label_i = argmin_c ||x_i - mu_c||^2``; with ``k > 1`` the k nearest, ascending.

    Args:
        pixel_embeddings: (B, d, H, W) or (N, d). class_embeddings: (C, d).
        chunk_size: pixels per search block (default: bounded by the search's block size).
        backend: kNN backend (:func:`esseg.knn.knn_search`): ``"auto"`` searches exactly below
            ``AUTO_INDEX_MIN_CLASSES`` classes and with the inverted-file index above (built once
            per class table and cached until the table changes); ``"torch"`` is always exact.

    Returns:
        (B, H, W) or (N,) int64 labels; with k > 1, (B, k, H, W) or (N, k).

    Raises:
        NonFiniteError: an embedding holds NaN or inf (a diverged model); a label would be arbitrary.
    """
    four_d = pixel_embeddings.dim() == 4
    x = pixel_embeddings.permute(0, 2, 3, 1).reshape(-1, pixel_embeddings.shape[1]) if four_d else pixel_embeddings
    x = x.to(class_embeddings.dtype)
    check_finite(class_embeddings, "class embeddings")
    check_finite(x, "pixel embeddings")
    step = chunk_size or x.shape[0] or 1
    idx = torch.cat([knn_search(x[s : s + step], class_embeddings, k, backend=backend)[1] for s in range(0, x.shape[0], step)] or [
        torch.empty((0, k), dtype=torch.long, device=x.device)
    ])
    if not four_d:
        return idx[:, 0] if k == 1 else idx
    b, _, h, w = pixel_embeddings.shape
    idx = idx.view(b, h, w, k).permute(0, 3, 1, 2)
    return idx[:, 0] if k == 1 else idx


@torch.no_grad()
def search_agreement(
    pixel_embeddings: torch.Tensor, class_embeddings: torch.Tensor, backend: str = "auto", sample: int = 4096
) -> float | None:
    """Top-1 agreement of ``backend`` with exact search on ``sample`` evenly spaced pixels.

    ``mean_i [nearest_class(x_i; backend) == argmin_c ||x_i - mu_c||^2 in float64]``; None when
    ``backend`` resolves to exact search at this C (nothing to compare).
    """
    if resolve_backend(class_embeddings.shape[0], backend) == "torch":
        return None
    d = pixel_embeddings.shape[1]
    x = pixel_embeddings.permute(0, 2, 3, 1).reshape(-1, d) if pixel_embeddings.dim() == 4 else pixel_embeddings
    x = x[torch.linspace(0, x.shape[0] - 1, min(sample, x.shape[0]), device=x.device).long()]
    fast = nearest_class(x, class_embeddings, backend=backend)
    # The reference is exact search in float64: float32 exact search itself can swap near-ties
    # (a random-init network gives every pixel nearly the same embedding, so one tie flips all).
    exact = nearest_class(x.double(), class_embeddings.double(), backend="torch")
    return float((fast == exact).float().mean())


class EmbeddingSegmenter(nn.Module):
    """An ESS model: ``net`` outputs d-dim pixel embeddings; a learned (C, d) table holds classes.

    ``forward`` upsamples the net's (B, d, h, w) output to the input size and then, with
    ``normalize=True``, L2-normalises it along d (after upsampling, so the loss sees unit
    vectors: Sec. 3.1). Class embeddings are normalised the same way. A pixel's label is its
    nearest class embedding.

    Args:
        net: any module mapping images (B, 3, H, W) to (B, embedding_dim, h, w).
        num_classes: C. embedding_dim: d. normalize: project both onto the unit sphere.

    Shapes:
        forward: (B, 3, H, W) -> pixel_embeddings (B, d, H, W)
        class_embeddings(): (C, d); predict: (B, 3, H, W) -> (B, H, W) int64
    """

    is_embedding = True

    def __init__(self, net: nn.Module, num_classes: int, embedding_dim: int, normalize: bool = True):
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"num_classes must be >= 2; got {num_classes}")
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1; got {embedding_dim}")
        self.net = net
        self.num_classes, self.embedding_dim, self.normalize = num_classes, embedding_dim, normalize
        table = torch.randn(num_classes, embedding_dim)
        self.class_table = nn.Parameter(F.normalize(table, dim=1) if normalize else table / math.sqrt(embedding_dim))
        self.config: dict = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = _upsample(self.net(images), images.shape[-2:])
        if out.shape[1] != self.embedding_dim:
            raise ValueError(f"net returned {out.shape[1]} channels; expected embedding_dim={self.embedding_dim}")
        return F.normalize(out, dim=1) if self.normalize else out

    def class_embeddings(self) -> torch.Tensor:
        """The (C, d) class embeddings, unit length when ``normalize=True``."""
        return F.normalize(self.class_table, dim=1) if self.normalize else self.class_table

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H, W) int64: each pixel's nearest class embedding.

        Raises :class:`~esseg.errors.NonFiniteError` when the embeddings hold NaN/inf (a diverged model).
        """
        return nearest_class(self(images), self.class_embeddings())

    @torch.no_grad()
    def predict_topk(self, images: torch.Tensor, k: int = 5) -> torch.Tensor:
        """(B, 3, H, W) -> (B, k, H, W) int64: the k nearest classes per pixel, nearest first."""
        return nearest_class(self(images), self.class_embeddings(), k=k)

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimiser group: ``backbone`` (``net.encoder``), ``head``, ``class_embeddings``."""
        return {**_split_params(self.net), "class_embeddings": [self.class_table]}


class BaselineSegmenter(nn.Module):
    """The C-logit baseline with the same interface: ``forward`` gives (B, C, H, W) logits.

    Args:
        net: any module mapping images (B, 3, H, W) to (B, num_classes, h, w).
        num_classes: C.
    """

    is_embedding = False
    embedding_dim = None

    def __init__(self, net: nn.Module, num_classes: int):
        super().__init__()
        self.net, self.num_classes = net, num_classes
        self.config: dict = {}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return _upsample(self.net(images), images.shape[-2:])

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, H, W) int64: ``argmax_c`` of the logits (NonFiniteError on NaN/inf logits)."""
        logits = self(images)
        check_finite(logits, "logits")
        return logits.argmax(1)

    @torch.no_grad()
    def predict_topk(self, images: torch.Tensor, k: int = 5) -> torch.Tensor:
        """(B, 3, H, W) -> (B, k, H, W) int64: the k highest-scoring classes per pixel."""
        logits = self(images)
        check_finite(logits, "logits")
        return logits.topk(k, dim=1).indices

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by optimiser group: ``backbone`` (``net.encoder``) and ``head``."""
        return {**_split_params(self.net), "class_embeddings": []}
