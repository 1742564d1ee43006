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

from esseg.data.base import bit_palette
from esseg.errors import DatasetError

INVALID = -1  # lut entry for raw values that never occur in a well-formed annotation
WIDE_IGNORE = 65535  # ignore value of the label spaces above 255 classes (fits uint16 TIFF/PNG)
ADE_FULL_MAX_RAW = 25 * 256 + 255  # largest (R // 10) * 256 + G an 8-bit RGB _seg.png can encode


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
        extra: ``(raw, train id)`` pairs for raw values beyond the lut, e.g. the ignore value
            ``2**31 - 1`` of a dataset with more than 65535 classes (a lut that long would take 16 GiB).
    """

    name: str
    classes: tuple[str, ...]
    palette: np.ndarray
    lut: np.ndarray
    valid: str
    hint: str = "check that the file is an annotation of this dataset (see docs/datasets.md)"
    ignore_index: int = 255
    extra: tuple[tuple[int, int], ...] = ()

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
        outside = (raw < 0) | (raw >= len(self.lut))
        if self.extra and outside.any():
            out = np.full(raw.shape, INVALID, dtype=np.int64)
            out[~outside] = self.lut[raw[~outside]]
            for value, train_id in self.extra:
                out[raw == value] = train_id
            bad = raw[out == INVALID]
        else:
            bad = raw[outside]
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


def _train_id_lut(num_classes: int, ignore_index: int) -> np.ndarray:
    """``lut[v] = v`` for train ids ``0..num_classes-1``, ``lut[ignore_index] = ignore_index``, else invalid."""
    mapping = {i: i for i in range(num_classes)} | {ignore_index: ignore_index}
    return _lut(mapping, size=max(ignore_index, num_classes - 1) + 1)


@functools.lru_cache(maxsize=None)
def ade20k_full_space(encoding: str = "raw") -> LabelSpace:
    """ADE20K-Full's 847 classes ("A-847"), ``ignore_index`` 65535.

    Args:
        encoding: ``"raw"``: values decoded from the ``ADE20K_2021_17_01`` ``*_seg.png`` as
            ``(R // 10) * 256 + G``; the 847 object ids of ``ade20k_full_847_classes.tsv`` map to
            their train ids, every other value (0 = unlabelled, the ~2,800 other objects) to 65535.
            ``"train_ids"``: the prepared ``annotations_detectron2/*.tif``, values 0..846 as they
            are, 65535 = ignore; anything else is invalid.
    """
    rows = read_table("ade20k_full_847_classes.tsv")
    classes = tuple(r["name"] for r in rows)
    palette = bit_palette(len(classes))
    if encoding == "raw":
        lut = np.full(ADE_FULL_MAX_RAW + 1, WIDE_IGNORE, dtype=np.int64)
        lut[[int(r["ade_full_id"]) for r in rows]] = [int(r["train_id"]) for r in rows]
        return LabelSpace(
            "ADE20K-Full _seg.png", classes, palette, lut, f"0..{ADE_FULL_MAX_RAW}", ignore_index=WIDE_IGNORE
        )
    if encoding == "train_ids":
        return LabelSpace(
            "ADE20K-Full (847 train ids)", classes, palette, _train_id_lut(len(classes), WIDE_IGNORE),
            f"0..{len(classes) - 1} or {WIDE_IGNORE}", ignore_index=WIDE_IGNORE,
            hint="re-run the preparation so that every pixel holds a train id or 65535 (see docs/datasets.md)",
        )
    raise DatasetError(f"unknown ADE20K-Full label encoding {encoding!r}; use 'raw' or 'train_ids'")


def ade20k_full_observed_space(raw_ids, names) -> LabelSpace:
    """The "full" ADE20K space: every raw ``*_seg.png`` id that occurs, in increasing order.

    Args:
        raw_ids: the raw object ids that get a class, ``(R // 10) * 256 + G`` values > 0.
        names: one name per raw id (same order).

    Train id ``i`` is ``sorted(raw_ids)[i]``; 0 (unlabelled) and every id not listed -> 65535.
    """
    order = sorted(zip((int(r) for r in raw_ids), names))
    if any(r <= 0 or r > ADE_FULL_MAX_RAW for r, _ in order):
        raise DatasetError(f"ADE20K-Full raw ids must be in 1..{ADE_FULL_MAX_RAW}")
    lut = np.full(ADE_FULL_MAX_RAW + 1, WIDE_IGNORE, dtype=np.int64)
    lut[[r for r, _ in order]] = np.arange(len(order))
    classes = tuple(name for _, name in order)
    return LabelSpace(
        f"ADE20K-Full _seg.png ({len(classes)} observed ids)", classes, bit_palette(len(classes)), lut,
        f"0..{ADE_FULL_MAX_RAW}", ignore_index=WIDE_IGNORE,
    )


@functools.lru_cache(maxsize=None)
def pascal_context_space(num_classes: int = 459, encoding: str = "labelmap") -> LabelSpace:
    """PASCAL-Context label spaces: PC-459 (``ignore_index`` 65535) or PC-59 (``ignore_index`` 255).

    Args:
        num_classes: 459 (all classes, train id = LabelMap value - 1) or 59 (the subset of
            ``pascal_context_59_classes.tsv``, every other LabelMap value ignored).
        encoding: ``"labelmap"``: values of the release's ``trainval/<id>.mat`` key ``LabelMap``,
            0..459 (0 = unlabelled -> ignore); ``"train_ids"``: the prepared
            ``annotations_detectron2/pc459_val/<id>.tif``, values = PC-459 train ids 0..458 or
            65535 (ignore).
    """
    rows459 = read_table("pascal_context_459_classes.tsv")
    # value 0 (unlabelled) and 1..459 as LabelMap values; prepared TIFFs hold value - 1
    by_value = {int(r["labelmap_value"]): int(r["train_id"]) for r in rows459} | {0: WIDE_IGNORE}
    if num_classes == 459:
        classes, ignore = tuple(r["name"] for r in rows459), WIDE_IGNORE
    elif num_classes == 59:
        rows59 = read_table("pascal_context_59_classes.tsv")
        classes, ignore = tuple(r["name"] for r in rows59), 255
        subset = {int(r["labelmap_value"]): int(r["train_id"]) for r in rows59}
        by_value = {value: subset.get(value, ignore) for value in by_value}
    else:
        raise DatasetError(f"unknown PASCAL-Context class count {num_classes}; use 459 or 59")
    name, palette = f"PASCAL-Context-{num_classes}", bit_palette(len(classes))
    if encoding == "labelmap":
        return LabelSpace(f"{name} LabelMap", classes, palette, _lut(by_value, size=len(rows459) + 1),
                          f"0..{len(rows459)}", ignore_index=ignore)
    if encoding == "train_ids":
        # a prepared value t is the 459-train id of LabelMap value t + 1; 65535 was LabelMap 0
        prepared = {value - 1: train for value, train in by_value.items() if value > 0} | {WIDE_IGNORE: ignore}
        return LabelSpace(
            f"{name} (prepared 459 train ids)", classes, palette, _lut(prepared, size=WIDE_IGNORE + 1),
            f"0..{len(rows459) - 1} or {WIDE_IGNORE}", ignore_index=ignore,
            hint="re-run the preparation (value = LabelMap - 1, uint16; see docs/datasets.md)",
        )
    raise DatasetError(f"unknown PASCAL-Context label encoding {encoding!r}; use 'labelmap' or 'train_ids'")


__all__ = [
    "LabelSpace",
    "ade20k_full_observed_space",
    "ade20k_full_space",
    "ade20k_space",
    "cityscapes_space",
    "cocostuff_space",
    "pascal_context_space",
    "read_table",
    "voc_palette_256",
    "voc_space",
]
