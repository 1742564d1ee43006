"""Prediction on image files: label maps, colourised masks and overlays.

For each input image ``<stem>.<ext>`` three PNGs are written to the output folder:
``<stem>_label.png`` (class ids; 8-bit when C <= 255, 16-bit up to 65535 classes; above that
``<stem>_label.tif``, 32-bit signed), ``<stem>_color.png`` (the mask in the dataset palette) and
``<stem>_overlay.png`` (mask blended over the image). Each file is written atomically (a killed
run never leaves a truncated file) and the output folder is checked before the model is loaded.

Images are read as 8-bit RGB; 16-bit images are scaled to 8 bits (``v / 257``), float images
with values in [0, 1] are multiplied by 255 and those in [0, 255] are taken as they are; other
ranges are refused with a message rather than clipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from esseg._io import atomic_write, check_output_dir
from esseg.data.base import to_tensors
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.evaluate import predict_images, swapped_classes
from esseg.viz.images import colorize, get_palette, overlay
from esseg.errors import EssegError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def collect_images(inputs: list[str | Path]) -> list[Path]:
    """Image files named directly or found (non-recursively, sorted) in the given folders."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            if not found:
                raise EssegError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in folder {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise EssegError(f"input {path} does not exist")
    return files


def _to_uint8(values: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """A single-channel 16/32-bit integer or float image as uint8, scaled (see module docstring)."""
    values = values.astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "F":
        if not np.isfinite(values).all():
            raise EssegError(f"image {path} holds NaN or infinite values; convert it to an 8-bit RGB image")
        if lo >= 0 and hi <= 1:
            values = values * 255
        elif lo < 0 or hi > 255:
            raise EssegError(f"float image {path} has values in [{lo:g}, {hi:g}]; expected [0, 1] or [0, 255]: "
                             "convert it to an 8-bit RGB image")
    else:  # 16-bit (I;16*) or 32-bit integer (I) greyscale
        if lo < 0 or hi > 65535:
            raise EssegError(f"integer image {path} has values in [{lo:g}, {hi:g}], beyond 16 bits: "
                             "convert it to an 8-bit RGB image")
        values = values / 257
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to ``(H, W, 3)`` uint8 RGB; 16-bit and float images are scaled, not clipped.

    Raises:
        EssegError: the file cannot be decoded, is refused as a decompression bomb (larger than
            ``PIL.Image.MAX_IMAGE_PIXELS``) or holds values that cannot be mapped to 8 bits.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "F" or im.mode.startswith("I"):
                grey = _to_uint8(np.asarray(im), im.mode, path)
                return np.repeat(grey[..., None], 3, axis=2)
            return np.asarray(im.convert("RGB"))
    except Image.DecompressionBombError as err:
        raise EssegError(f"image {path} refused: {err}; raise PIL.Image.MAX_IMAGE_PIXELS only for images you trust") from None
    except (OSError, ValueError, SyntaxError) as err:
        raise EssegError(f"cannot read image {path}: {err}") from None


def _save_image(image: Image.Image, path: Path) -> None:
    """Write ``image`` atomically, in the format of ``path``'s suffix (PNG, or TIFF for 32-bit labels)."""
    fmt = "TIFF" if path.suffix.lower() in (".tif", ".tiff") else "PNG"
    atomic_write(path, lambda tmp: image.save(tmp, format=fmt))


def label_image(label: np.ndarray, num_classes: int) -> Image.Image:
    """A class-id map as an image: 8-bit when ``num_classes <= 255``, 16-bit (PNG) up to 65535,
    else 32-bit signed (mode ``"I"``: save it as TIFF, see :func:`label_suffix`)."""
    if num_classes <= 255:
        return Image.fromarray(label.astype(np.uint8))
    if num_classes <= 65535:
        return Image.fromarray(label.astype(np.uint16))
    return Image.fromarray(label.astype(np.int32))


def label_suffix(num_classes: int) -> str:
    """File suffix of a label map: ``.png`` up to 65535 classes, ``.tif`` (32-bit) above."""
    return ".png" if num_classes <= 65535 else ".tif"


def save_prediction(out_dir: Path, stem: str, image: np.ndarray, pred: np.ndarray, num_classes: int,
                    palette: np.ndarray, alpha: float = 0.5) -> list[Path]:
    """Write ``<stem>_label.png``, ``<stem>_color.png`` and ``<stem>_overlay.png`` (each atomically);
    return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    color = colorize(pred, palette)
    paths = [out_dir / f"{stem}_label{label_suffix(num_classes)}", out_dir / f"{stem}_color.png",
             out_dir / f"{stem}_overlay.png"]
    _save_image(label_image(pred, num_classes), paths[0])
    _save_image(Image.fromarray(color), paths[1])
    _save_image(Image.fromarray(overlay(image, color, alpha)), paths[2])
    return paths


def predict_files(checkpoint: str | Path, inputs: list[str | Path], out_dir: str | Path, device="cpu",
                  tile: int | None = None, overlap: float = 0.25, classes: str | Path | None = None) -> list[Path]:
    """Predict every image in ``inputs`` with the model in ``checkpoint``; return the written files.

    ``tile``: predict large images ``tile x tile`` crops at a time, overlapping by ``overlap``
    of a tile (see :func:`esseg.engine.evaluate.predict_tiled`); ``None``: the whole image at once.
    ``classes``: a class list file; a class-encoder model then predicts over that list (label-set
    swap; label ids index the list, colours from a default palette unless it has the training C).
    """
    files = collect_images(inputs)
    out_dir = check_output_dir(out_dir, "--out folder")
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint, device)
    swap = swapped_classes(model, classes)[1] if classes is not None else None
    num_classes = model.num_classes if swap is None else len(swap)
    palette = get_palette(ckpt.get("palette") if num_classes == model.num_classes else None, num_classes)
    written: list[Path] = []
    used: dict[str, int] = {}
    for path in files:
        rgb = read_rgb(path)
        image, _ = to_tensors(rgb, np.zeros(rgb.shape[:2], dtype=np.int64))
        pred = predict_images(model, image[None].to(device), tile=tile, overlap=overlap, class_embeddings=swap)[0].cpu().numpy()
        stem = path.stem
        used[stem] = used.get(stem, 0) + 1
        if used[stem] > 1:  # same file name in two folders
            stem = f"{stem}_{used[stem]}"
        written += save_prediction(out_dir, stem, rgb, pred, num_classes, palette)
    return written


__all__ = ["collect_images", "label_image", "label_suffix", "predict_files", "read_rgb", "save_prediction"]
