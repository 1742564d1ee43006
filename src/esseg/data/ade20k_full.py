"""ADE20K-Full ("A-847"): the ``ADE20K_2021_17_01`` release, raw or as prepared by MaskFormer-style tools.

Two layouts (``root`` may be ``ADE20K_2021_17_01/``, its parent or a detectron2 ``datasets/``
folder holding ``ade/ADE20K_2021_17_01/``)::

    raw release       images/ADE/{training,validation}/<scene category>/<scene>/<name>.jpg
                      images/ADE/.../<name>_seg.png   RGB: object id = (R // 10) * 256 + G, 0 = unlabelled
                      index_ade20k.pkl                 (optional) object names, ``objectnames``
    prepared          images_detectron2/{training,validation}/<name>.jpg   short side <= 512
                      annotations_detectron2/{training,validation}/<name>.tif   uint16 train id, 65535 = ignore

Raw object ids: the ids of ``ade20k_full_847_classes.tsv`` (column ``ade_full_id``) are the
decoded ``(R // 10) * 256 + G`` values themselves. They are 1-based positions in the release's
``objectnames`` list: the release's own notebook selects object ``objectnames[i]`` with
``class_mask == i + 1`` (0 is "not annotated"), and the per-image JSON's ``name_ndx`` of e.g.
``tree`` (2855), ``building`` (312) and ``person`` (1831) equals the table's id for that name; the
MaskFormer preparation that produced the table compares decoded values with the ids directly.
So no shift is applied to the table, and the name of raw id ``v`` is ``objectnames[v - 1]``.
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from esseg._io import atomic_write_text
from esseg.data._files import DOCS, PairedFileDataset, check_pairs, read_label_png, unreadable
from esseg.data.classes import (
    ADE_FULL_MAX_RAW,
    WIDE_IGNORE,
    LabelSpace,
    ade20k_full_observed_space,
    ade20k_full_space,
)
from esseg.errors import DatasetError

NAME = "ADE20K-Full"
RELEASE = "ADE20K_2021_17_01"
LAYOUT = (
    f"{RELEASE}/images/ADE/{{training,validation}}/<scene category>/<scene>/<name>.jpg + <name>_seg.png "
    f"(raw) or {RELEASE}/{{images,annotations}}_detectron2/{{training,validation}}/ (prepared)"
)
SPLITS = {"train": "training", "val": "validation", "training": "training", "validation": "validation"}
LAYOUTS = ("auto", "raw", "prepared")
LABEL_SPACES = ("847", "full")
SEG_SUFFIX = "_seg.png"
CACHE_NAME = "esseg_ade20k_full_ids.tsv"


def decode_seg(path: Path) -> np.ndarray:
    """Object ids of a release ``*_seg.png``: ``(R // 10) * 256 + G`` as int64 ``(H, W)``.

    Raises:
        DatasetError: the file cannot be decoded or is not an RGB(A) image.
    """
    try:
        with Image.open(path) as im:
            if im.mode not in ("RGB", "RGBA"):
                raise DatasetError(
                    f"label {path} has image mode {im.mode}; expected the release's RGB {SEG_SUFFIX} "
                    f"(object id = (R // 10) * 256 + G), not a single-channel map; re-extract {RELEASE}"
                )
            rgb = np.asarray(im)
    except DatasetError:
        raise
    except Exception as err:
        raise unreadable("label", path, err) from err
    return (rgb[..., 0].astype(np.int64) // 10) * 256 + rgb[..., 1].astype(np.int64)


def read_prepared_label(path: Path) -> np.ndarray:
    """Values of a prepared uint16 label TIFF ``(H, W)``; an 8-bit file is refused (values wrapped)."""
    try:
        with Image.open(path) as im:
            mode = im.mode
    except Exception as err:
        raise unreadable("label", path, err) from err
    if mode in ("L", "P", "1"):
        raise DatasetError(
            f"label {path} is 8-bit (image mode {mode}); prepared labels are uint16 TIFFs (train ids above 255 "
            f"and the ignore value 65535 do not fit 8 bits): re-run the preparation without casting to uint8"
        )
    return read_label_png(path)


class _Opaque:
    """Stands in for every class a pickle names: it swallows its arguments and runs nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles plain containers and scalars; any other global (numpy arrays included) -> _Opaque."""

    def find_class(self, module, name):
        if module == "builtins" and name in ("set", "frozenset"):
            return {"set": set, "frozenset": frozenset}[name]
        return _Opaque


def read_object_names(path: Path) -> list[str] | None:
    """The ``objectnames`` list of the release's ``index_ade20k.pkl``, or ``None`` if unusable.

    The pickle is read without importing or calling anything it names: only lists, dicts,
    strings and numbers are rebuilt, so arrays in it (``objectPresence``...) become opaque
    placeholders and no code in the file can run.
    """
    try:
        with open(path, "rb") as f:
            index = _PlainUnpickler(f, encoding="latin1").load()
    except Exception as err:
        warnings.warn(f"{NAME}: cannot read {path} ({type(err).__name__}: {err}); classes are named id_<raw>")
        return None
    names = index.get("objectnames") if isinstance(index, dict) else None
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        warnings.warn(f"{NAME}: {path} has no list of strings 'objectnames'; classes are named id_<raw>")
        return None
    return list(names)


def scan_object_ids(seg_paths: list[Path]) -> dict[int, tuple[int, int]]:
    """``{raw id: (images containing it, pixels)}`` over the given ``*_seg.png`` (0 left out)."""
    images = np.zeros(ADE_FULL_MAX_RAW + 1, dtype=np.int64)
    pixels = np.zeros(ADE_FULL_MAX_RAW + 1, dtype=np.int64)
    for path in seg_paths:
        counts = np.bincount(decode_seg(path).ravel(), minlength=ADE_FULL_MAX_RAW + 1)
        pixels += counts
        images += counts > 0
    return {int(raw): (int(images[raw]), int(pixels[raw])) for raw in np.flatnonzero(pixels) if raw}


def _write_cache(path: Path, stats: dict[int, tuple[int, int]], num_masks: int) -> None:
    lines = [f"# {NAME} object ids occurring in the training masks; masks={num_masks}", "raw_id\timages\tpixels"]
    lines += [f"{raw}\t{images}\t{pixels}" for raw, (images, pixels) in sorted(stats.items())]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _read_cache(path: Path, num_masks: int) -> dict[int, tuple[int, int]] | None:
    """The cached scan, or ``None`` when absent, unreadable or made from a different number of masks."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
        if not lines or lines[0].rsplit("masks=", 1)[-1] != str(num_masks):
            return None
        rows = [line.split("\t") for line in lines[2:] if line]
        return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}
    except (OSError, ValueError, IndexError):
        return None


class ADE20KFull(PairedFileDataset):
    """ADE20K-Full: the 847 classes of A-847 (or every object id that occurs), ``ignore_index`` 65535.

    Args:
        root: ``ADE20K_2021_17_01/``, its parent, or a detectron2 ``datasets/`` folder.
        split: ``"train"``/``"training"`` or ``"val"``/``"validation"``.
        transforms: paired transform ``(image, label) -> (tensor, tensor)``; see base class.
        layout: ``"raw"`` (the release's ``*_seg.png``), ``"prepared"`` (``annotations_detectron2``
            uint16 TIFFs) or ``"auto"``: prepared when its split folder exists, else raw (always
            raw for ``label_space="full"``).
        label_space: ``"847"`` (A-847: raw ids of the 847-class table -> train ids 0..846, every
            other id ignored) or ``"full"`` (raw layout only): every raw id occurring in the
            *training* masks gets a train id, in increasing raw-id order, named from
            ``index_ade20k.pkl`` (``objectnames[raw - 1]``) or ``id_<raw>``; ids seen only in
            validation are ignored. Finding them decodes every training ``*_seg.png`` once:
            15 ms (683x512) to 100 ms (2048x1536) a mask measured on one CPU core, so roughly
            10 to 40 minutes for the 25,574 masks; the result is cached.
        cache_dir: where the ``full`` scan is cached as ``esseg_ade20k_full_ids.tsv`` (raw id,
            images, pixels); default: the ``ADE20K_2021_17_01/`` folder. The cache is reused while
            the number of training masks is unchanged.

    Attributes:
        layout: the layout in use, ``"raw"`` or ``"prepared"``.
        raw_ids: (``label_space="full"`` only) the raw object id of each train id.

    Shapes:
        ``load(i)`` -> PIL RGB image ``(W, H)`` and int64 labels ``(H, W)`` in ``[0, C)`` or 65535.
    """

    classes = ade20k_full_space().classes
    palette = ade20k_full_space().palette
    ignore_index = WIDE_IGNORE

    def __init__(
        self,
        root,
        split: str = "train",
        transforms: Callable | None = None,
        layout: str = "auto",
        label_space: str = "847",
        cache_dir=None,
    ):
        super().__init__(root, split, transforms)
        label_space = str(label_space)
        if split not in SPLITS:
            raise DatasetError(f"unknown {NAME} split {split!r}; use one of {', '.join(SPLITS)}")
        if layout not in LAYOUTS:
            raise DatasetError(f"unknown {NAME} layout {layout!r}; use one of {', '.join(LAYOUTS)}")
        if label_space not in LABEL_SPACES:
            raise DatasetError(f"unknown {NAME} label_space {label_space!r}; use '847' or 'full'")
        if label_space == "full" and layout == "prepared":
            raise DatasetError(
                f"{NAME}: label_space='full' needs the raw {RELEASE} release (images/ADE/...); the prepared "
                "TIFFs hold only the 847 train ids"
            )
        folder = SPLITS[split]
        self.base, self.layout = self._find(root, folder, layout, raw_only=label_space == "full")
        if self.layout == "prepared":
            self.samples = self._prepared_samples(folder)
            self.use_label_space(ade20k_full_space("train_ids"))
        else:
            self.samples = self._raw_samples(folder)
            if label_space == "full":
                self.use_label_space(self._observed_space(cache_dir))
            else:
                self.use_label_space(ade20k_full_space("raw"))

    @staticmethod
    def _find(root, folder: str, layout: str, raw_only: bool) -> tuple[Path, str]:
        if root is None:
            raise DatasetError(f"{NAME}: no dataset root given; pass --root DIR holding {LAYOUT} ({DOCS})")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetError(f"{NAME}: root {root} does not exist; pass --root DIR holding {LAYOUT} ({DOCS})")
        marks = {"prepared": Path("annotations_detectron2") / folder, "raw": Path("images") / "ADE" / folder}
        wanted = ("raw",) if raw_only else {"auto": ("prepared", "raw")}.get(layout, (layout,))
        candidates = [root, root / RELEASE, root / "ade" / RELEASE]
        for kind in wanted:
            for base in candidates:
                if (base / marks[kind]).is_dir():
                    return base, kind
        looked = ", ".join(str(base / marks[kind]) for kind in wanted for base in candidates)
        raise DatasetError(f"{NAME}: wrong layout under {root}: looked for {looked}; expected {LAYOUT} ({DOCS})")

    def _prepared_samples(self, folder: str) -> list[tuple[Path, Path]]:
        image_dir = self.base / "images_detectron2" / folder
        label_dir = self.base / "annotations_detectron2" / folder
        images = sorted(image_dir.glob("*.jpg"))
        samples = [(p, label_dir / f"{p.stem}.tif") for p in images]
        stems = {p.stem for p in images}
        orphans = sorted(p for p in label_dir.glob("*.tif") if p.stem not in stems)
        if orphans:
            raise DatasetError(
                f"{NAME}: {len(orphans)} label(s) without an image, first {orphans[0]}; expected "
                f"{image_dir / (orphans[0].stem + '.jpg')}: re-run the preparation or remove the label"
            )
        check_pairs(samples, NAME, label_dir)
        return samples

    def _raw_samples(self, folder: str) -> list[tuple[Path, Path]]:
        split_dir = self.base / "images" / "ADE" / folder
        images, segs = [], []
        for directory, _, names in os.walk(split_dir):
            for name in names:
                if name.endswith(SEG_SUFFIX):
                    segs.append(Path(directory) / name)
                elif name.endswith(".jpg"):
                    images.append(Path(directory) / name)
        images.sort(key=lambda p: (p.name, str(p)))
        samples = [(p, p.with_name(p.stem + SEG_SUFFIX)) for p in images]
        listed = {seg for _, seg in samples}
        orphans = sorted(p for p in segs if p not in listed)
        if orphans:
            raise DatasetError(
                f"{NAME}: {len(orphans)} {SEG_SUFFIX} without an image, first {orphans[0]}; re-extract "
                f"{RELEASE} or remove the mask ({DOCS})"
            )
        check_pairs(samples, NAME, split_dir)
        return samples

    def _observed_space(self, cache_dir) -> LabelSpace:
        train = self.samples if SPLITS[self.split] == "training" else self._raw_samples("training")
        segs = [seg for _, seg in train]
        cache = Path(cache_dir).expanduser() / CACHE_NAME if cache_dir is not None else self.base / CACHE_NAME
        stats = _read_cache(cache, len(segs))
        if stats is None:
            stats = scan_object_ids(segs)
            try:
                _write_cache(cache, stats, len(segs))
            except OSError as err:
                warnings.warn(
                    f"{NAME}: cannot cache the object-id scan at {cache} ({err}); pass cache_dir=DIR "
                    "(data.options.cache_dir) to a writable folder to avoid rescanning"
                )
        if not stats:
            raise DatasetError(f"{NAME}: no labelled pixel in the {len(segs)} training masks; check the release")
        index = self.base / "index_ade20k.pkl"
        names = read_object_names(index) if index.is_file() else None
        raw_ids = sorted(stats)
        self.raw_ids = tuple(raw_ids)
        return ade20k_full_observed_space(
            raw_ids, [names[r - 1] if names and r <= len(names) else f"id_{r}" for r in raw_ids]
        )

    def read_label(self, path: Path) -> np.ndarray:
        """Raw values: decoded object ids of a ``*_seg.png``, or the prepared TIFF's uint16 values."""
        if self.layout == "raw":
            return decode_seg(path)
        return read_prepared_label(path)
