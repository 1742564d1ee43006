"""Builders of tiny datasets in their real on-disk layouts, written into ``tmp_path``.

Each ``make_*`` fixture returns a function ``make(labels=None, ...) -> root`` where ``labels``
maps a split name to a list of raw ``(H, W)`` label arrays (the values as stored on disk);
one image of the same size is written per label.
"""

from __future__ import annotations

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
