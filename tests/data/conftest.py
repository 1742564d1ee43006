"""Builders of tiny datasets in their real on-disk layouts, written into ``tmp_path``.

Each ``make_*`` fixture returns a function ``make(labels=None, ...) -> root`` where ``labels``
maps a split name to a list of raw ``(H, W)`` label arrays (the values as stored on disk);
one image of the same size is written per label.
"""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from esseg.data.classes import voc_palette_256


def write_image(path: Path, height: int, width: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def write_label_png(path: Path, label: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.asarray(label)
    if label.max(initial=0) > 255:
        Image.fromarray(label.astype(np.uint16)).save(path)
        return
    image = Image.fromarray(label.astype(np.uint8))
    if palette:
        image = image.convert("P")  # keeps the values as palette indices
        image.putpalette(voc_palette_256().ravel().tolist())
    image.save(path)


def write_lines(path: Path, lines) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{line}\n" for line in lines))


def random_labels(values, count: int = 2, shape=(6, 8), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.choice(np.asarray(values), size=shape) for _ in range(count)]


@pytest.fixture
def make_cityscapes(tmp_path):
    """Cityscapes gtFine layout; ``label_type`` picks which label file(s) to write."""

    def make(labels=None, label_type: str = "labelIds", root: Path | None = None) -> Path:
        root = root or tmp_path / "cityscapes"
        labels = labels or {"train": random_labels([0, 7, 8, 26, 33]), "val": random_labels([7, 24], 1)}
        for split, arrays in labels.items():
            for i, label in enumerate(arrays):
                stem = f"aachen_000000_{i:06d}"
                write_image(root / "leftImg8bit" / split / "aachen" / f"{stem}_leftImg8bit.png", *label.shape, seed=i)
                write_label_png(root / "gtFine" / split / "aachen" / f"{stem}_gtFine_{label_type}.png", label)
        return root

    return make


@pytest.fixture
def make_voc(tmp_path):
    """``<root>/VOCdevkit/VOC2012`` with palette PNGs; ``aug`` adds SegmentationClassAug + trainaug.txt."""

    def make(labels=None, aug: bool = False) -> Path:
        root = tmp_path / "voc"
        voc = root / "VOCdevkit" / "VOC2012"
        labels = labels or {"train": random_labels([0, 1, 20, 255]), "val": random_labels([0, 15], 1)}
        for split, arrays in labels.items():
            ids = [f"2007_{split}{i:04d}" for i in range(len(arrays))]
            label_dir, list_name = ("SegmentationClassAug", "trainaug") if aug and split == "train" else ("SegmentationClass", split)
            for i, (name, label) in enumerate(zip(ids, arrays)):
                write_image(voc / "JPEGImages" / f"{name}.jpg", *label.shape, seed=i)
                write_label_png(voc / label_dir / f"{name}.png", label, palette=label_dir == "SegmentationClass")
            write_lines(voc / "ImageSets" / "Segmentation" / f"{list_name}.txt", ids)
        return root

    return make


@pytest.fixture
def make_ade20k(tmp_path):
    """``<root>/ADEChallengeData2016/{images,annotations}/{training,validation}``."""

    def make(labels=None) -> Path:
        root = tmp_path / "ade"
        base = root / "ADEChallengeData2016"
        labels = labels or {"train": random_labels([0, 1, 2, 150]), "val": random_labels([0, 5], 1)}
        for split, arrays in labels.items():
            folder = {"train": "training", "val": "validation"}[split]
            for i, label in enumerate(arrays):
                name = f"ADE_{split}_{i:08d}"
                write_image(base / "images" / folder / f"{name}.jpg", *label.shape, seed=i)
                write_label_png(base / "annotations" / folder / f"{name}.png", label)
        return root

    return make


@pytest.fixture
def make_cocostuff10k(tmp_path):
    """COCO-Stuff-10k: ``images/*.jpg``, ``annotations/*.mat`` (key S), ``imageLists/*.txt``."""

    def make(labels=None, dtype=np.float64, key: str = "S") -> Path:
        root = tmp_path / "cocostuff10k"
        labels = labels or {"train": random_labels([0, 1, 92, 182]), "test": random_labels([0, 12, 13], 1)}
        for split, arrays in labels.items():
            ids = [f"COCO_{split}2014_{i:012d}" for i in range(len(arrays))]
            for i, (name, label) in enumerate(zip(ids, arrays)):
                write_image(root / "images" / f"{name}.jpg", *label.shape, seed=i)
                (root / "annotations").mkdir(parents=True, exist_ok=True)
                scipy.io.savemat(root / "annotations" / f"{name}.mat", {key: np.asarray(label, dtype=dtype)})
            write_lines(root / "imageLists" / f"{split}.txt", ids)
        return root

    return make


def write_ade_seg(path: Path, ids: np.ndarray, seed: int = 0) -> None:
    """An ADE20K release ``*_seg.png``: object id = (R // 10) * 256 + G; R's last digit and B carry noise."""
    ids = np.asarray(ids, dtype=np.int64)
    rng = np.random.default_rng(seed)
    rgb = np.stack([np.minimum((ids // 256) * 10 + rng.integers(0, 10, ids.shape), 255), ids % 256, rng.integers(0, 256, ids.shape)], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb.astype(np.uint8)).save(path)


def write_uint16_tif(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(label).astype(np.uint16)).save(path)


ADE_FOLDERS = {"train": "training", "val": "validation"}


@pytest.fixture
def make_ade20k_full(tmp_path):
    """``<root>/ADE20K_2021_17_01``: ``layout="raw"`` (labels = object ids, written as RGB ``_seg.png``
    under scene folders) or ``"prepared"`` (labels = uint16 TIFF values under ``*_detectron2/``)."""

    def make(labels=None, layout: str = "raw", root: Path | None = None) -> Path:
        root = root or tmp_path / "ade_full"
        base = root / "ADE20K_2021_17_01"
        labels = labels or {"train": random_labels([0, 2978, 312, 3148, 5]), "val": random_labels([0, 401, 1831], 1)}
        for split, arrays in labels.items():
            folder = ADE_FOLDERS[split]
            for i, label in enumerate(arrays):
                name = f"ADE_{split}_{i + 1:08d}"
                if layout == "raw":
                    scene = base / "images/ADE" / folder / ("cultural/apse__indoor" if i % 2 else "urban/street")
                    write_image(scene / f"{name}.jpg", *label.shape, seed=i)
                    write_ade_seg(scene / f"{name}_seg.png", label, seed=i)
                else:
                    write_image(base / "images_detectron2" / folder / f"{name}.jpg", *label.shape, seed=i)
                    write_uint16_tif(base / "annotations_detectron2" / folder / f"{name}.tif", label)
        return root

    return make


@pytest.fixture
def make_pascal_context(tmp_path):
    """``<root>/VOCdevkit/VOC2010`` with ``trainval/<id>.mat`` (key LabelMap, uint16) and
    ``ImageSets/SegmentationContext/<split>.txt``; ``prepared`` also writes the val labels as
    ``annotations_detectron2/pc459_val/<id>.tif`` (LabelMap - 1, 0 -> 65535)."""

    def make(labels=None, prepared: bool = False, dtype=np.uint16, key: str = "LabelMap") -> Path:
        root = tmp_path / "pascal_context"
        voc = root / "VOCdevkit" / "VOC2010"
        labels = labels or {"train": random_labels([0, 2, 300, 459]), "val": random_labels([0, 9, 458], 1)}
        for split, arrays in labels.items():
            ids = [f"2008_{split[:2]}{i:04d}" for i in range(len(arrays))]
            for i, (name, label) in enumerate(zip(ids, arrays)):
                write_image(voc / "JPEGImages" / f"{name}.jpg", *label.shape, seed=i)
                (voc / "trainval").mkdir(parents=True, exist_ok=True)
                scipy.io.savemat(voc / "trainval" / f"{name}.mat", {key: np.asarray(label).astype(dtype)})
                if prepared and split == "val":
                    tif = np.where(np.asarray(label) == 0, 65535, np.asarray(label) - 1)
                    write_uint16_tif(voc / "annotations_detectron2" / "pc459_val" / f"{name}.tif", tif)
            write_lines(voc / "ImageSets" / "SegmentationContext" / f"{split}.txt", ids)
        return root

    return make


@pytest.fixture
def label_writers():
    """The label writers above, for tests that rewrite one file (``from conftest import`` is ambiguous)."""
    return types.SimpleNamespace(ade_seg=write_ade_seg, uint16_tif=write_uint16_tif, image=write_image)
