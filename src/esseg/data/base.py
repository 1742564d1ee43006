"""The contract every esseg dataset follows.

A dataset yields ``(image, label)``: ``image`` a float tensor (3, H, W) normalised with the
ImageNet mean/std, ``label`` an int64 tensor (H, W) holding train ids in ``[0, num_classes)``
or ``ignore_index``. Raw samples come from :meth:`SegmentationDataset.load`, which returns a
PIL RGB image and an int64 numpy label map already mapped to train ids; paired transforms
(``esseg.data.transforms``) then crop/scale/flip both and convert them to tensors.

``ignore_index`` is 255 for label spaces of at most 255 classes, 65535 up to 65535 classes
(255 is a real class id there: COCO+LVIS has 1284 classes) and ``2**31 - 1`` above that, where
65535 is a real class id too (label maps then need 32-bit storage: TIFF or ``.npy``).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# The ignore label above 65535 classes: the largest int32, so label maps fit 32-bit storage.
IGNORE_INDEX_INT32 = 2**31 - 1


def default_ignore_index(num_classes: int) -> int:
    """The smallest of 255 (uint8), 65535 (uint16 PNG) and ``2**31 - 1`` (int32) that is not a class id."""
    if num_classes <= 255:
        return 255
    return 65535 if num_classes <= 65535 else IGNORE_INDEX_INT32


def bit_palette(num_classes: int) -> np.ndarray:
    """Deterministic distinct colours ``(num_classes, 3)`` uint8 (VOC bit-interleaving of ``id + 1``)."""
    values = np.arange(1, num_classes + 1)
    colours = np.zeros((num_classes, 3), dtype=np.int64)
    for bit in range(8):
        for channel in range(3):
            colours[:, channel] |= ((values >> (3 * bit + channel)) & 1) << (7 - bit)
    return colours.astype(np.uint8)


def to_tensors(image, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """PIL/uint8 HWC image and (H, W) label -> normalised (3,H,W) float and (H,W) int64."""
    arr = np.asarray(image, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    img = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    img = (img - mean) / std
    return img, torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: subclasses set ``classes``/``palette`` and implement ``__len__``/``load``.

    Args:
        root: dataset root directory (layout documented per dataset in ``docs/datasets.md``).
        split: split name, e.g. ``"train"`` or ``"val"``.
        transforms: callable ``(pil_image, label_ndarray) -> (image_tensor, label_tensor)``;
            ``None`` only converts to tensors and normalises.
    """

    classes: Sequence[str] = ()
    palette: np.ndarray | None = None  # (num_classes, 3) uint8
    ignore_index: int = 255

    def __init__(self, root, split: str, transforms: Callable | None = None):
        self.root = root
        self.split = split
        self.transforms = transforms

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self, index: int):
        """Return ``(PIL.Image RGB, np.ndarray int64 (H, W))`` with train ids / ignore_index."""
        raise NotImplementedError  # pragma: no cover - abstract

    def sample_name(self, index: int) -> str:
        """A short human-readable name for sample ``index`` (file stem by default)."""
        return str(index)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, label = self.load(index)
        if self.transforms is not None:
            return self.transforms(image, label)
        return to_tensors(image, label)
