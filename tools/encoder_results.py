"""Summarise the class-encoder runs at C = 1000 (docs/RESULTS.md, "Class encoders").

Reads ``<runs>/<variant>_s<seed>/metrics.jsonl`` and ``eval_val_per_class.csv`` and writes to
``--out``: ``summary.csv`` (final metrics per run), ``curves.csv`` (every evaluation),
``by_frequency.csv`` (mean thing IoU per frequency band of the training distribution: the
100 most frequent thing classes, the next 300, the rest) and ``curves.png``; prints Markdown
tables with mean and spread over seeds (population std of the runs that exist).

    PYTHONPATH=src python tools/encoder_results.py --runs runs/encoders_c1000 --out docs/bench/encoders_c1000
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
from pathlib import Path

import numpy as np

from esseg.data.glyph_scenes import GlyphScenes

KEYS = ("PAcc", "mIoU", "thing_mIoU", "thing_Acc", "stuff_mIoU", "seen_thing_mIoU", "unseen_thing_mIoU")
BANDS = ((0, 100), (100, 400), (400, None))


def _evals(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]


def _band_ious(run: Path, ds: GlyphScenes) -> list[float | None]:
    with (run / "eval_val_per_class.csv").open() as f:
        iou = {int(r["class_id"]): (float(r["IoU"]) if r["IoU"] else None) for r in csv.DictReader(f)}
    order = np.argsort(-ds.thing_probabilities)  # most frequent first (the training distribution)
    out = []
    for lo, hi in BANDS:
        vals = [iou[ds.num_stuff + int(t)] for t in order[lo:hi] if iou.get(ds.num_stuff + int(t)) is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


def factor_accuracy(checkpoint: Path, ds_val: GlyphScenes, batch: int = 50) -> dict:
    """Over thing pixels of the val split: the share whose predicted class is the true class, has
    the true (pattern, colour), the true shape, or is any thing (not stuff). Shows which cue fails."""
    import torch

    from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint
    from esseg.engine.evaluate import predict_batch

    model = model_from_checkpoint(load_checkpoint(checkpoint))
    n = ds_val.num_stuff
    shape = torch.tensor([-1] * n + [hash(t.shape) for t in ds_val.things])
    combo = torch.tensor([-1] * n + [t.pattern * 100 + t.colour for t in ds_val.things])
    counts = {"exact": 0, "pattern_colour": 0, "shape": 0, "thing": 0, "pixels": 0}
    for lo in range(0, len(ds_val), batch):
        items = [ds_val[i] for i in range(lo, min(lo + batch, len(ds_val)))]
        images = torch.stack([im for im, _ in items])
        labels = torch.stack([lab for _, lab in items])
        pred = predict_batch(model, images)
        m = labels >= n
        y, p = labels[m], pred[m]
        counts["pixels"] += int(m.sum())
        counts["exact"] += int((y == p).sum())
        counts["pattern_colour"] += int((combo[y] == combo[p]).sum())
        counts["shape"] += int((shape[y] == shape[p]).sum())
        counts["thing"] += int((p >= n).sum())
    return {k: counts[k] / counts["pixels"] for k in ("exact", "pattern_colour", "shape", "thing")}


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{100 * values[0]:.2f} (1 seed)"
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.pstdev(values):.2f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/encoders_c1000")
    p.add_argument("--out", default="docs/bench/encoders_c1000")
    p.add_argument("--classes", type=int, default=1000)
    p.add_argument("--factors", action="store_true", help="also predict the val split with every table/attributes run's "
                   "last.pt: accuracy of the class, its pattern + colour, its shape (factors.csv)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = sorted(r for r in Path(args.runs).iterdir() if (r / "eval_val.json").is_file())
    ds = GlyphScenes(num_classes=args.classes, length=1)
    summary, curves, bands = [], [], []
    for run in runs:
        variant, seed = re.fullmatch(r"(.+)_s(\d+)", run.name).groups()
        evals = _evals(run)
        for e in evals:
            curves.append({"variant": variant, "seed": int(seed), "iter": e["iter"], **{k: e.get(k) for k in KEYS}})
        summary.append({"variant": variant, "seed": int(seed), "iter": evals[-1]["iter"], **{k: evals[-1].get(k) for k in KEYS}})
        if variant in ("table", "attributes"):
            bands.append({"variant": variant, "seed": int(seed), **{f"band_{i}": v for i, v in enumerate(_band_ious(run, ds))}})
    for name, rows in (("summary", summary), ("curves", curves), ("by_frequency", bands)):
        with (out / f"{name}.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    variants = sorted({r["variant"] for r in summary})
    print("| variant | seeds | PAcc | mIoU | thing mIoU | thing acc | stuff mIoU | seen thing mIoU | unseen thing mIoU |")
    print("|---|---|---|---|---|---|---|---|---|")
    for v in variants:
        rows = [r for r in summary if r["variant"] == v]
        cells = [_mean_std([r[k] for r in rows if r[k] is not None]) for k in
                 ("PAcc", "mIoU", "thing_mIoU", "thing_Acc", "stuff_mIoU", "seen_thing_mIoU", "unseen_thing_mIoU")]
        print(f"| {v} | {', '.join(str(r['seed']) for r in rows)} | " + " | ".join(cells) + " |")
    zs = [r for r in summary if r["variant"] == "zeroshot" and r["seen_thing_mIoU"]]
    if zs:
        ratios = [r["unseen_thing_mIoU"] / r["seen_thing_mIoU"] for r in zs]
        print(f"\nunseen/seen thing mIoU ratio per seed: {', '.join(f'{x:.3f}' for x in ratios)}")
    print(f"\n| variant | thing IoU, 100 most frequent | next 300 | remaining {ds.num_classes - ds.num_stuff - 400} |")
    print("|---|---|---|---|")
    for v in sorted({r["variant"] for r in bands}):
        rows = [r for r in bands if r["variant"] == v]
        print(f"| {v} | " + " | ".join(_mean_std([r[f"band_{i}"] for r in rows if r[f"band_{i}"] is not None])
                                    for i in range(len(BANDS))) + " |")
    if args.factors:
        ds_val = GlyphScenes(split="val", num_classes=args.classes, length=200)
        rows = []
        for run in runs:
            if run.name.startswith(("table", "attributes")):
                rows.append({"run": run.name, **factor_accuracy(run / "last.pt", ds_val)})
        with (out / "factors.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
        print("\n| run | thing pixels: exact class | same pattern + colour | same shape | any thing |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['run']} | {100 * r['exact']:.1f} | {100 * r['pattern_colour']:.1f} | {100 * r['shape']:.1f} | "
                  f"{100 * r['thing']:.1f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    zero_shot = any(r["variant"] == "zeroshot" for r in curves)
    fig, axes = plt.subplots(1, 2 if zero_shot else 1, figsize=(10 if zero_shot else 5.5, 4), squeeze=False)
    axes = list(axes[0])
    for v in variants:
        rows = [r for r in curves if r["variant"] == v]
        iters = sorted({r["iter"] for r in rows})
        for ax, key in zip(axes, ("thing_mIoU", "unseen_thing_mIoU" if v == "zeroshot" else "thing_mIoU")[: len(axes)]):
            if key == "unseen_thing_mIoU" or ax is axes[0]:
                ys = [statistics.mean(r[key] for r in rows if r["iter"] == i and r[key] is not None) for i in iters]
                ax.plot(iters, [100 * y for y in ys], marker="o", label=f"{v} ({key}, mean of {len({r['seed'] for r in rows})})")
    zs_rows = [r for r in curves if r["variant"] == "zeroshot"]
    if zs_rows:
        iters = sorted({r["iter"] for r in zs_rows})
        axes[1].plot(iters, [100 * statistics.mean(r["seen_thing_mIoU"] for r in zs_rows if r["iter"] == i) for i in iters],
                     marker="o", label="zeroshot (seen_thing_mIoU)")
    axes[0].set_title(f"thing mIoU, C = {args.classes}")
    if zero_shot:
        axes[1].set_title("generalised zero-shot, 20 % held out")
    for ax in axes:
        ax.set_xlabel("training step")
        ax.set_ylabel("%")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
