"""COCO+LVIS (1284 classes, paper Sec. 4.3) read from the output of ``esseg build-coco-lvis``.

Layout: one builder output directory per split under ``root``::

    root/train/{classes.tsv, index.tsv, masks/*.png}    built from lvis_v1_train.json
    root/val/{classes.tsv, index.tsv, masks/*.png}      built from lvis_v1_val.json

Masks are uint16 PNGs: 0 = unlabelled -> ``ignore_index`` (65535), value ``v`` in 1..1284 ->
train id ``v - 1``. Images are found under ``coco_root`` (the directory holding ``train2017/``
and ``val2017/``): the argument if given, else the ``--coco-root`` recorded in ``index.tsv``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from esseg.data._files import pass_root, read_image, unreadable
from esseg.data.base import SegmentationDataset, bit_palette, default_ignore_index
from esseg.errors import DatasetError


def read_classes(path: Path) -> list[str]:
    """Class names from a builder ``classes.tsv``, in train-id order (row ``v`` -> id ``v-1``)."""
    if not path.is_file():
        raise DatasetError(f"{path} not found: rebuild this split with `esseg build-coco-lvis`")
    lines = path.read_text().splitlines()[1:]
    rows = [line.split("\t") for line in lines if line]
    if [int(r[0]) for r in rows] != list(range(1, len(rows) + 1)):
        raise DatasetError(f"{path}: values must run 1..{len(rows)} in order; rebuild with `esseg build-coco-lvis`")
    return [r[1] for r in rows]



class COCOLVIS(SegmentationDataset):
    """The merged COCO-Stuff + LVIS v1 dataset (1284 classes) built by ``esseg build-coco-lvis``.

    Args:
        root: directory holding one builder output per split (``root/train``, ``root/val``).
        split: ``"train"`` or ``"val"`` (any subdirectory of ``root`` with an ``index.tsv``).
        transforms: paired transforms, see :class:`~esseg.data.base.SegmentationDataset`.
        coco_root: directory holding ``train2017/`` and ``val2017/``; defaults to the one
            recorded at build time.
    """

    ignore_index = 65535

    def __init__(self, root, split: str = "train", transforms=None, coco_root=None):
        super().__init__(root, split, transforms)
        if root is None:
            raise DatasetError(
                f"coco_lvis: no dataset root given; {pass_root('the folder holding train/ and val/ from `esseg build-coco-lvis`')}"
            )
        self.split_dir = Path(root) / split
        index = self.split_dir / "index.tsv"
        if not index.is_file():
            raise DatasetError(
                f"{index} not found: build it with `esseg build-coco-lvis --lvis-json lvis_v1_{split}.json "
                f"--coco-stuff-json stuff_train2017.json stuff_val2017.json --out {self.split_dir} --coco-root COCO` "
                "(root holds one build per split)"
            )
        self.classes = read_classes(self.split_dir / "classes.tsv")
        self.palette = bit_palette(len(self.classes))
        self.ignore_index = default_ignore_index(len(self.classes))
        lines = index.read_text().splitlines()
        recorded = lines[0][len("# coco_root="):] if lines and lines[0].startswith("# coco_root=") else None
        self.coco_root = Path(coco_root or recorded) if (coco_root or recorded) else None
        rows = [line.split("\t") for line in lines if line and not line.startswith("#")][1:]
        self.samples = [(image, mask, int(h), int(w)) for image, mask, h, w in rows]

    def __len__(self) -> int:
        return len(self.samples)

    def sample_name(self, index: int) -> str:
        return Path(self.samples[index][0]).stem

    def load(self, index: int):
        """``(PIL RGB image, int64 (H, W) train ids / ignore_index)`` of sample ``index``."""
        image_rel, _, height, width = self.samples[index]
        if self.coco_root is None:
            raise DatasetError(
                f"{self.split_dir / 'index.tsv'} records no coco_root: pass coco_root=<dir with train2017/> "
                "or rebuild with --coco-root"
            )
        image_path = self.coco_root / image_rel
        if not image_path.is_file():
            raise DatasetError(f"{image_path} not found: coco_root must hold the COCO 2017 images ({image_rel})")
        image = read_image(image_path)  # a corrupt or oversized file -> DatasetError naming it
        if image.size != (width, height):
            raise DatasetError(
                f"{image_path} is {image.size[0]}x{image.size[1]}, index.tsv says {width}x{height}: check coco_root"
            )
        return image, self.load_label(index)

    def load_label(self, index: int) -> np.ndarray:
        """The int64 ``(H, W)`` train ids of sample ``index`` (no image read, no coco_root needed)."""
        _, mask_rel, height, width = self.samples[index]
        mask_path = self.split_dir / mask_rel
        if not mask_path.is_file():
            raise DatasetError(f"{mask_path} not found: rerun `esseg build-coco-lvis` with --out {self.split_dir}")
        try:
            with Image.open(mask_path) as im:
                mask = np.asarray(im, dtype=np.int64)
        except Exception as err:  # truncated PNG, not an image, decompression bomb, ...
            raise unreadable("mask", mask_path, err) from None
        if mask.shape != (height, width):
            raise DatasetError(f"{mask_path} is {mask.shape[1]}x{mask.shape[0]}, index.tsv says {width}x{height}: rebuild it")
        if mask.size and mask.max() > self.num_classes:
            raise DatasetError(
                f"mask values must be in [0, {self.num_classes}]; found {mask.max()} in {mask_path}: "
                "rebuild it with the JSONs that made classes.tsv"
            )
        label = mask - 1
        label[mask == 0] = self.ignore_index
        return label
