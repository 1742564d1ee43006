"""Prediction on image files: label maps, colourised masks and overlays.

For each input image ``<stem>.<ext>`` three PNGs are written to the output folder:
``<stem>_label.png`` (class ids; 8-bit when C <= 255, 16-bit up to 65535 classes; above that
``<stem>_label.tif``, 32-bit signed), ``<stem>_color.png`` (the
mask in the dataset palette) and ``<stem>_overlay.png`` (mask blended over the image).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from esseg.data.base import to_tensors
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.evaluate import predict_batch
from esseg.engine.visual import colorize, get_palette, overlay
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
    """Write ``<stem>_label.png``, ``<stem>_color.png`` and ``<stem>_overlay.png``; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    color = colorize(pred, palette)
    paths = [out_dir / f"{stem}_label{label_suffix(num_classes)}", out_dir / f"{stem}_color.png",
             out_dir / f"{stem}_overlay.png"]
    label_image(pred, num_classes).save(paths[0])
    Image.fromarray(color).save(paths[1])
    Image.fromarray(overlay(image, color, alpha)).save(paths[2])
    return paths


def predict_files(checkpoint: str | Path, inputs: list[str | Path], out_dir: str | Path, device="cpu") -> list[Path]:
    """Predict every image in ``inputs`` with the model in ``checkpoint``; return the written files."""
    files = collect_images(inputs)
    ckpt = load_checkpoint(checkpoint)
    model = model_from_checkpoint(ckpt, checkpoint, device)
    num_classes = model.num_classes
    palette = get_palette(ckpt.get("palette"), num_classes)
    out_dir = Path(out_dir)
    written: list[Path] = []
    used: dict[str, int] = {}
    for path in files:
        try:
            pil = Image.open(path).convert("RGB")
        except OSError as err:
            raise EssegError(f"cannot read image {path}: {err}") from None
        image, _ = to_tensors(pil, np.zeros((pil.height, pil.width), dtype=np.int64))
        pred = predict_batch(model, image[None].to(device))[0].cpu().numpy()
        stem = path.stem
        used[stem] = used.get(stem, 0) + 1
        if used[stem] > 1:  # same file name in two folders
            stem = f"{stem}_{used[stem]}"
        written += save_prediction(out_dir, stem, np.asarray(pil), pred, num_classes, palette)
    return written


__all__ = ["collect_images", "label_image", "label_suffix", "predict_files", "save_prediction"]
