"""Pascal VOC 2012 segmentation, plain and with the SBD "aug" training masks.

Layout (``root`` may be ``VOC2012/`` itself, ``VOCdevkit/`` or the directory above it)::

    VOCdevkit/VOC2012/JPEGImages/{id}.jpg
    VOCdevkit/VOC2012/SegmentationClass/{id}.png        palette PNG: value = class, 255 = void
    VOCdevkit/VOC2012/SegmentationClassAug/{id}.png     grayscale PNG (VOCAug only)
    VOCdevkit/VOC2012/ImageSets/Segmentation/{train,val,trainaug}.txt
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from esseg.data._files import PairedFileDataset, check_pairs, find_root, read_split_file
from esseg.data.classes import voc_space

LAYOUT = "VOCdevkit/VOC2012/{JPEGImages,SegmentationClass,ImageSets/Segmentation/{train,val}.txt}"
SUBDIRS = ("VOC2012", "VOCdevkit/VOC2012")
AUG_SPLITS = ("train", "trainaug")


class VOC(PairedFileDataset):
    """Pascal VOC 2012: 21 classes (background included); PNG value = train id, 255 = void.

    Args:
        root: ``VOC2012/``, ``VOCdevkit/`` or the directory holding ``VOCdevkit/``.
        split: a list in ``ImageSets/Segmentation/`` without ``.txt``: ``"train"``, ``"val"``...
        transforms: paired transform ``(image, label) -> (tensor, tensor)``; see base class.
    """

    classes = voc_space().classes
    palette = voc_space().palette
    name = "VOC"

    def __init__(self, root, split: str = "train", transforms: Callable | None = None):
        super().__init__(root, split, transforms)
        base = find_root(root, self.name, "JPEGImages", LAYOUT, SUBDIRS)
        split_file = base / "ImageSets" / "Segmentation" / f"{self._list_name(split)}.txt"
        ids = read_split_file(split_file, self.name)
        self.samples = [(base / "JPEGImages" / f"{i}.jpg", self._label_path(base, split, i)) for i in ids]
        check_pairs(self.samples, self.name, split_file)
        self.use_label_space(voc_space())

    def _list_name(self, split: str) -> str:
        return split

    def _label_path(self, base: Path, split: str, sample_id: str) -> Path:
        return base / "SegmentationClass" / f"{sample_id}.png"


class VOCAug(VOC):
    """VOC 2012 with the SBD-augmented training set (10,582 images).

    ``split="train"`` (or ``"trainaug"``) reads ``ImageSets/Segmentation/trainaug.txt`` with
    masks from ``SegmentationClassAug/``, falling back to ``SegmentationClass/`` for ids that
    only VOC annotates (mmseg's converter writes SBD masks only); any other split (``"val"``)
    is plain VOC. Args as :class:`VOC`.
    """

    name = "VOCAug"

    def _list_name(self, split: str) -> str:
        return "trainaug" if split in AUG_SPLITS else split

    def _label_path(self, base: Path, split: str, sample_id: str) -> Path:
        voc = super()._label_path(base, split, sample_id)
        aug = base / "SegmentationClassAug" / f"{sample_id}.png"
        if split in AUG_SPLITS and (aug.is_file() or not voc.is_file()):
            return aug
        return voc
