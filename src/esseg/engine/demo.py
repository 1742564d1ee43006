"""``esseg demo``: train ESS on glyph scenes, evaluate, save predictions and write a short report.

Everything the demo does is set by a normal training config (``configs/demo.yaml``); the demo
adds, in ``train.out_dir``: ``predictions/`` (label map, colour mask and overlay of the first
``train.num_vis`` validation images), ``panels.png`` (image | ground truth | prediction) and
``report.md`` (settings, metrics, best and worst classes, the panels).
"""

from __future__ import annotations

import time
from pathlib import Path

from PIL import Image

from esseg._io import atomic_write, atomic_write_text
from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
from esseg.engine.config import Config, crop_hw
from esseg.engine.data import build_split
from esseg.engine.distributed import is_main_process
from esseg.engine.evaluate import predict_batch, summary
from esseg.engine.predict import save_prediction
from esseg.engine.run import RunFolder
from esseg.engine.train import train
from esseg.errors import EssegError
from esseg.metrics import SUMMARY_KEYS, group_keys
from esseg.viz.images import colorize, denormalize, get_palette, panel

DEFAULT_DEMO_CONFIG = "configs/demo.yaml"


def find_demo_config() -> Path | None:
    """``configs/demo.yaml`` in the working directory, else in the source checkout."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[3]):
        path = base / DEFAULT_DEMO_CONFIG
        if path.is_file():
            return path
    return None


def run_demo(cfg: Config) -> dict:
    """Train with ``cfg``, evaluate the final model, write predictions, panels and ``report.md``.

    Returns ``{"metrics", "report", "seconds", "train_seconds", "out_dir"}`` (rank 0; other
    ranks of a torchrun launch return after training).
    """
    start = time.time()
    result = train(cfg)
    if not is_main_process():
        return {}
    run = RunFolder(cfg.train.out_dir)
    ckpt = load_checkpoint(result["last_checkpoint"])
    model = model_from_checkpoint(ckpt, result["last_checkpoint"])
    val_set = build_split(cfg, cfg.data.val_split, train=False)
    num_classes = model.num_classes
    palette = get_palette(ckpt.get("palette"), num_classes)
    # train() evaluated the final model and wrote all its metrics next to the checkpoint
    full = run.read_eval(cfg.data.val_split)
    if full is None:
        raise EssegError(f"the demo run stopped before its final evaluation ({run.eval_json(cfg.data.val_split)} "
                         "missing); remove train.stop_at")

    rows = []
    for i in range(min(cfg.train.num_vis, len(val_set))):
        image, label = val_set[i]
        pred = predict_batch(model, image[None])[0].numpy()
        rgb = denormalize(image)
        save_prediction(run.predictions, f"val_{i:03d}", rgb, pred, num_classes, palette)
        rows.append([rgb, colorize(label, palette, val_set.ignore_index), colorize(pred, palette)])
    if rows:
        scale = max(1, 192 // rows[0][0].shape[0])
        image = Image.fromarray(panel(rows, gap=4, scale=scale))
        atomic_write(run.panels, lambda tmp: image.save(tmp, format="PNG"))
    report = write_report(cfg, full, result, len(val_set), run, has_panels=bool(rows), seconds=time.time() - start)
    return {"metrics": summary(full), "report": str(report), "seconds": time.time() - start,
            "train_seconds": result["train_seconds"], "out_dir": str(run.path)}


def write_report(cfg: Config, metrics: dict, result: dict, num_val: int, out_dir: str | Path | RunFolder, has_panels: bool,
                 seconds: float) -> Path:
    """Write ``report.md``: what was trained, the metrics, the best/worst classes and the panels."""
    run = out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
    split = cfg.data.val_split
    m, lo, t = cfg.model, cfg.loss, cfg.train
    crop = crop_hw(cfg.data.crop_size)
    unit = ("pixel and class embeddings" if m.unit_pixels else "class embeddings only") if m.normalize else "none"
    what = (f"{m.arch} / {m.encoder}, embedding_dim d={m.embedding_dim}, k={lo.k} ({lo.mode}), tau={lo.tau:g}, "
            f"unit length: {unit}"
            if m.method == "ess" else f"{m.arch} / {m.encoder}, softmax baseline")
    ious = [(iou, name) for iou, name in zip(metrics["IoU"], metrics["class_names"]) if iou is not None]
    ious.sort(key=lambda x: -x[0])
    fmt = lambda items: "; ".join(f"`{name}` {100 * iou:.1f}" for iou, name in items)  # noqa: E731
    lines = [
        f"# esseg demo: {'ESS' if m.method == 'ess' else 'baseline'} on {cfg.data.dataset} ({result['num_classes']} classes)",
        "",
        f"- model: {what}",
        f"- training: {result['iterations']} iterations, batch {t.batch_size}, "
        f"{'full images' if crop is None else f'crop {crop[0]}x{crop[1]}'}, lr {cfg.optim.lr}, seed {t.seed}, device {result['device']}",
        f"- time: {result['train_seconds']:.0f} s in training steps, {result['seconds']:.0f} s training with "
        f"evaluation, {seconds:.0f} s in total",
        f"- data options: {cfg.data.options}",
        "",
        f"## Validation ({num_val} images, {metrics['num_valid_classes']} classes present)",
        "",
        "| " + " | ".join(SUMMARY_KEYS) + " |",
        "|" + "---|" * len(SUMMARY_KEYS),
        "| " + " | ".join(f"{100 * metrics[k]:.2f}" for k in SUMMARY_KEYS) + " |",
        "",
    ]
    groups = [k[: -len("_mIoU")] for k in group_keys(metrics) if k.endswith("_mIoU")]
    if groups:
        lines += ["By class group: " + "; ".join(
            f"{g} mIoU {100 * metrics[g + '_mIoU']:.2f}, pixel accuracy {100 * metrics[g + '_Acc']:.2f}" for g in groups
        ) + ".", ""]
    lines += [
        f"Best classes (IoU %): {fmt(ious[:5])}.",
        f"Worst classes (IoU %): {fmt(ious[-5:][::-1])}.",
        "",
        f"Per-class IoU: `{run.eval_csv(split).name}`; all metrics: `{run.eval_json(split).name}`; "
        f"training curve: `{run.metrics.name}` and `{run.tensorboard.name}/`.",
    ]
    if has_panels:
        lines += ["", "## Predictions", "", "Columns: image, ground truth, prediction (same palette).", "",
                  f"![predictions]({run.panels.name})"]
    return atomic_write_text(run.report, "\n".join(lines) + "\n")


__all__ = ["find_demo_config", "run_demo", "write_report"]
