"""Small image helpers for predictions: palettes, colourised masks, overlays and panels (uint8 HWC).

Used by the engine (prediction PNGs, TensorBoard panels, the demo report) and the figures; they
live with visualisation, and import nothing from the engine."""

from __future__ import annotations

import numpy as np
import torch

from esseg.data.base import IMAGENET_MEAN, IMAGENET_STD


def make_palette(num_classes: int, seed: int = 0) -> np.ndarray:
    """A fixed pseudo-random ``(C, 3)`` uint8 palette for label spaces without one."""
    rng = np.random.default_rng(seed)
    return rng.integers(30, 256, size=(num_classes, 3), dtype=np.uint8)


def get_palette(palette, num_classes: int) -> np.ndarray:
    """``palette`` (anything array-like of shape (>=C, 3)) as uint8, or a generated one."""
    if palette is None:
        return make_palette(num_classes)
    arr = np.asarray(palette.cpu() if isinstance(palette, torch.Tensor) else palette, dtype=np.uint8)
    if arr.ndim != 2 or arr.shape[0] < num_classes or arr.shape[1] != 3:
        return make_palette(num_classes)
    return arr[:num_classes]


def colorize(label: np.ndarray | torch.Tensor, palette: np.ndarray, ignore_index: int | None = None) -> np.ndarray:
    """``(H, W)`` class ids -> ``(H, W, 3)`` uint8; ids outside the palette (ignore) are black."""
    label = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    out = np.zeros((*label.shape, 3), dtype=np.uint8)
    valid = (label >= 0) & (label < len(palette))
    if ignore_index is not None:
        valid &= label != ignore_index
    out[valid] = palette[label[valid]]
    return out


def denormalize(image: torch.Tensor) -> np.ndarray:
    """An ImageNet-normalised ``(3, H, W)`` tensor -> ``(H, W, 3)`` uint8."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * std + mean).clamp(0, 1)
    return (rgb.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colourised mask over an RGB image (both ``(H, W, 3)`` uint8)."""
    return ((1 - alpha) * image.astype(np.float32) + alpha * color.astype(np.float32)).round().astype(np.uint8)


def panel(rows: list[list[np.ndarray]], gap: int = 2, scale: int = 1) -> np.ndarray:
    """Tile equally-sized-per-row ``(H, W, 3)`` images into a white-gapped grid, upscaled by ``scale``."""
    if scale > 1:
        rows = [[np.kron(im, np.ones((scale, scale, 1), dtype=np.uint8)) for im in row] for row in rows]
    height = [max(im.shape[0] for im in row) for row in rows]
    width = max(sum(im.shape[1] for im in row) + gap * (len(row) - 1) for row in rows)
    out = np.full((sum(height) + gap * (len(rows) - 1), width, 3), 255, dtype=np.uint8)
    y = 0
    for row, h in zip(rows, height):
        x = 0
        for im in row:
            out[y : y + im.shape[0], x : x + im.shape[1]] = im
            x += im.shape[1] + gap
        y += h + gap
    return out


__all__ = ["colorize", "denormalize", "get_palette", "make_palette", "overlay", "panel"]
