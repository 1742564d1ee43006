"""Shared input handling for the losses: flatten, validate labels, drop ignored pixels."""

from __future__ import annotations

import torch


def flatten_pixels(
    pixel_embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """(B,d,H,W)+(B,H,W) or (N,d)+(N,) -> x (N,d), y (N,), and the label shape for scatter-back."""
    if pixel_embeddings.dim() == 4:
        if labels.dim() != 3 or labels.shape != (pixel_embeddings.shape[0], *pixel_embeddings.shape[2:]):
            raise ValueError(
                f"pixel_embeddings (B,d,H,W)={tuple(pixel_embeddings.shape)} need labels (B,H,W); "
                f"got {tuple(labels.shape)} (upsample the embeddings to the label size first)"
            )
        x = pixel_embeddings.permute(0, 2, 3, 1).reshape(-1, pixel_embeddings.shape[1])
    elif pixel_embeddings.dim() == 2:
        if labels.shape != pixel_embeddings.shape[:1]:
            raise ValueError(
                f"pixel_embeddings (N,d)={tuple(pixel_embeddings.shape)} need labels (N,); got {tuple(labels.shape)}"
            )
        x = pixel_embeddings
    else:
        raise ValueError(f"pixel_embeddings must be (B,d,H,W) or (N,d); got {tuple(pixel_embeddings.shape)}")
    return x, labels.reshape(-1), tuple(labels.shape)


def check_tau(tau: float) -> None:
    """Raise unless the temperature ``tau`` is a positive number (logits are ``-d^2 / tau``)."""
    if not tau > 0:  # also refuses NaN
        raise ValueError(f"tau must be > 0 (the softmax temperature, paper: 0.05); got {tau}")


def check_tail_samples(m: int, negatives: str, name: str = "negatives") -> None:
    """Raise unless ``tail_samples`` m is >= 0, and 0 unless the negatives are the k nearest
    (``name`` is the argument that chooses them: ``negatives`` or ESSLoss's ``mode``)."""
    if m < 0 or (m > 0 and negatives != "knn"):
        raise ValueError(f"tail_samples must be >= 0 and needs {name}='knn'; got {m} with {name}={negatives!r}")


def valid_mask(labels: torch.Tensor, num_classes: int, ignore_index: int) -> torch.Tensor:
    """Boolean mask of non-ignored labels; raises if any other label is outside [0, C)."""
    if 0 <= ignore_index < num_classes:
        suggestion = 65535 if num_classes <= 65535 else 2**31 - 1
        raise ValueError(
            f"ignore_index={ignore_index} is a real class id when num_classes={num_classes}; "
            f"use an ignore_index outside [0, num_classes), e.g. {suggestion} or -1"
        )
    if labels.dtype.is_floating_point:
        raise ValueError(f"labels must be an integer tensor; got {labels.dtype}")
    valid = labels != ignore_index
    bad = valid & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        value = int(labels[bad][0])
        raise ValueError(
            f"labels must be in [0, {num_classes}) or equal ignore_index={ignore_index}; found {value}"
        )
    return valid


def reduce_loss(
    per_pixel: torch.Tensor, valid: torch.Tensor, shape: tuple[int, ...], reduction: str
) -> torch.Tensor:
    """Reduce the per-valid-pixel losses; ``"none"`` scatters back with 0 at ignored pixels."""
    if reduction == "mean":
        return per_pixel.mean() if per_pixel.numel() else per_pixel.sum()
    if reduction == "sum":
        return per_pixel.sum()
    if reduction == "none":
        out = per_pixel.new_zeros(valid.shape)
        out[valid] = per_pixel
        return out.reshape(shape)
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")


def zero_loss(*tensors: torch.Tensor) -> torch.Tensor:
    """A 0 that depends on every input, so backward() gives finite (zero) gradients."""
    return sum(t.sum() * 0.0 for t in tensors)
