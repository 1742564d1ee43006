"""Helpers shared by the real-format loaders: finding the root, reading split lists and files.

Every problem becomes a one-line :class:`~esseg.errors.DatasetError` that names the file or
directory and the layout that was expected.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from esseg.data.base import SegmentationDataset
from esseg.data.classes import LabelSpace
from esseg.errors import DatasetError

LABEL_MODES = ("P", "L", "I", "I;16", "I;16B", "I;16L")
DOCS = "see docs/datasets.md"
# The commands name the dataset folder differently: train/eval (and viz) take --data-root, data inspect --root.
ROOT_FLAGS = "--data-root DIR (esseg train/eval) or --root DIR (esseg data inspect)"
SPLIT_HINT = "the split name (--split, or data.train_split/data.val_split)"


def pass_root(what: str) -> str:
    """``"pass <what> as --data-root DIR (esseg train/eval) or --root DIR (esseg data inspect)"``."""
    return f"pass {what} as {ROOT_FLAGS}"


def unreadable(what: str, path: Path, err: BaseException) -> DatasetError:
    """The one-line error for a file that exists but cannot be decoded."""
    reason = f"{type(err).__name__}: {' '.join(str(err).split())}"
    return DatasetError(f"cannot read {what} {path} ({reason}); re-download or re-extract it, or drop it from the split")


def find_root(root, dataset: str, marker: str, layout: str, subdirs: tuple[str, ...] = ()) -> Path:
    """Return the first of ``root``, ``root/sub``... that holds ``marker``; else raise.

    Args:
        root: directory given by the user.
        dataset: dataset name for messages.
        marker: relative path that identifies the dataset root, e.g. ``"leftImg8bit"``.
        layout: the expected layout, quoted in the error message.
        subdirs: further places below ``root`` to look in (forgiving roots).
    """
    if root is None:
        raise DatasetError(f"{dataset}: no dataset root given; {pass_root(f'the folder holding {layout}')} ({DOCS})")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{dataset}: root {root} does not exist; {pass_root(f'the folder holding {layout}')} ({DOCS})")
    candidates = [root / sub for sub in ("", *subdirs)]
    for candidate in candidates:
        if (candidate / marker).exists():
            return candidate
    looked = ", ".join(str(c / marker) for c in candidates)
    raise DatasetError(f"{dataset}: wrong layout under {root}: looked for {looked}; expected {layout} ({DOCS})")


def read_split_file(path: Path, dataset: str) -> list[str]:
    """Sample ids listed in a split file, one per line (the stem of the first token)."""
    if not path.is_file():
        raise DatasetError(f"{dataset}: split file {path} not found; check {SPLIT_HINT} and the layout ({DOCS})")
    ids = [Path(line.split()[0]).stem for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DatasetError(f"{dataset}: split file {path} is empty; it must list one sample id per line")
    return ids


def check_pairs(samples: list[tuple[Path, Path]], dataset: str, where: Path) -> None:
    """Raise if the split is empty or any listed image/label file is missing."""
    if not samples:
        raise DatasetError(f"{dataset}: no samples found under {where}; check the dataset folder and {SPLIT_HINT} ({DOCS})")
    missing = [p for pair in samples for p in pair if not p.is_file()]
    if missing:
        raise DatasetError(
            f"{dataset}: {len(missing)} listed file(s) missing, first {missing[0]}; "
            f"re-extract the dataset or fix the split list ({DOCS})"
        )


def read_image(path: Path) -> Image.Image:
    """Decode an image file to PIL RGB; any failure -> DatasetError naming the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except Exception as err:
        raise unreadable("image", path, err) from err


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` of an image, reading only its header."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception as err:
        raise unreadable("image", path, err) from err


def read_label_png(path: Path) -> np.ndarray:
    """Raw values of a single-channel label PNG (palette, 8-bit or 16-bit), ``(H, W)``."""
    try:
        with Image.open(path) as im:
            if im.mode not in LABEL_MODES:
                raise DatasetError(
                    f"label {path} has image mode {im.mode}; expected a single-channel index map "
                    f"(mode P, L or 16-bit) whose pixel values are class ids, not colours"
                )
            return np.array(im)
    except DatasetError:
        raise
    except Exception as err:
        raise unreadable("label", path, err) from err


class PairedFileDataset(SegmentationDataset):
    """A dataset over ``(image_path, label_path)`` pairs whose raw labels map via a LabelSpace.

    Subclasses fill ``self.samples``, call :meth:`use_label_space` in ``__init__`` and may override
    :meth:`read_label` for non-PNG annotations.
    """

    samples: list[tuple[Path, Path]]
    label_space: LabelSpace

    def use_label_space(self, space: LabelSpace) -> None:
        """Take ``classes``, ``palette`` and ``ignore_index`` from ``space``."""
        self.label_space = space
        self.classes, self.palette, self.ignore_index = space.classes, space.palette, space.ignore_index

    def __len__(self) -> int:
        return len(self.samples)

    def sample_name(self, index: int) -> str:
        return self.samples[index][0].stem

    def read_label(self, path: Path) -> np.ndarray:
        """Raw ``(H, W)`` annotation values of ``path`` (PNG by default)."""
        return read_label_png(path)

    def _label(self, index: int, size: tuple[int, int]) -> np.ndarray:
        image_path, label_path = self.samples[index]
        raw = self.read_label(label_path)
        if raw.ndim != 2 or (raw.shape[1], raw.shape[0]) != size:
            shape = "x".join(map(str, raw.shape[::-1]))
            raise DatasetError(
                f"label {label_path} is {shape} but image {image_path} is {size[0]}x{size[1]}; "
                f"they must be the same sample at the same resolution"
            )
        return self.label_space.encode(raw, label_path)

    def load(self, index: int):
        """``(PIL RGB image, int64 (H, W) train ids / ignore_index)`` of sample ``index``."""
        image = read_image(self.samples[index][0])
        return image, self._label(index, image.size)

    def load_label(self, index: int) -> np.ndarray:
        """The int64 ``(H, W)`` label of sample ``index``, checking only the image header."""
        return self._label(index, image_size(self.samples[index][0]))
