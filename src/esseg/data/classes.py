"""Class names, palettes and raw-value -> train-id tables of the real datasets.

The tables under ``esseg/data/tables/`` are copies of the datasets' own public class lists
(each starts with a ``# source:`` comment). A :class:`LabelSpace` bundles what a loader needs:
the class names, a ``(C, 3)`` palette and a lookup table ``lut`` such that
``lut[raw_value]`` is the train id, ``ignore_index``, or ``-1`` for a value that must not
occur in that dataset's annotation files.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

from esseg.errors import DatasetError

INVALID = -1  # lut entry for raw values that never occur in a well-formed annotation


def read_table(name: str) -> list[dict[str, str]]:
    """Rows of the packaged tab-separated table ``name`` (comment lines skipped), as dicts."""
    text = files("esseg.data").joinpath("tables", name).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"))) for line in lines[1:]]


@functools.lru_cache(maxsize=None)
def voc_palette_256() -> np.ndarray:
    """The standard 256-entry VOC colour map (bit-interleave), ``(256, 3)`` uint8."""
    text = files("esseg.data").joinpath("tables", "voc_palette_256.txt").read_text(encoding="utf-8")
    rows = [line.split() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    palette = np.zeros((256, 3), dtype=np.uint8)
    for index, r, g, b in rows:
        palette[int(index)] = (int(r), int(g), int(b))
    return palette


@dataclass(frozen=True, eq=False)
class LabelSpace:
    """How the raw values of one dataset's annotation files map to train ids.

    Args:
        name: dataset name used in messages, e.g. ``"Cityscapes labelIds"``.
        classes: the ``num_classes`` class names, in train-id order.
        palette: ``(num_classes, 3)`` uint8 colours, in train-id order.
        lut: ``(V,)`` int64; ``lut[v]`` is the train id of raw value ``v``, ``ignore_index``,
            or ``-1`` when ``v`` is not a valid raw value.
        valid: human-readable description of the valid raw values, e.g. ``"0..150"``.
        hint: what to do when an invalid value is found.
        ignore_index: train id of ignored pixels.
    """

    name: str
    classes: tuple[str, ...]
    palette: np.ndarray
    lut: np.ndarray
    valid: str
    hint: str = "check that the file is an annotation of this dataset (see docs/datasets.md)"
    ignore_index: int = 255

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def encode(self, raw: np.ndarray, source) -> np.ndarray:
        """Map a raw ``(H, W)`` annotation array to int64 train ids / ``ignore_index``.

        Raises:
            DatasetError: naming ``source`` when a value is outside the valid raw values.
        """
        raw = np.asarray(raw)
        if raw.dtype.kind not in "iub":
            raise DatasetError(f"{source}: label array has dtype {raw.dtype}; expected integer class ids")
        raw = raw.astype(np.int64, copy=False)
        bad = raw[(raw < 0) | (raw >= len(self.lut))]
        if bad.size == 0:
            out = self.lut[raw]
            bad = raw[out == INVALID]
        if bad.size:
            raise DatasetError(
                f"{source}: label value {int(bad.flat[0])} is not a valid {self.name} value "
                f"(expected {self.valid}); {self.hint}"
            )
        return out


def _lut(mapping: dict[int, int], size: int = 256, extra_valid: dict[int, int] | None = None) -> np.ndarray:
    lut = np.full(size, INVALID, dtype=np.int64)
    for raw, train in {**mapping, **(extra_valid or {})}.items():
        lut[raw] = train
    return lut


@functools.lru_cache(maxsize=None)
def cityscapes_space(label_type: str = "labelIds") -> LabelSpace:
    """Cityscapes' 19 evaluated classes.

    Args:
        label_type: ``"labelIds"`` (``*_gtFine_labelIds.png``, raw ids 0..33 mapped through the
            official id -> trainId table; all others, license plate included, -> 255) or
            ``"labelTrainIds"`` (``*_gtFine_labelTrainIds.png``, values 0..18 or 255 as is).
    """
    rows = [r for r in read_table("cityscapes_labels.tsv") if int(r["id"]) >= 0]
    train = sorted((r for r in rows if int(r["trainId"]) not in (255, -1)), key=lambda r: int(r["trainId"]))
    classes = tuple(r["name"] for r in train)
    palette = np.array([[int(r[c]) for c in ("color_r", "color_g", "color_b")] for r in train], np.uint8)
    if label_type == "labelIds":
        mapping = {int(r["id"]): (int(r["trainId"]) if int(r["trainId"]) >= 0 else 255) for r in rows}
        return LabelSpace(
            "Cityscapes labelIds", classes, palette, _lut(mapping), "0..33",
            hint="if this is a *_labelTrainIds.png map, use label_type='labelTrainIds'",
        )
    if label_type == "labelTrainIds":
        mapping = {i: i for i in range(len(classes))} | {255: 255}
        return LabelSpace("Cityscapes labelTrainIds", classes, palette, _lut(mapping), "0..18 or 255")
    raise DatasetError(f"unknown Cityscapes label_type {label_type!r}; use 'labelIds', 'labelTrainIds' or 'auto'")


@functools.lru_cache(maxsize=None)
def voc_space() -> LabelSpace:
    """Pascal VOC 2012's 21 classes (background included); PNG value = class, 255 = void."""
    rows = [r for r in read_table("voc_classes.tsv") if int(r["index"]) != 255]
    classes = tuple(r["name"] for r in rows)
    palette = np.array([[int(r[c]) for c in "rgb"] for r in rows], np.uint8)
    mapping = {i: i for i in range(len(classes))} | {255: 255}
    return LabelSpace("Pascal VOC", classes, palette, _lut(mapping), "0..20 or 255 (void)")


@functools.lru_cache(maxsize=None)
def ade20k_space() -> LabelSpace:
    """ADE20K SceneParsing's 150 classes: PNG value 0 ('other') -> 255, 1..150 -> 0..149."""
    rows = read_table("ade20k_classes.tsv")
    classes = tuple(r["mmseg_name"].strip() for r in rows)
    palette = np.array([[int(r[c]) for c in "rgb"] for r in rows], np.uint8)
    mapping = {int(r["label"]): int(r["train_idx"]) for r in rows} | {0: 255}
    return LabelSpace("ADE20K", classes, palette, _lut(mapping), "0..150")


@functools.lru_cache(maxsize=None)
def cocostuff_space(label_space: str = "182") -> LabelSpace:
    """COCO-Stuff label spaces over the raw ids 0..182 (0 = unlabeled -> 255).

    Args:
        label_space: ``"182"``: id ``i`` -> ``i - 1`` (the 11 never-used thing ids keep their
            slots, as in the paper); ``"171"``: the 171 used classes in mmseg's order, the 11
            unused thing ids -> 255.
    """
    rows = read_table("coco_stuff_182_labels.tsv")
    valid = "0..182"
    if label_space == "182":
        used = read_table("coco_stuff_171_mmseg_classes.tsv")
        colours = {int(r["cocostuff_id"]): [int(r[c]) for c in "rgb"] for r in used}
        named = [r for r in rows if int(r["id"]) > 0]
        classes = tuple(r["name"] for r in named)
        fallback = voc_palette_256()
        palette = np.array([colours.get(int(r["id"]), fallback[int(r["id"])]) for r in named], np.uint8)
        mapping = {int(r["id"]): int(r["essnet_idx"]) for r in rows}
        return LabelSpace("COCO-Stuff (182 classes)", classes, palette, _lut(mapping), valid)
    if label_space == "171":
        used = read_table("coco_stuff_171_mmseg_classes.tsv")
        classes = tuple(r["name"] for r in used)
        palette = np.array([[int(r[c]) for c in "rgb"] for r in used], np.uint8)
        mapping = {int(r["id"]): int(r["mmseg_train_idx"] or 255) for r in rows}
        return LabelSpace("COCO-Stuff (171 classes)", classes, palette, _lut(mapping), valid)
    raise DatasetError(f"unknown COCO-Stuff label_space {label_space!r}; use '182' or '171'")


__all__ = [
    "LabelSpace",
    "ade20k_space",
    "cityscapes_space",
    "cocostuff_space",
    "read_table",
    "voc_palette_256",
    "voc_space",
]
