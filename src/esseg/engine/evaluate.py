"""Evaluation: predict every validation image, accumulate a confusion matrix, reduce it across ranks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from esseg.data.frequency import read_class_frequency
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.config import apply_overrides, config_from_dict
from esseg.engine.data import build_split, eval_loader
from esseg.engine.distributed import cleanup_distributed, init_distributed
from esseg.errors import CheckpointError
from esseg.metrics import FREQUENCY_THRESHOLDS, ConfusionMatrix, frequency_group_metrics, group_metrics
from esseg.models.segmenter import search_agreement


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model)


@torch.no_grad()
def predict_batch(model: torch.nn.Module, images: torch.Tensor, amp: bool = False, multiple: int = 32) -> torch.Tensor:
    """``model.predict`` on ``(B, 3, H, W)`` images of any size -> ``(B, H, W)`` int64.

    The images are zero-padded (the normalised mean) at the bottom/right up to a multiple of
    ``multiple`` pixels, which the encoders need, and the prediction is cropped back.
    """
    h, w = images.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        images = F.pad(images, (0, pw, 0, ph))
    with torch.autocast(images.device.type, enabled=amp):
        pred = unwrap(model).predict(images)
    return pred[..., :h, :w]


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
) -> dict:
    """Single-scale evaluation of ``model`` on ``loader`` -> :func:`esseg.metrics.compute_metrics`.

    Under torchrun each rank evaluates its shard of the data (see ``engine.data.eval_loader``)
    and the confusion matrices are summed over ranks before the metrics are computed, so every
    rank returns the same numbers, equal to a single-process run. The model's train/eval mode
    is restored afterwards. ``class_groups`` (``{name: class indices}``, e.g. a dataset's
    ``class_groups``) adds ``<name>_mIoU`` and ``<name>_Acc`` (:func:`esseg.metrics.group_metrics`).
    """
    device = torch.device(device)
    model = unwrap(model)
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, device=device)
    agreement = None
    for images, labels in tqdm(loader, desc="eval", leave=False, disable=not progress, dynamic_ncols=True):
        pred = predict_batch(model, images.to(device, non_blocking=True), amp=amp)
        cm.update(pred, labels.to(device, non_blocking=True))
        if agreement is None and getattr(model, "is_embedding", False):  # the index vs exact search, first batch
            padded = F.pad(images.to(device), (0, -images.shape[-1] % 32, 0, -images.shape[-2] % 32))
            found = search_agreement(model(padded), model.class_embeddings())
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
    (and ``train_images``, ``frequency_group`` when the metrics have frequency groups)."""
    json_path = Path(json_path)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(metrics, indent=1) + "\n")
    if csv_path is None:
        return
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        extra = [k for k in ("train_images", "frequency_group") if k in metrics]
        writer.writerow(["class_id", "class_name", "IoU", "Acc", "gt_pixels", "pred_pixels", *extra])
        rows = zip(metrics["class_names"], metrics["IoU"], metrics["Acc"], metrics["gt_pixels"], metrics["pred_pixels"])
        for c, (name, iou, acc, gt, pred) in enumerate(rows):
            writer.writerow([c, name, "" if iou is None else f"{iou:.6f}", "" if acc is None else f"{acc:.6f}", gt, pred,
                             *(metrics[k][c] for k in extra)])


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
) -> dict:
    """Evaluate a training checkpoint on ``split`` of the dataset it was trained on.

    The dataset comes from the checkpoint's config, changed by ``overrides``
    (``"data.root=/data/cityscapes"``) and ``updates`` (``{"data.root": ...}``). Under torchrun
    the work is sharded over the processes and every rank returns the same metrics.

    Frequency groups (``rare_mIoU``, ``common_mIoU``, ``frequent_mIoU``, ``unseen_mIoU``, see
    :func:`esseg.metrics.frequency_group_metrics`, split at ``freq_thresholds`` training images)
    are added when the checkpoint records ``class_frequency`` or a ``class_frequency`` JSON file
    (an ``esseg data inspect --json`` report of the training split) is given.
    """
    ckpt = load_checkpoint(checkpoint)
    cfg = config_from_dict(apply_overrides(ckpt["config"], overrides, updates))
    info, dev = init_distributed(device)
    try:
        dataset = build_split(cfg, split, train=False)
        model = model_from_checkpoint(ckpt, checkpoint, dev)
        if dataset.num_classes != model.num_classes:
            raise CheckpointError(
                f"checkpoint {checkpoint} predicts {model.num_classes} classes but dataset "
                f"{cfg.data.dataset!r} ({split}) has {dataset.num_classes}; evaluate it on the label space it was trained on"
            )
        loader = eval_loader(dataset, batch_size or cfg.train.eval_batch_size, info.rank, info.world_size,
                             cfg.data.num_workers, pin_memory=dev.type == "cuda")
        names = [str(c) for c in dataset.classes]
        frequency = (read_class_frequency(class_frequency, dataset.num_classes).tolist() if class_frequency
                     else ckpt.get("class_frequency"))
        if frequency is not None and len(frequency) != dataset.num_classes:
            raise CheckpointError(f"checkpoint {checkpoint} records class_frequency for {len(frequency)} classes, not {dataset.num_classes}")
        metrics = evaluate(model, loader, dataset.num_classes, dataset.ignore_index, dev, names,
                           progress=progress and info.is_main, class_groups=getattr(dataset, "class_groups", None))
        if frequency is not None:
            metrics.update(frequency_group_metrics(metrics, frequency, freq_thresholds))
        return metrics
    finally:
        cleanup_distributed()


__all__ = ["evaluate", "evaluate_checkpoint", "predict_batch", "summary", "unwrap", "write_metrics"]
