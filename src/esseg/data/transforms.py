"""Paired transforms on ``(PIL RGB image, np.ndarray (H, W) label)``.

Every transform is a callable ``(image, label) -> (image, label)``; :class:`ToTensor` ends a
pipeline with ``(FloatTensor (3, H, W) ImageNet-normalised, LongTensor (H, W))``. Labels are
only ever resized with NEAREST, through 32-bit PIL images, so ids up to 65535 survive; padded
label pixels get ``ignore_index`` and padded image pixels the ImageNet mean (0 once
normalised). Randomness comes from Python's ``random`` (and torch's RNG inside ColorJitter),
both of which PyTorch seeds per DataLoader worker.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from esseg.data.base import IMAGENET_MEAN, to_tensors
from esseg.errors import ConfigError

MEAN_FILL = tuple(round(255 * m) for m in IMAGENET_MEAN)
VAL_MODES = ("whole", "crop_val")
Resampling = Image.Resampling


def _pair(size) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or min(pair) <= 0:
        raise ConfigError(f"crop size must be a positive int or (height, width), got {size!r}")
    return int(pair[0]), int(pair[1])


def _resize(image, label, width: int, height: int, interpolation):
    image = image.resize((width, height), interpolation)
    as_int32 = Image.fromarray(np.ascontiguousarray(label, dtype=np.int32))
    label = np.asarray(as_int32.resize((width, height), Resampling.NEAREST), dtype=np.int64)
    return image, label


def _pad(image, label, height: int, width: int, fill, ignore_index: int):
    w, h = image.size
    if w >= width and h >= height:
        return image, label
    out_w, out_h = max(w, width), max(h, height)
    padded = Image.new("RGB", (out_w, out_h), fill)
    padded.paste(image, (0, 0))
    padded_label = np.full((out_h, out_w), ignore_index, dtype=np.int64)
    padded_label[:h, :w] = label
    return padded, padded_label


def _crop(image, label, top: int, left: int, height: int, width: int):
    return image.crop((left, top, left + width, top + height)), label[top : top + height, left : left + width]


class Compose:
    """Apply paired transforms in order."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms = list(transforms)

    def __call__(self, image, label):
        for t in self.transforms:
            image, label = t(image, label)
        return image, label


class RandomScale:
    """Resize both by a factor drawn uniformly from ``scale_range`` (label with NEAREST).

    Args:
        scale_range: ``(low, high)`` factors, e.g. ``(0.5, 2.0)``.
        interpolation: image resampling filter (labels always use NEAREST).
    """

    def __init__(self, scale_range=(0.5, 2.0), interpolation=Resampling.BILINEAR):
        self.scale_range = tuple(scale_range)
        self.interpolation = interpolation

    def __call__(self, image, label):
        s = random.uniform(*self.scale_range)
        w, h = image.size
        return _resize(image, label, max(1, round(w * s)), max(1, round(h * s)), self.interpolation)


class Resize:
    """Deterministic resize: an int sets the shorter side, an ``(h, w)`` pair the exact size."""

    def __init__(self, size, interpolation=Resampling.BILINEAR):
        self.size = size
        self.interpolation = interpolation

    def __call__(self, image, label):
        w, h = image.size
        if isinstance(self.size, int):
            s = self.size / min(w, h)
            return _resize(image, label, max(1, round(w * s)), max(1, round(h * s)), self.interpolation)
        height, width = _pair(self.size)
        return _resize(image, label, width, height, self.interpolation)


class RandomCrop:
    """Random ``(h, w)`` crop, padding bottom/right first when the sample is smaller.

    Args:
        size: int or ``(h, w)``.
        ignore_index: label value of padded pixels.
        fill: RGB of padded image pixels (default ImageNet mean, i.e. 0 after normalisation).
    """

    def __init__(self, size, ignore_index: int, fill=MEAN_FILL):
        self.size = _pair(size)
        self.ignore_index = ignore_index
        self.fill = tuple(fill)

    def __call__(self, image, label):
        h, w = self.size
        image, label = _pad(image, label, h, w, self.fill, self.ignore_index)
        top = random.randint(0, image.size[1] - h)
        left = random.randint(0, image.size[0] - w)
        return _crop(image, label, top, left, h, w)


class CenterCrop(RandomCrop):
    """Central ``(h, w)`` crop, padding bottom/right with the mean / ``ignore_index`` if needed."""

    def __call__(self, image, label):
        h, w = self.size
        image, label = _pad(image, label, h, w, self.fill, self.ignore_index)
        return _crop(image, label, (image.size[1] - h) // 2, (image.size[0] - w) // 2, h, w)


class RandomHorizontalFlip:
    """Mirror image and label left-right with probability ``p``."""

    def __init__(self, p: float = 0.5):
        self.p = p

    def __call__(self, image, label):
        if random.random() < self.p:
            return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT), np.ascontiguousarray(label[:, ::-1])
        return image, label


class ColorJitter:
    """Photometric jitter of the image only (torchvision's ColorJitter); the label is untouched."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.0):
        from torchvision.transforms import ColorJitter as _Jitter

        self.jitter = _Jitter(brightness, contrast, saturation, hue)

    def __call__(self, image, label):
        return self.jitter(image), label


class ToTensor:
    """``(PIL image, label)`` -> ``(FloatTensor (3, H, W) normalised, LongTensor (H, W))``."""

    def __call__(self, image, label):
        return to_tensors(image, label)


def build_transforms(
    train: bool,
    crop_size,
    ignore_index: int,
    scale_range=(0.5, 2.0),
    flip: bool = True,
    color_jitter: bool = False,
    val_mode: str = "whole",
) -> Compose:
    """The standard pipelines.

    Train: RandomScale(``scale_range``; ``None`` skips it) -> RandomCrop(``crop_size``, padded
    with ``ignore_index``) -> RandomHorizontalFlip (if ``flip``) -> ColorJitter (if
    ``color_jitter``) -> ToTensor. Validation with ``val_mode="whole"``: ToTensor only (full
    resolution); ``"crop_val"``: shorter side resized to ``min(crop_size)`` -> CenterCrop ->
    ToTensor, so images of different sizes batch together.

    Args:
        train: training or validation pipeline.
        crop_size: int or ``(h, w)``.
        ignore_index: label of padded pixels.

    Returns:
        callable ``(PIL image, np label (H, W)) -> (FloatTensor (3, h, w), LongTensor (h, w))``.
    """
    crop = _pair(crop_size)
    if train:
        steps = [RandomScale(scale_range)] if scale_range else []
        steps.append(RandomCrop(crop, ignore_index))
        steps += [RandomHorizontalFlip()] if flip else []
        steps += [ColorJitter()] if color_jitter else []
        return Compose([*steps, ToTensor()])
    if val_mode == "whole":
        return Compose([ToTensor()])
    if val_mode == "crop_val":
        return Compose([Resize(min(crop)), CenterCrop(crop, ignore_index), ToTensor()])
    raise ConfigError(f"unknown val_mode {val_mode!r}; use one of {', '.join(VAL_MODES)}")


__all__ = [
    "CenterCrop",
    "ColorJitter",
    "Compose",
    "RandomCrop",
    "RandomHorizontalFlip",
    "RandomScale",
    "Resize",
    "ToTensor",
    "build_transforms",
]
