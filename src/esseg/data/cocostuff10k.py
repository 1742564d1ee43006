"""COCO-Stuff-10k (v1.1), 182 classes (or the 171 used ones).

Layout under ``root``::

    images/{name}.jpg
    annotations/{name}.mat        MATLAB file, key ``S``: (H, W) ids, 0 = unlabeled, 1..182
    imageLists/{train,test}.txt   one {name} per line (9,000 / 1,000)
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from esseg.data._files import PairedFileDataset, check_pairs, find_root, read_split_file, unreadable
from esseg.data.classes import cocostuff_space
from esseg.errors import DatasetError

LAYOUT = "images/*.jpg, annotations/*.mat and imageLists/{train,test}.txt"
SPLITS = {"train": "train", "test": "test", "val": "test"}


class COCOStuff10k(PairedFileDataset):
    """COCO-Stuff-10k with ``.mat`` annotations; id 0 -> 255.

    Args:
        root: the directory holding ``images/``, ``annotations/`` and ``imageLists/``.
        split: ``"train"`` or ``"test"`` (``"val"`` is an alias of ``"test"``).
        transforms: paired transform ``(image, label) -> (tensor, tensor)``; see base class.
        label_space: ``"182"`` (default, id ``i`` -> ``i - 1``) or ``"171"`` (the used classes
            in mmseg's order; the 11 unused thing ids -> 255).
    """

    classes = cocostuff_space("182").classes
    palette = cocostuff_space("182").palette

    def __init__(self, root, split: str = "train", transforms: Callable | None = None, label_space: str = "182"):
        super().__init__(root, split, transforms)
        self.use_label_space(cocostuff_space(str(label_space)))
        if split not in SPLITS:
            raise DatasetError(f"unknown COCO-Stuff-10k split {split!r}; use one of {', '.join(SPLITS)}")
        base = find_root(root, "COCO-Stuff-10k", "imageLists", LAYOUT, ("cocostuff-10k-v1.1", "cocostuff-10k"))
        split_file = base / "imageLists" / f"{SPLITS[split]}.txt"
        ids = read_split_file(split_file, "COCO-Stuff-10k")
        self.samples = [(base / "images" / f"{i}.jpg", base / "annotations" / f"{i}.mat") for i in ids]
        check_pairs(self.samples, "COCO-Stuff-10k", split_file)

    def read_label(self, path: Path) -> np.ndarray:
        """The ``S`` array of a ``.mat`` annotation, cast to int64 (it may be stored as double)."""
        import scipy.io

        try:
            mat = scipy.io.loadmat(path, variable_names=["S"])
        except Exception as err:
            raise unreadable("annotation", path, err) from err
        if "S" not in mat:
            raise DatasetError(f"annotation {path} has no variable 'S'; expected a COCO-Stuff-10k .mat label map")
        raw = np.asarray(mat["S"])
        if raw.dtype.kind == "f":
            if not np.all(np.isfinite(raw)) or np.any(raw != np.round(raw)):
                raise DatasetError(f"annotation {path}: 'S' holds non-integer values; expected class ids 0..182")
            raw = raw.astype(np.int64)
        return raw
