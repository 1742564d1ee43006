"""Evaluation: predict every validation image, accumulate a confusion matrix, reduce it across ranks."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import torch
from tqdm import tqdm

from esseg._io import atomic_write_text, json_dumps
from esseg.data.frequency import read_class_frequency
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.config import apply_overrides, config_from_dict
from esseg.engine.data import build_split, eval_loader
from esseg.engine.distributed import cleanup_distributed, init_distributed
from esseg.engine.logging import interactive
from esseg.errors import CheckpointError
from esseg.metrics import FREQUENCY_THRESHOLDS, ConfusionMatrix, frequency_group_metrics, group_metrics
from esseg.models.class_encoders import load_class_list
from esseg.models.segmenter import forward_any_size, search_agreement


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


@torch.no_grad()
def predict_batch(model: torch.nn.Module, images: torch.Tensor, amp: bool = False, **kwargs) -> torch.Tensor:
    """``model.predict(images, **kwargs)`` on ``(B, 3, H, W)`` images of any size -> ``(B, H, W)`` int64,
    under autocast when ``amp``; ``model`` may be DDP-wrapped.

    The model's ``predict`` pads to the network's input multiple, classifies and crops back
    (:func:`esseg.models.segmenter.forward_any_size`): the one prediction path.
    """
    with torch.autocast(images.device.type, enabled=amp):
        return unwrap(model).predict(images, **kwargs)


def _tile_starts(size: int, tile: int, stride: int) -> list[int]:
    """Crop offsets along one axis: every ``stride`` pixels, the last crop flush with the border."""
    if size <= tile:
        return [0]
    return [*range(0, size - tile, stride), size - tile]


@torch.no_grad()
def predict_tiled(model: torch.nn.Module, images: torch.Tensor, tile: int, overlap: float = 0.25, amp: bool = False,
                  **kwargs) -> torch.Tensor:
    """Sliding-window prediction: ``(B, 3, H, W)`` images -> ``(B, H, W)`` int64, one crop at a time.

    Crops of ``tile x tile`` pixels (smaller at an image smaller than the tile) start every
    ``stride = tile - round(overlap * tile)`` pixels, the last one flush with the border; each is
    predicted by :func:`predict_batch`. A pixel covered by several crops takes the class from
    the crop whose centre is nearest (squared Euclidean distance; the first crop in row-major
    order on ties), i.e. the prediction made with the most context around it. Works for ESS and
    baseline models alike, since it only needs ``model.predict``. Memory is that of one crop;
    with ``tile >= H`` and ``tile >= W`` this is :func:`predict_batch` on the whole image.
    ``kwargs`` go to ``model.predict`` (e.g. ``class_embeddings``).
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    h, w = images.shape[-2:]
    if tile >= h and tile >= w:
        return predict_batch(model, images, amp=amp, **kwargs)
    stride = max(1, tile - round(overlap * tile))
    dev = images.device
    out = torch.zeros((images.shape[0], h, w), dtype=torch.long, device=dev)
    best = torch.full((h, w), float("inf"), device=dev)
    ys, xs = torch.arange(h, device=dev).view(-1, 1).float(), torch.arange(w, device=dev).view(1, -1).float()
    for y0 in _tile_starts(h, tile, stride):
        for x0 in _tile_starts(w, tile, stride):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            pred = predict_batch(model, images[..., y0:y1, x0:x1], amp=amp, **kwargs)
            dist = (ys[y0:y1] - (y0 + y1 - 1) / 2) ** 2 + (xs[:, x0:x1] - (x0 + x1 - 1) / 2) ** 2
            take = dist < best[y0:y1, x0:x1]
            best[y0:y1, x0:x1] = torch.where(take, dist, best[y0:y1, x0:x1])
            out[:, y0:y1, x0:x1] = torch.where(take, pred, out[:, y0:y1, x0:x1])
    return out


def predict_images(model: torch.nn.Module, images: torch.Tensor, amp: bool = False, tile: int | None = None,
                   overlap: float = 0.25, class_embeddings: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`predict_tiled` when ``tile`` is given, else :func:`predict_batch` on the whole images;
    ``class_embeddings`` (C', d) predicts over another class list (ESS models only)."""
    extra = {} if class_embeddings is None else {"class_embeddings": class_embeddings}
    if tile:
        return predict_tiled(model, images, tile, overlap, amp=amp, **extra)
    return predict_batch(model, images, amp=amp, **extra)


def swapped_classes(model: torch.nn.Module, classes: str | Path) -> tuple[list[str], torch.Tensor]:
    """Names and (C', d) embeddings of the class list in file ``classes`` (a label-set swap)."""
    names, descriptions = load_class_list(classes, unwrap(model).config.get("class_encoder", "table"))
    with torch.no_grad():
        return names, unwrap(model).class_embeddings(descriptions)


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader,
    num_classes: int,
    ignore_index: int,
    device: torch.device | str,
    class_names=None,
    amp: bool = False,
    progress: bool = False,
    class_groups: dict | None = None,
    tile: int | None = None,
    overlap: float = 0.25,
    class_embeddings: torch.Tensor | None = None,
) -> dict:
    """Single-scale evaluation of ``model`` on ``loader`` -> :func:`esseg.metrics.compute_metrics`.

    Under torchrun each rank evaluates its shard of the data (see ``engine.data.eval_loader``)
    and the confusion matrices are summed over ranks before the metrics are computed, so every
    rank returns the same numbers, equal to a single-process run. The model's train/eval mode
    is restored afterwards. ``class_groups`` (``{name: class indices}``, e.g. a dataset's
    ``class_groups``) adds ``<name>_mIoU`` and ``<name>_Acc`` (:func:`esseg.metrics.group_metrics`).
    ``tile``/``overlap``: sliding-window prediction for large images (:func:`predict_tiled`).
    ``progress``: a bar, shown only when stderr is a terminal.
    ``class_embeddings`` (``num_classes``, d) predicts over another class list (label-set swap).
    """
    device = torch.device(device)
    model = unwrap(model)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    agreement = None
    for images, labels in tqdm(loader, desc="eval", leave=False, disable=not (progress and interactive()),
                               dynamic_ncols=True):
        if isinstance(images, list):  # a batch of mixed sizes (engine.data.eval_collate): one by one
            for image, label in zip(images, labels):
                cm.update(predict_images(model, image[None].to(device), amp, tile, overlap, class_embeddings),
                          label[None].to(device))
            continue
        pred = predict_images(model, images.to(device, non_blocking=True), amp, tile, overlap, class_embeddings)
        cm.update(pred, labels.to(device, non_blocking=True))
        if agreement is None and getattr(model, "is_embedding", False):  # the index vs exact search, first batch
            table = model.class_embeddings() if class_embeddings is None else class_embeddings
            found = search_agreement(forward_any_size(model, images.to(device)), table)
            agreement = -1.0 if found is None else found
    cm.all_reduce()
    model.train(was_training)
    metrics = cm.compute(class_names)
    if agreement is not None and agreement >= 0:
        metrics["knn_top1_agreement"] = agreement  # nearest class by the index == by exact search, sampled pixels
    if class_groups:
        metrics.update(group_metrics(metrics, class_groups))
    return metrics


def summary(metrics: dict) -> dict:
    """The scalar part of a metrics dict (drops the per-class lists)."""
    return {k: v for k, v in metrics.items() if not isinstance(v, list)}


def write_metrics(metrics: dict, json_path: str | Path, csv_path: str | Path | None = None) -> None:
    """All metrics as JSON, and (optionally) a per-class CSV: class_id, class_name, IoU, Acc, pixel counts
    (and ``train_images``, ``frequency_group`` when the metrics have frequency groups).

    Both are written atomically (never half-written, e.g. on a full disk) and the JSON is standard
    (non-finite values as ``null``).
    """
    atomic_write_text(json_path, json_dumps(metrics, indent=1) + "\n")
    if csv_path is None:
        return
    f = io.StringIO(newline="")
    writer = csv.writer(f)
    extra = [k for k in ("train_images", "frequency_group") if k in metrics]
    writer.writerow(["class_id", "class_name", "IoU", "Acc", "gt_pixels", "pred_pixels", *extra])
    rows = zip(metrics["class_names"], metrics["IoU"], metrics["Acc"], metrics["gt_pixels"], metrics["pred_pixels"])
    for c, (name, iou, acc, gt, pred) in enumerate(rows):
        writer.writerow([c, name, "" if iou is None else f"{iou:.6f}", "" if acc is None else f"{acc:.6f}", gt, pred,
                         *(metrics[k][c] for k in extra)])
    atomic_write_text(csv_path, f.getvalue())


def evaluate_checkpoint(
    checkpoint: str | Path,
    split: str = "val",
    overrides: list[str] | None = None,
    updates: dict | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    progress: bool = True,
    freq_thresholds: tuple[int, int] = FREQUENCY_THRESHOLDS,
    class_frequency: str | Path | None = None,
    tile: int | None = None,
    overlap: float = 0.25,
    classes: str | Path | None = None,
) -> dict:
    """Evaluate a training checkpoint on ``split`` of the dataset it was trained on.

    The dataset comes from the checkpoint's config, changed by ``overrides``
    (``"data.root=/data/cityscapes"``) and ``updates`` (``{"data.root": ...}``). Under torchrun
    the work is sharded over the processes and every rank returns the same metrics.

    Frequency groups (``rare_mIoU``, ``common_mIoU``, ``frequent_mIoU``, ``unseen_mIoU``, see
    :func:`esseg.metrics.frequency_group_metrics`, split at ``freq_thresholds`` training images)
    are added when the checkpoint records ``class_frequency`` or a ``class_frequency`` JSON file
    (an ``esseg data inspect --json`` report of the training split) is given.
    ``tile``/``overlap``: sliding-window prediction (:func:`predict_tiled`).

    ``classes`` (a class list file, see :func:`esseg.models.class_encoders.load_class_list`)
    evaluates a class-encoder model over that list instead of its training classes: the
    dataset's labels must index the list, and the metrics are per class of the list (no
    frequency groups, which count the training classes).
    """
    ckpt = load_checkpoint(checkpoint)
    cfg = config_from_dict(apply_overrides(ckpt["config"], overrides, updates))
    info, dev = init_distributed(device)
    try:
        dataset = build_split(cfg, split, train=False)
        model = model_from_checkpoint(ckpt, checkpoint, dev)
        swap = None
        if classes is not None:
            names, swap = swapped_classes(model, classes)
            if dataset.num_classes != len(names):
                raise CheckpointError(f"--classes {classes} lists {len(names)} classes but dataset {cfg.data.dataset!r} ({split}) "
                                      f"has {dataset.num_classes}; its labels must index the class list")
        elif dataset.num_classes != model.num_classes:
            raise CheckpointError(
                f"checkpoint {checkpoint} predicts {model.num_classes} classes but dataset "
                f"{cfg.data.dataset!r} ({split}) has {dataset.num_classes}; evaluate it on the label space it was trained on"
            )
        loader = eval_loader(dataset, batch_size or cfg.train.eval_batch_size, info.rank, info.world_size,
                             cfg.data.num_workers, pin_memory=dev.type == "cuda")
        if swap is None:
            names = [str(c) for c in dataset.classes]
        frequency = (read_class_frequency(class_frequency, dataset.num_classes).tolist() if class_frequency
                     else ckpt.get("class_frequency") if swap is None else None)
        if frequency is not None and len(frequency) != dataset.num_classes:
            raise CheckpointError(f"checkpoint {checkpoint} records class_frequency for {len(frequency)} classes, not {dataset.num_classes}")
        metrics = evaluate(model, loader, dataset.num_classes, dataset.ignore_index, dev, names,
                           progress=progress and info.is_main, class_groups=getattr(dataset, "class_groups", None),
                           tile=tile, overlap=overlap, class_embeddings=swap)
        if frequency is not None:
            metrics.update(frequency_group_metrics(metrics, frequency, freq_thresholds))
        return metrics
    finally:
        cleanup_distributed()


__all__ = ["evaluate", "evaluate_checkpoint", "predict_batch", "predict_images", "predict_tiled", "summary", "swapped_classes",
           "unwrap", "write_metrics"]
