"""ADE20K SceneParsing (ADEChallengeData2016), 150 classes.

Layout (``root`` may be ``ADEChallengeData2016/`` or the directory holding it)::

    ADEChallengeData2016/images/{training,validation}/ADE_*.jpg
    ADEChallengeData2016/annotations/{training,validation}/ADE_*.png   value 0 = other, 1..150
"""

from __future__ import annotations

from typing import Callable

from esseg.data._files import PairedFileDataset, check_pairs, find_root
from esseg.data.classes import ade20k_space
from esseg.errors import DatasetError

LAYOUT = "ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*"
SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}


class ADE20K(PairedFileDataset):
    """ADE20K: PNG value 0 ('other objects') -> 255, values 1..150 -> train ids 0..149.

    Args:
        root: ``ADEChallengeData2016/`` or its parent.
        split: ``"train"``/``"training"`` or ``"val"``/``"validation"``.
        transforms: paired transform ``(image, label) -> (tensor, tensor)``; see base class.
    """

    classes = ade20k_space().classes
    palette = ade20k_space().palette

    def __init__(self, root, split: str = "train", transforms: Callable | None = None):
        super().__init__(root, split, transforms)
        if split not in SPLITS:
            raise DatasetError(f"unknown ADE20K split {split!r}; use one of {', '.join(SPLITS)}")
        base = find_root(root, "ADE20K", "annotations", LAYOUT, ("ADEChallengeData2016",))
        image_dir = base / "images" / SPLITS[split]
        if not image_dir.is_dir():
            raise DatasetError(f"ADE20K: split directory {image_dir} not found; expected {LAYOUT}")
        images = sorted(image_dir.glob("ADE_*.jpg"))
        self.samples = [(p, base / "annotations" / SPLITS[split] / f"{p.stem}.png") for p in images]
        check_pairs(self.samples, "ADE20K", image_dir)
        self.use_label_space(ade20k_space())
