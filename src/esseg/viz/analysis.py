"""``esseg viz`` figures from checkpoints: load the model and its dataset, compute, plot.

Every function here takes a checkpoint path (written by ``esseg train``) and an output folder,
reads the validation data named by the checkpoint's config (``data_root``, ``dataset``,
``split`` and ``overrides`` change it, as in ``esseg eval``) and writes one PNG. They return
what :mod:`esseg.viz.figures` returns, so callers and tests can check the plotted data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.config import apply_overrides, config_from_dict
from esseg.engine.evaluate import evaluate, predict_batch
from esseg.errors import CheckpointError, EssegError
from esseg.viz import figures
from esseg._io import atomic_write_text
from esseg.viz.embeddings import class_pixel_counts, embedding_rgb, project, sample_indices, subsample_pixels, top_classes
from esseg.viz.images import colorize, denormalize, get_palette


@dataclass
class DataOptions:
    """Which data a figure reads: the checkpoint's dataset unless told otherwise (like ``esseg eval``)."""

    split: str = "val"
    data_root: str | None = None
    dataset: str | None = None
    overrides: list[str] = field(default_factory=list)


@dataclass
class Loaded:
    """A checkpoint's model with what the figures need to label it."""

    path: Path
    ckpt: dict
    model: torch.nn.Module
    device: torch.device

    @property
    def is_embedding(self) -> bool:
        """True for an ESS model (pixel and class embeddings), False for the baseline."""
        return bool(getattr(self.model, "is_embedding", False))

    @property
    def label(self) -> str:
        """``ESS d=12 (best.pt)`` or ``baseline (best.pt)``: how the model is named on plots."""
        kind = f"ESS d={self.model.embedding_dim}" if self.is_embedding else "baseline"
        return f"{kind} ({self.path.parent.name}/{self.path.name})" if self.path.parent.name else f"{kind} ({self.path.name})"


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> Loaded:
    """Read ``checkpoint`` and rebuild its model in eval mode on ``device``."""
    ckpt = load_checkpoint(checkpoint)
    device = torch.device(device)
    return Loaded(Path(checkpoint), ckpt, model_from_checkpoint(ckpt, checkpoint, device), device)


def require_embeddings(run: Loaded, what: str) -> None:
    """A one-line error when ``run`` is a baseline: ``what`` needs class/pixel embeddings."""
    if not run.is_embedding:
        raise CheckpointError(f"{what} needs an ESS model but checkpoint {run.path} holds the softmax baseline "
                              "(no pixel or class embeddings); pass an ESS checkpoint")


def build_data(run: Loaded, data: DataOptions | None = None):
    """The dataset split named by ``run``'s config and ``data``, checked against the model's classes."""
    from esseg.engine.data import build_split  # noqa: PLC0415

    data = data or DataOptions()
    cfg = config_from_dict(apply_overrides(copy.deepcopy(run.ckpt["config"]), data.overrides,
                                           {"data.root": data.data_root, "data.dataset": data.dataset}))
    dataset = build_split(cfg, data.split, train=False)
    if dataset.num_classes != run.model.num_classes:
        raise CheckpointError(f"checkpoint {run.path} predicts {run.model.num_classes} classes but dataset "
                              f"{cfg.data.dataset!r} ({data.split}) has {dataset.num_classes}; use the label space it was trained on")
    return dataset


def check_same_classes(a: Loaded, b: Loaded) -> None:
    """Two checkpoints compared on one plot must share their label space."""
    if a.model.num_classes != b.model.num_classes or a.ckpt.get("class_names") != b.ckpt.get("class_names"):
        raise CheckpointError(f"--compare checkpoint {b.path} has {b.model.num_classes} classes, {a.path} has "
                              f"{a.model.num_classes} (or their class names differ); compare models of one label space")


def _palette(dataset, run: Loaded) -> np.ndarray:
    pal = getattr(dataset, "palette", None)
    return get_palette(pal if pal is not None else run.ckpt.get("palette"), dataset.num_classes)


def _names(dataset) -> list[str]:
    return [str(c) for c in dataset.classes]


def _sample(dataset, index: int):
    if not 0 <= index < len(dataset):
        raise EssegError(f"--index {index} is out of range: the split has {len(dataset)} samples (0..{len(dataset) - 1})")
    return dataset[index]


def _sample_name(dataset, index: int) -> str:
    return str(dataset.sample_name(index)) if hasattr(dataset, "sample_name") else str(index)


@torch.no_grad()
def pixel_embeddings(run: Loaded, image: torch.Tensor) -> torch.Tensor:
    """(3, H, W) image -> (d, H, W) pixel embeddings, padded for the encoder and cropped back."""
    h, w = image.shape[-2:]
    ph, pw = -h % 32, -w % 32
    x = torch.nn.functional.pad(image[None].to(run.device), (0, pw, 0, ph))
    return run.model(x)[0, :, :h, :w].float().cpu()


def data_name(data: DataOptions | None) -> str:
    """``the val split`` or ``ade20k val``: what the data of a figure was, for its title."""
    data = data or DataOptions()
    return f"{data.dataset} {data.split}" if data.dataset else f"the {data.split} split"


def _counts(dataset, num_samples: int | None) -> tuple[np.ndarray, int]:
    n = len(sample_indices(len(dataset), num_samples))
    return class_pixel_counts(dataset, num_samples).numpy(), n


# --------------------------------------------------------------------------------- figures


def norms_figure(checkpoint, out_dir, data: DataOptions | None = None, num_samples: int | None = 200,
                 device="cpu") -> dict:
    """``norms.png`` (class frequency vs class-embedding length, Fig. 9) and ``norms.csv``."""
    run = load(checkpoint, device)
    require_embeddings(run, "viz norms")
    dataset = build_data(run, data)
    counts, n = _counts(dataset, num_samples)
    norms = run.model.class_table.detach().float().norm(dim=1).cpu().numpy()
    names = _names(dataset)
    out_dir = Path(out_dir)
    result = figures.plot_norms(counts, norms, names, out_dir / "norms.png", normalized=bool(run.model.normalize),
                                num_samples=n, title=f"class frequency vs class-embedding length (Fig. 9): {run.label}")
    _write_tsv(out_dir / "norms.tsv", ["class_id", "class_name", "pixels", "norm"],
               [[c, names[c], int(counts[c]), f"{norms[c]:.6f}"] for c in range(len(names))])
    return result


def projection_figure(checkpoint, out_dir, data: DataOptions | None = None, index: int = 0, method: str = "pca",
                      max_pixels: int = 2000, seed: int = 0, device="cpu") -> dict:
    """``projection_<method>_<index>.png``: one image's pixel and class embeddings in 2-D (Fig. 10)."""
    run = load(checkpoint, device)
    require_embeddings(run, "viz projection")
    if max_pixels < 1:
        raise EssegError(f"--max-pixels must be >= 1; got {max_pixels}")
    dataset = build_data(run, data)
    image, label = _sample(dataset, index)
    emb = pixel_embeddings(run, image)
    keep = subsample_pixels(label, dataset.ignore_index, max_pixels, seed)
    if keep.numel() == 0:
        raise EssegError(f"sample {index} has no labelled pixels; pick another --index")
    d = emb.shape[0]
    x = emb.reshape(d, -1)[:, keep].T
    y = label.reshape(-1)[keep]
    class_ids = [int(c) for c in torch.unique(y)]
    classes = run.model.class_embeddings().detach().float().cpu()[class_ids]
    xy = project(torch.cat([x, classes]), 2, method, seed).numpy()
    palette = _palette(dataset, run)
    rgb = denormalize(image)
    return figures.plot_projection(
        rgb, colorize(label, palette, dataset.ignore_index), xy[: len(x)], y.numpy(), xy[len(x):], class_ids,
        _names(dataset), palette, Path(out_dir) / f"projection_{method}_{index}.png", method,
        title=f"pixel and class embeddings of {_sample_name(dataset, index)} (Fig. 10): {run.label}",
    )


def rgb_figure(checkpoint, out_dir, data: DataOptions | None = None, indices: list[int] = (0,), device="cpu") -> dict:
    """``rgb.png``: per sample, image | pixel embeddings projected to RGB (PCA) | prediction (Fig. 11)."""
    run = load(checkpoint, device)
    require_embeddings(run, "viz rgb")
    dataset = build_data(run, data)
    palette = _palette(dataset, run)
    rows, row_titles = [], []
    for i in indices:
        image, _ = _sample(dataset, i)
        emb = pixel_embeddings(run, image)
        pred = predict_batch(run.model, image[None].to(run.device))[0].cpu()
        rows.append([denormalize(image), embedding_rgb(emb), colorize(pred, palette)])
        row_titles.append(_sample_name(dataset, i))
    return figures.plot_image_grid(
        rows, ["image", "pixel embeddings (PCA to RGB)", "prediction"], Path(out_dir) / "rgb.png", row_titles,
        title=f"pixel embeddings as RGB (Fig. 11): {run.label}",
    )


def dendrogram_figure(checkpoint, out_dir, data: DataOptions | None = None, top: int = 50,
                      num_samples: int | None = 200, method: str = "average", device="cpu") -> dict:
    """``dendrogram.png``: agglomerative clustering of the ``top`` most frequent classes' embeddings (Fig. 12/13)."""
    run = load(checkpoint, device)
    require_embeddings(run, "viz dendrogram")
    dataset = build_data(run, data)
    counts, _ = _counts(dataset, num_samples)
    chosen = top_classes(torch.from_numpy(counts), top)
    names = _names(dataset)
    emb = run.model.class_embeddings().detach().float().cpu()[chosen].numpy()
    try:
        return figures.plot_dendrogram(emb, [names[c] for c in chosen], Path(out_dir) / "dendrogram.png", method,
                                       title=f"agglomerative clustering of class embeddings (Fig. 12/13)\n"
                                             f"the {len(chosen)} most frequent classes of {data_name(data)}: {run.label}")
    except ValueError as err:  # an unknown linkage method
        raise EssegError(f"--linkage {method!r}: {str(err).splitlines()[0]}") from None


def _evaluate(run: Loaded, dataset, num_samples: int | None, batch_size: int) -> dict:
    from torch.utils.data import DataLoader, Subset  # noqa: PLC0415

    subset = Subset(dataset, sample_indices(len(dataset), num_samples))
    loader = DataLoader(subset, batch_size=batch_size)
    return evaluate(run.model, loader, dataset.num_classes, dataset.ignore_index, run.device, _names(dataset))


def class_iou_figure(checkpoint, out_dir, data: DataOptions | None = None, compare=None,
                     num_samples: int | None = None, batch_size: int = 1, device="cpu") -> dict:
    """``class_iou.png`` and ``class_iou.tsv``: per-class IoU sorted by frequency, optionally two models (Fig. 5).

    Both models are evaluated with :func:`esseg.engine.evaluate.evaluate` on the same samples
    (``num_samples`` spread over the split, default all); the frequency is the ground truth's.
    """
    runs = [load(checkpoint, device)]
    if compare is not None:
        runs.append(load(compare, device))
        check_same_classes(*runs)
    dataset = build_data(runs[0], data)
    metrics = [_evaluate(r, dataset, num_samples, batch_size) for r in runs]
    names = _names(dataset)
    counts = np.asarray(metrics[0]["gt_pixels"])
    out_dir = Path(out_dir)
    result = figures.plot_class_iou(counts, [(r.label, m["IoU"]) for r, m in zip(runs, metrics)], names,
                                    out_dir / "class_iou.png")
    header = ["class_id", "class_name", "gt_pixels"] + [f"IoU {r.label}" for r in runs]
    fmt = lambda v: "" if v is None else f"{v:.6f}"  # noqa: E731
    _write_tsv(out_dir / "class_iou.tsv", header,
               [[c, names[c], int(counts[c])] + [fmt(m["IoU"][c]) for m in metrics] for c in result["order"]])
    return {**result, "metrics": metrics}


def panels_figure(checkpoint, out_dir, data: DataOptions | None = None, compare=None, index: int = 0,
                  num: int = 4, device="cpu") -> dict:
    """``panels.png``: image | ground truth | prediction (| second model's prediction), ``num`` samples (Fig. 6/7).

    Colours come from the dataset's palette; ignored ground-truth pixels are black. Each
    prediction is captioned with its pixel accuracy on that sample.
    """
    runs = [load(checkpoint, device)]
    if compare is not None:
        runs.append(load(compare, device))
        check_same_classes(*runs)
    if num < 1:
        raise EssegError(f"--num must be >= 1; got {num}")
    dataset = build_data(runs[0], data)
    _sample(dataset, index)
    palette = _palette(dataset, runs[0])
    rows, row_titles, captions = [], [], []
    for i in range(index, min(index + num, len(dataset))):
        image, label = dataset[i]
        row, caption = [denormalize(image), colorize(label, palette, dataset.ignore_index)], ["", ""]
        valid = label != dataset.ignore_index
        for r in runs:
            pred = predict_batch(r.model, image[None].to(r.device))[0].cpu()
            row.append(colorize(pred, palette))
            acc = float((pred[valid] == label[valid]).float().mean()) if valid.any() else float("nan")
            caption.append(f"pixel accuracy {100 * acc:.1f}%")
        rows.append(row)
        captions.append(caption)
        row_titles.append(_sample_name(dataset, i))
    columns = ["image", "ground truth (ignore: black)"] + [r.label for r in runs]
    return figures.plot_image_grid(rows, columns, Path(out_dir) / "panels.png", row_titles, captions,
                                   title="predictions (Fig. 6/7)")


def _write_tsv(path: Path, header: list[str], rows: list[list]) -> None:
    clean = lambda v: str(v).replace("\t", " ").replace("\n", " ")  # noqa: E731
    atomic_write_text(path, "".join("\t".join(clean(v) for v in row) + "\n" for row in [header, *rows]))


__all__ = ["DataOptions", "Loaded", "build_data", "check_same_classes", "class_iou_figure", "dendrogram_figure",
           "load", "norms_figure", "panels_figure", "pixel_embeddings", "projection_figure", "require_embeddings",
           "rgb_figure"]
