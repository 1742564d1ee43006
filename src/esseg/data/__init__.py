"""Datasets in their real on-disk formats, paired transforms and the synthetic glyph scenes.

Datasets are looked up by name in :data:`DATASETS`, a plain dict from name to
``"module:Class"``; classes are imported only when asked for.
"""

from __future__ import annotations

import importlib

from esseg.data.base import SegmentationDataset, default_ignore_index
from esseg.errors import DatasetError

DATASETS: dict[str, str] = {
    "cityscapes": "esseg.data.cityscapes:Cityscapes",
    "voc": "esseg.data.voc:VOC",
    "voc_aug": "esseg.data.voc:VOCAug",
    "ade20k": "esseg.data.ade20k:ADE20K",
    "cocostuff10k": "esseg.data.cocostuff10k:COCOStuff10k",
    "coco_lvis": "esseg.data.coco_lvis:COCOLVIS",
    "glyph_scenes": "esseg.data.glyph_scenes:GlyphScenes",
    "folder": "esseg.data.folder:FolderDataset",
    "coco": "esseg.data.coco:COCODataset",
    "ade20k_full": "esseg.data.ade20k_full:ADE20KFull",
    "pascal_context_459": "esseg.data.pascal_context:PascalContext459",
    "pascal_context_59": "esseg.data.pascal_context:PascalContext59",
}


def get_dataset_class(name: str) -> type[SegmentationDataset]:
    """Return the dataset class registered as ``name``; unknown names list the known ones."""
    if name not in DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    module, cls = DATASETS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def build_dataset(name: str, root=None, split: str = "train", transforms=None, **kwargs) -> SegmentationDataset:
    """Instantiate dataset ``name`` for ``split`` (``root`` is ignored by ``glyph_scenes``)."""
    return get_dataset_class(name)(root=root, split=split, transforms=transforms, **kwargs)


__all__ = ["DATASETS", "SegmentationDataset", "build_dataset", "default_ignore_index", "get_dataset_class"]
