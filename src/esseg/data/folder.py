"""``folder``: your own images and label maps, paired by file stem.

Layout (``root`` = ``--data-root``)::

    ROOT/classes.txt                        one class name per line; line i = label value i
      (or ROOT/classes.tsv                  id<TAB>name rows, ids 0..C-1, a header line allowed)
    ROOT/images/<split>/<stem>.<jpg|jpeg|png|bmp|tif|tiff|webp>
    ROOT/labels/<split>/<stem><label_suffix>.<png|tif|tiff>

A label map is a single-channel image of class ids: 8-bit or 16-bit PNG, or a 16/32-bit
integer TIFF. Its values are read as they are (never cast to 8 bits or to float): value ``v``
is class ``v`` when ``v < C``, and ``ignore_index`` marks pixels that are not labelled.
A ``mapping`` file (``value<TAB>train_id`` rows) instead maps raw values to train ids and
ignores every value it does not list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Literal

import numpy as np

from esseg.data._files import PairedFileDataset
from esseg.data.base import default_ignore_index
from esseg.data.classes import INVALID, LabelSpace
from esseg.data.base import bit_palette
from esseg.errors import DatasetError

IMAGE_EXTS = ("jpg", "jpeg", "png", "bmp", "tif", "tiff", "webp")
LABEL_EXTS = ("png", "tif", "tiff")
LAYOUT = "ROOT/classes.txt, ROOT/images/<split>/<stem>.jpg and ROOT/labels/<split>/<stem>.png"
DOCS = "see docs/datasets.md, section folder"


def _ints(fields: list[str]) -> list[int] | None:
    try:
        return [int(f) for f in fields]
    except ValueError:
        return None


def read_class_file(path: Path) -> list[str]:
    """Class names in train-id order from ``classes.txt`` (line i = class i) or ``classes.tsv``.

    ``.tsv``: rows ``id<TAB>name`` (further columns ignored), ids exactly ``0..C-1`` in any
    order; a first line whose id is not an integer is a header.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"folder: cannot read class file {path} ({err}); it must be UTF-8 text") from None
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DatasetError(f"folder: class file {path} is empty; write one class name per line (line i = label value i)")
    if path.suffix.lower() != ".tsv":
        for number, line in enumerate(lines, 1):
            if not line.strip():
                raise DatasetError(f"folder: {path} line {number} is empty; every line names the class of label value line-1")
        return [line.strip() for line in lines]
    rows = [line.split("\t") for line in lines]
    start = 1
    if _ints(rows[0][:1]) is None:
        rows, start = rows[1:], 2  # header
    names: dict[int, str] = {}
    for number, row in enumerate(rows, start):
        key = _ints(row[:1])
        if key is None or len(row) < 2 or not row[1].strip():
            raise DatasetError(f"folder: {path} line {number} must be id<TAB>name, got {'<TAB>'.join(row)!r}")
        if key[0] in names:
            raise DatasetError(f"folder: {path} line {number}: id {key[0]} is listed twice")
        names[key[0]] = row[1].strip()
    if not names:
        raise DatasetError(f"folder: class file {path} lists no classes; write id<TAB>name rows")
    if sorted(names) != list(range(len(names))):
        missing = sorted(set(range(len(names))) - set(names))
        raise DatasetError(
            f"folder: ids in {path} must be 0..{len(names) - 1} (one per class); id {missing[0]} is missing"
        )
    return [names[i] for i in range(len(names))]


def read_mapping(path: Path, num_classes: int, ignore_index: int) -> dict[int, int]:
    """``{raw value: train id}`` from ``value<TAB>train_id`` rows (header and ``#`` lines skipped)."""
    if not path.is_file():
        raise DatasetError(f"folder: mapping file {path} not found; data.options.mapping is relative to the root")
    mapping: dict[int, int] = {}
    lines = path.read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        pair = _ints(line.split("\t")[:2])
        if pair is None or len(pair) != 2:
            if not mapping and number == 1:
                continue  # header
            raise DatasetError(f"folder: {path} line {number} must be value<TAB>train_id, got {line!r}")
        raw, train = pair
        if raw < 0 or not (0 <= train < num_classes or train == ignore_index):
            raise DatasetError(
                f"folder: {path} line {number}: train id {train} of value {raw} must be in [0, {num_classes}) "
                f"or ignore_index={ignore_index}"
            )
        mapping[raw] = train
    if not mapping:
        raise DatasetError(f"folder: mapping file {path} maps no values; write value<TAB>train_id rows")
    return mapping


def folder_space(classes: list[str], ignore_index: int, mapping: dict[int, int] | None, class_file: str) -> LabelSpace:
    """The :class:`LabelSpace` of a folder dataset: identity on ``0..C-1`` (or ``mapping``)."""
    num_classes = len(classes)
    # An ignore value far above the class ids (2**31 - 1 above 65535 classes) is matched on its
    # own instead of through a lut that long.
    extra = ((ignore_index, ignore_index),) if ignore_index >= max(num_classes, 65536) else ()
    if mapping is None:
        lut = np.full(max(num_classes, 0 if extra else ignore_index + 1), INVALID, dtype=np.int64)
        lut[:num_classes] = np.arange(num_classes)
        if not extra:
            lut[ignore_index] = ignore_index
        valid = f"0..{num_classes - 1} or {ignore_index} (ignore)"
        hint = (
            f"{class_file} lists {num_classes} classes; add the missing class names there, set "
            f"data.options.ignore_index to the value that marks unlabelled pixels, or map raw values "
            f"with data.options.mapping ({DOCS})"
        )
    else:
        lut = np.full(max(65536, max(mapping) + 1), ignore_index, dtype=np.int64)
        for raw, train in mapping.items():
            lut[raw] = train
        valid = f"0..{len(lut) - 1}"
        hint = "label maps must hold non-negative 16-bit values when a mapping file is used"
    return LabelSpace("folder", tuple(classes), bit_palette(num_classes), lut, valid, hint, ignore_index, extra)


def _list_files(directory: Path, exts: tuple[str, ...], suffix: str = "") -> dict[str, list[Path]]:
    """``{stem: [paths]}`` of the files ``<stem><suffix>.<ext>`` directly in ``directory``."""
    found: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        name = path.name
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else ""
        if ext not in exts or not path.is_file():
            continue
        stem = name[: -len(ext) - 1]
        if suffix:
            if not stem.endswith(suffix) or stem == suffix:
                continue
            stem = stem[: -len(suffix)]
        found.setdefault(stem, []).append(path)
    return found


class FolderDataset(PairedFileDataset):
    """Images and label maps paired by stem; classes from ``classes.txt``/``classes.tsv``.

    Args:
        root: the folder holding ``images/``, ``labels/`` and the class file (see module docstring).
        split: a subfolder of ``images/`` and ``labels/`` (``train``, ``val``, ...).
        transforms: paired transform ``(image, label) -> (tensor, tensor)``; see base class.
        label_suffix: what follows the stem in label file names, e.g. ``"_gt"`` for ``a_gt.png``.
        label_ext: label file extension(s), e.g. ``"png"`` (default: png, tif and tiff).
        classes_file: the class list, relative to ``root`` or absolute (default ``classes.txt``,
            else ``classes.tsv``).
        mapping: a ``value<TAB>train_id`` file (relative to ``root`` or absolute); raw values it
            does not list become ``ignore_index``.
        ignore_index: the label of unlabelled pixels, ``>= C`` (default
            :func:`~esseg.data.base.default_ignore_index`: 255, or 65535 above 255 classes).
        unpaired: ``"error"`` raises on an image without a label (or the reverse) when the
            dataset is built; ``"keep"`` keeps them as samples whose ``load``/``load_label``
            raise, so ``esseg data inspect`` lists every one of them.

    Each sample is ``(PIL RGB image, int64 (H, W) label)`` with values in ``[0, C)`` or
    ``ignore_index``; see :class:`~esseg.data.base.SegmentationDataset`. ``problems`` maps the
    index of every sample that cannot load (unpaired, or several files for one stem) to its
    one-line reason.
    """

    inspect_options = {"unpaired": "keep"}  # what `esseg data inspect` passes to collect every problem

    def __init__(
        self,
        root,
        split: str = "train",
        transforms: Callable | None = None,
        label_suffix: str = "",
        label_ext: str | list[str] | None = None,
        classes_file: str | None = None,
        mapping: str | None = None,
        ignore_index: int | None = None,
        unpaired: Literal["error", "keep"] = "error",
    ):
        super().__init__(root, split, transforms)
        if unpaired not in ("error", "keep"):
            raise DatasetError(f"folder: unpaired={unpaired!r}; use 'error' or 'keep'")
        if root is None:
            raise DatasetError(f"folder: no dataset root given; pass --data-root DIR holding {LAYOUT} ({DOCS})")
        base = Path(root).expanduser()
        if not (base / "images").is_dir():
            where = "does not exist" if not base.is_dir() else "has no images/ folder"
            raise DatasetError(f"folder: root {base} {where}; expected {LAYOUT} ({DOCS})")
        class_path = self._class_path(base, classes_file)
        classes = read_class_file(class_path)
        ignore = default_ignore_index(len(classes)) if ignore_index is None else int(ignore_index)
        if ignore < len(classes):
            raise DatasetError(
                f"folder: ignore_index={ignore} is not above the class ids ({class_path.name} lists {len(classes)} classes); "
                f"use a value >= {len(classes)}, e.g. {default_ignore_index(len(classes))}"
            )
        table = read_mapping(self._resolve(base, mapping), len(classes), ignore) if mapping else None
        self.use_label_space(folder_space(classes, ignore, table, class_path.name))
        self.names: list[str] = []  # sample stems
        self.samples, self.problems = self._pair(base, split, label_suffix or "", label_ext)
        if self.problems and unpaired == "error":
            first = self.problems[min(self.problems)]
            more = f" (and {len(self.problems) - 1} more; `esseg data inspect` lists them all)" if len(self.problems) > 1 else ""
            raise DatasetError(first + more)

    @staticmethod
    def _resolve(base: Path, name: str) -> Path:
        path = Path(name).expanduser()
        return path if path.is_absolute() else base / path

    def _class_path(self, base: Path, classes_file: str | None) -> Path:
        if classes_file:
            path = self._resolve(base, classes_file)
            if not path.is_file():
                raise DatasetError(f"folder: class file {path} not found (data.options.classes_file)")
            return path
        for name in ("classes.txt", "classes.tsv"):
            if (base / name).is_file():
                return base / name
        raise DatasetError(
            f"folder: no class list in {base}: write classes.txt (one name per line, line i = label value i) "
            f"or classes.tsv (id<TAB>name) ({DOCS})"
        )

    def _pair(self, base: Path, split: str, suffix: str, label_ext) -> tuple[list, dict[int, str]]:
        image_dir, label_dir = base / "images" / split, base / "labels" / split
        if not image_dir.is_dir():
            splits = sorted(p.name for p in (base / "images").iterdir() if p.is_dir())
            raise DatasetError(
                f"folder: split folder {image_dir} not found; splits present: {', '.join(splits) or 'none'} "
                f"(choose one with --split / data.train_split / data.val_split)"
            )
        if not label_dir.is_dir():
            raise DatasetError(f"folder: label folder {label_dir} not found; put the label maps of split {split!r} there")
        exts = LABEL_EXTS if label_ext is None else tuple(
            e.lower().lstrip(".") for e in ([label_ext] if isinstance(label_ext, str) else label_ext)
        )
        images = _list_files(image_dir, IMAGE_EXTS)
        labels = _list_files(label_dir, exts, suffix)
        if not images:
            raise DatasetError(f"folder: no images (.{', .'.join(IMAGE_EXTS)}) in {image_dir}; the split is empty")
        expected = f"{suffix}.{'|'.join(exts)}"
        samples, problems = [], {}
        for stem in sorted(set(images) | set(labels)):
            image, label = images.get(stem, []), labels.get(stem, [])
            if len(image) > 1 or len(label) > 1:
                dupes = ", ".join(str(p.relative_to(base)) for p in image + label)
                problems[len(samples)] = f"folder: sample {stem!r} has several files ({dupes}); keep one image and one label per stem"
            elif not label:
                problems[len(samples)] = (
                    f"folder: image {image[0]} has no label: expected {label_dir / stem}{expected}; add it, remove the "
                    f"image, or set data.options.label_suffix/label_ext to match your label names"
                )
            elif not image:
                problems[len(samples)] = (
                    f"folder: label {label[0]} has no image {image_dir / stem}.<{'|'.join(IMAGE_EXTS)}>; add it or remove the label"
                )
            samples.append((image[0] if image else None, label[0] if label else None))
            self.names.append(stem)
        return samples, problems

    def sample_name(self, index: int) -> str:
        return self.names[index]

    def load(self, index: int):
        """``(PIL RGB image, int64 (H, W) train ids / ignore_index)`` of sample ``index``."""
        if index in self.problems:
            raise DatasetError(self.problems[index])
        return super().load(index)

    def load_label(self, index: int) -> np.ndarray:
        """The int64 ``(H, W)`` label of sample ``index``, checking only the image header."""
        if index in self.problems:
            raise DatasetError(self.problems[index])
        return super().load_label(index)
