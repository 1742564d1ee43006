"""PASCAL-Context: all 459 classes ("PC-459") or the usual 59-class subset ("PC-59").

Layout (``root`` may be ``VOC2010/``, ``VOCdevkit/`` or the directory holding ``VOCdevkit/``)::

    VOCdevkit/VOC2010/JPEGImages/<id>.jpg
    VOCdevkit/VOC2010/trainval/<id>.mat          Context release; key LabelMap, 0 = unlabelled, 1..459
    VOCdevkit/VOC2010/ImageSets/SegmentationContext/{train,val}.txt    (or pascalcontext_{train,val}.txt)
    VOCdevkit/VOC2010/annotations_detectron2/pc459_val/<id>.tif        prepared val labels (optional):
                                                                       uint16, LabelMap - 1, 65535 = ignore

``trainval/`` may also sit beside ``VOCdevkit/`` (where the Context tarball unpacks by default).
PC-459: train id = LabelMap value - 1, ``ignore_index`` 65535. PC-59: the 59 classes of
``pascal_context_59_classes.tsv`` (each with its LabelMap value), every other value -> 255.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import scipy.io

from esseg.data._files import DOCS, PairedFileDataset, check_pairs, find_root, read_split_file, unreadable
from esseg.data.ade20k_full import read_prepared_label
from esseg.data.classes import pascal_context_space
from esseg.errors import DatasetError

LAYOUT = (
    "VOCdevkit/VOC2010/{JPEGImages/<id>.jpg, trainval/<id>.mat, ImageSets/SegmentationContext/{train,val}.txt} "
    "or VOCdevkit/VOC2010/annotations_detectron2/pc459_val/<id>.tif"
)
SUBDIRS = ("VOC2010", "VOCdevkit/VOC2010")
SPLITS = ("train", "val")
LAYOUTS = ("auto", "mat", "prepared")
KEY = "LabelMap"
PREPARED = Path("annotations_detectron2") / "pc459_val"


def read_label_map(path: Path) -> np.ndarray:
    """The ``LabelMap`` of a Context ``.mat`` file as int64 ``(H, W)`` (uint16 or integral double on disk).

    Raises:
        DatasetError: the file is unreadable, has no ``LabelMap``, is not 2-D or holds non-integers.
    """
    try:
        mat = scipy.io.loadmat(path, variable_names=[KEY])
    except Exception as err:
        raise unreadable("annotation", path, err) from err
    if KEY not in mat:
        raise DatasetError(
            f"annotation {path} has no variable '{KEY}'; expected a PASCAL-Context trainval/<id>.mat "
            "(re-extract trainval.tar.gz)"
        )
    raw = np.asarray(mat[KEY])
    if raw.ndim != 2:
        raise DatasetError(
            f"annotation {path}: '{KEY}' has shape {raw.shape}; expected one (H, W) index map of class values, "
            "not colours or a stack"
        )
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
            raise DatasetError(f"annotation {path}: '{KEY}' holds non-integer values; expected class values 0..459")
        raw = raw.astype(np.int64)
    return raw


class PascalContext459(PairedFileDataset):
    """PASCAL-Context with all 459 classes: LabelMap value ``v`` -> train id ``v - 1``, 0 -> 65535.

    Args:
        root: ``VOC2010/``, ``VOCdevkit/`` or the directory holding ``VOCdevkit/``.
        split: ``"train"`` (4,998 images) or ``"val"`` (5,105).
        transforms: paired transform ``(image, label) -> (tensor, tensor)``; see base class.
        layout: ``"mat"`` (the release's ``trainval/<id>.mat`` and a split list), ``"prepared"``
            (``annotations_detectron2/pc459_val/*.tif``, val only; the folder is the split) or
            ``"auto"``: prepared for ``val`` when that folder exists, else mat.

    Shapes:
        ``load(i)`` -> PIL RGB image ``(W, H)`` and int64 labels ``(H, W)`` in ``[0, C)`` or
        ``ignore_index`` (65535 for PC-459, 255 for PC-59).
    """

    num_context_classes = 459
    name = "PASCAL-Context-459"
    classes = pascal_context_space(459).classes
    palette = pascal_context_space(459).palette
    ignore_index = pascal_context_space(459).ignore_index

    def __init__(self, root, split: str = "train", transforms: Callable | None = None, layout: str = "auto"):
        super().__init__(root, split, transforms)
        if split not in SPLITS:
            raise DatasetError(f"unknown {self.name} split {split!r}; use one of {', '.join(SPLITS)}")
        if layout not in LAYOUTS:
            raise DatasetError(f"unknown {self.name} layout {layout!r}; use one of {', '.join(LAYOUTS)}")
        if layout == "prepared" and split != "val":
            raise DatasetError(
                f"{self.name}: the prepared layout ({PREPARED}) holds only the val split; "
                f"use layout='mat' for {split!r}"
            )
        self.base = find_root(root, self.name, "JPEGImages", LAYOUT, SUBDIRS)
        prepared = self.base / PREPARED
        use_prepared = layout == "prepared" or (layout == "auto" and split == "val" and prepared.is_dir())
        self.layout = "prepared" if use_prepared else "mat"
        if use_prepared:
            if not prepared.is_dir():
                raise DatasetError(f"{self.name}: prepared folder {prepared} not found; expected {LAYOUT} ({DOCS})")
            ids = sorted(p.stem for p in prepared.glob("*.tif"))
            self.samples = [(self.base / "JPEGImages" / f"{i}.jpg", prepared / f"{i}.tif") for i in ids]
            check_pairs(self.samples, self.name, prepared)
            self.use_label_space(pascal_context_space(self.num_context_classes, "train_ids"))
        else:
            ids = read_split_file(self._split_file(split), self.name)
            mats = self._mat_dir()
            self.samples = [(self.base / "JPEGImages" / f"{i}.jpg", mats / f"{i}.mat") for i in ids]
            check_pairs(self.samples, self.name, mats)
            self.use_label_space(pascal_context_space(self.num_context_classes, "labelmap"))

    def _split_file(self, split: str) -> Path:
        candidates = [
            self.base / "ImageSets" / "SegmentationContext" / f"{split}.txt",
            self.base / f"pascalcontext_{split}.txt",
        ]
        for path in candidates:
            if path.is_file():
                return path
        raise DatasetError(
            f"{self.name}: split file not found: looked for {' and '.join(map(str, candidates))}; "
            f"put the Context {split} list (one image id per line) there ({DOCS})"
        )

    def _mat_dir(self) -> Path:
        # VOC2010/trainval (CAT-Seg's place), else beside VOC2010/ or VOCdevkit/ (where the tarball unpacks)
        candidates = [self.base / "trainval", self.base.parent / "trainval", self.base.parent.parent / "trainval"]
        for path in candidates:
            if path.is_dir():
                return path
        raise DatasetError(
            f"{self.name}: no trainval/ folder of .mat labels: looked for {', '.join(map(str, candidates))}; "
            f"extract the Context release's trainval.tar.gz into {self.base} ({DOCS})"
        )

    def read_label(self, path: Path) -> np.ndarray:
        """Raw values: the ``.mat`` LabelMap (0..459) or the prepared TIFF (0..458, 65535)."""
        if self.layout == "prepared":
            return read_prepared_label(path)
        return read_label_map(path)


class PascalContext59(PascalContext459):
    """PASCAL-Context's 59-class subset (PC-59): the other 400 classes and unlabelled pixels -> 255.

    Reads the same files as :class:`PascalContext459` (the ``.mat`` LabelMaps or the prepared
    ``pc459_val`` TIFFs), mapping each of the 59 classes' LabelMap value to its train id. Args as
    :class:`PascalContext459`.
    """

    num_context_classes = 59
    name = "PASCAL-Context-59"
    classes = pascal_context_space(59).classes
    palette = pascal_context_space(59).palette
    ignore_index = pascal_context_space(59).ignore_index
