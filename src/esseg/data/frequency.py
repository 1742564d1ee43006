"""Per-class training frequency: the number of training images that contain each class.

This is what long-tail evaluation groups classes by (``esseg.metrics.frequency_groups``:
rare / common / frequent, LVIS-style). ``esseg data inspect`` reports it per class,
``esseg train`` stores it in the checkpoint (``class_frequency``) and ``esseg eval`` reads it
from there.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from esseg._io import atomic_write_text
from esseg.errors import DatasetError


def images_per_class(label: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C,)`` int64 with 1 where class ``c`` occurs in ``label`` (ids outside ``[0, C)`` skipped)."""
    present = np.unique(np.asarray(label))
    present = present[(present >= 0) & (present < num_classes)]
    out = np.zeros(num_classes, dtype=np.int64)
    out[present] = 1
    return out


def class_image_counts(dataset, progress: bool = False) -> np.ndarray:
    """Number of samples of ``dataset`` whose label contains each class, ``(C,)`` int64.

    ``n_c = |{i : c appears in label_i}|``; ``ignore_index`` pixels count for no class. Uses
    ``dataset.class_image_counts()`` when the dataset offers it (e.g. computed from an
    annotation file without rendering masks), else reads every label with ``load_label``
    (or ``load``).

    Raises:
        DatasetError: from the dataset, when a label cannot be read or holds invalid values.
    """
    num_classes = dataset.num_classes
    if hasattr(dataset, "class_image_counts"):
        counts = np.asarray(dataset.class_image_counts(), dtype=np.int64)
        if counts.shape != (num_classes,):
            raise DatasetError(f"{type(dataset).__name__}.class_image_counts() gave shape {counts.shape}, expected ({num_classes},)")
        return counts
    counts = np.zeros(num_classes, dtype=np.int64)
    read = dataset.load_label if hasattr(dataset, "load_label") else (lambda i: dataset.load(i)[1])
    for index in tqdm(range(len(dataset)), desc="class frequency", disable=not progress, leave=False):
        counts += images_per_class(read(index), num_classes)
    return counts


def read_class_frequency(path: str | Path, num_classes: int) -> np.ndarray:
    """Training images per class from a JSON file: an ``esseg data inspect --json`` report
    (``class_pixels[i].images``) or a run folder's ``class_frequency.json`` (``class_frequency``).

    Raises:
        DatasetError: when the file is missing, of another kind, or has another class count.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"class frequency file {path} not found; write it with `esseg data inspect --json {path}`") from None
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read class frequency file {path} ({err}); it must be JSON") from None
    if isinstance(data, dict) and isinstance(data.get("class_frequency"), list):
        values = data["class_frequency"]
    elif isinstance(data, dict) and isinstance(data.get("class_pixels"), list) and all("images" in r for r in data["class_pixels"]):
        values = [r["images"] for r in data["class_pixels"]]
    else:
        raise DatasetError(
            f"{path} holds no per-class image counts; use the JSON of `esseg data inspect --split <train split> --json FILE`"
        )
    if len(values) != num_classes:
        raise DatasetError(f"{path} counts images for {len(values)} classes but the dataset has {num_classes}")
    return np.asarray(values, dtype=np.int64)


def training_class_frequency(setting: str | None, dataset, cache: str | Path, source: dict, progress: bool = False) -> list[int] | None:
    """The per-class training frequency a run records (config key ``data.class_frequency``).

    Args:
        setting: ``"auto"``: :func:`class_image_counts` of ``dataset`` when that is cheap (the
            dataset offers ``class_image_counts()`` or ``load_label()``, i.e. label files only;
            skipped for generated data such as glyph scenes), cached in ``cache`` so a resumed
            run does not count again; ``"none"``/``None``: skip; anything else: a JSON file for
            :func:`read_class_frequency` (e.g. an ``esseg data inspect --json`` report).
        dataset: the training split.
        cache: the run folder's ``class_frequency.json`` (``esseg.engine.run.RunFolder.class_frequency``).
        source: what identifies the counts (dataset name, root, split, options); a cache
            written for another source is recomputed.

    Returns:
        ``C`` ints, or ``None`` when skipped.
    """
    if setting in (None, "none"):
        return None
    if setting != "auto":
        return read_class_frequency(setting, dataset.num_classes).tolist()
    if not (hasattr(dataset, "class_image_counts") or hasattr(dataset, "load_label")):
        return None
    cache = Path(cache)
    key = {**source, "num_classes": dataset.num_classes}
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            saved = {}
        if saved.get("source") == json.loads(json.dumps(key)) and len(saved.get("class_frequency", ())) == dataset.num_classes:
            return [int(n) for n in saved["class_frequency"]]
    counts = class_image_counts(dataset, progress=progress).tolist()
    atomic_write_text(cache, json.dumps({"source": key, "class_frequency": counts}) + "\n")
    return counts


__all__ = ["class_image_counts", "images_per_class", "read_class_frequency", "training_class_frequency"]
