"""Cityscapes (gtFine), 19 evaluated classes.

Layout under ``root``::

    leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png       (official ids 0..33)
    gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelTrainIds.png  (optional, 0..18 / 255)
"""

from __future__ import annotations

from typing import Callable

from esseg.data._files import PairedFileDataset, check_pairs, find_root
from esseg.data.classes import cityscapes_space
from esseg.errors import DatasetError

LAYOUT = "leftImg8bit/{split}/{city}/*_leftImg8bit.png and gtFine/{split}/{city}/*_gtFine_labelIds.png"
LABEL_TYPES = ("auto", "labelIds", "labelTrainIds")


class Cityscapes(PairedFileDataset):
    """Cityscapes fine annotations mapped to the 19 train ids (everything else -> 255).

    Args:
        root: directory holding ``leftImg8bit/`` and ``gtFine/``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        transforms: paired transform ``(image, label) -> (tensor, tensor)``; see base class.
        label_type: ``"labelIds"`` (map official ids through the id -> trainId table),
            ``"labelTrainIds"`` (read ready ``*_gtFine_labelTrainIds.png``) or ``"auto"``
            (trainId maps when the first sample has one, else labelIds).
    """

    classes = cityscapes_space().classes
    palette = cityscapes_space().palette

    def __init__(self, root, split: str = "train", transforms: Callable | None = None, label_type: str = "auto"):
        super().__init__(root, split, transforms)
        if label_type not in LABEL_TYPES:
            raise DatasetError(f"unknown Cityscapes label_type {label_type!r}; use one of {', '.join(LABEL_TYPES)}")
        base = find_root(root, "Cityscapes", "leftImg8bit", LAYOUT)
        image_dir = base / "leftImg8bit" / split
        if not image_dir.is_dir():
            raise DatasetError(f"Cityscapes: split directory {image_dir} not found; expected {LAYOUT}")
        images = sorted(image_dir.glob("*/*_leftImg8bit.png"))

        def label_path(image, kind):
            stem = image.name[: -len("_leftImg8bit.png")]
            return base / "gtFine" / split / image.parent.name / f"{stem}_gtFine_{kind}.png"

        if label_type == "auto":
            train_ids = bool(images) and label_path(images[0], "labelTrainIds").is_file()
            label_type = "labelTrainIds" if train_ids else "labelIds"
        self.label_type = label_type
        self.samples = [(image, label_path(image, label_type)) for image in images]
        check_pairs(self.samples, "Cityscapes", image_dir)
        self.use_label_space(cityscapes_space(label_type))
