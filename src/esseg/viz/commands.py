"""``esseg viz <figure>``, ``esseg export-embeddings`` and ``esseg export``: argument parsing only.

The work is in :mod:`esseg.viz.analysis` (figures from checkpoints) and :mod:`esseg.export`.
"""

from __future__ import annotations

import argparse

from esseg.engine.distributed import resolve_device
from esseg.export import export_embeddings, export_model
from esseg.viz.analysis import (
    DataOptions, class_iou_figure, dendrogram_figure, norms_figure, panels_figure, projection_figure, rgb_figure,
)


def _device(args):
    return resolve_device(args.device or "cpu")


def _data(args):
    return DataOptions(split=args.split, data_root=args.data_root, dataset=args.dataset, overrides=args.overrides)


def _done(result: dict, what: str) -> int:
    w, h = result["size"]
    print(f"wrote {what}: {result['path']} ({w}x{h} px)")
    return 0


def cmd_norms(args) -> int:
    """``esseg viz norms``."""
    result = norms_figure(args.checkpoint, args.out, _data(args), args.num_samples, _device(args))
    if result["note"]:
        print("note: the model normalises its embeddings; the raw class_table lengths do not affect its predictions")
    if result["spearman"] is not None:
        print(f"Spearman rank correlation of class frequency and embedding length: {result['spearman']:+.3f}")
    return _done(result, "class frequency vs embedding length (and norms.tsv)")


def cmd_projection(args) -> int:
    """``esseg viz projection``."""
    result = projection_figure(args.checkpoint, args.out, _data(args), args.index, args.method, args.max_pixels,
                               args.seed, _device(args))
    return _done(result, f"{args.method} projection of sample {args.index}")


def cmd_rgb(args) -> int:
    """``esseg viz rgb``."""
    return _done(rgb_figure(args.checkpoint, args.out, _data(args), args.index, _device(args)), "embeddings as RGB")


def cmd_dendrogram(args) -> int:
    """``esseg viz dendrogram``."""
    result = dendrogram_figure(args.checkpoint, args.out, _data(args), args.top, args.num_samples, args.linkage,
                               _device(args))
    return _done(result, f"dendrogram of {len(result['leaves'])} classes")


def cmd_class_iou(args) -> int:
    """``esseg viz class-iou``."""
    result = class_iou_figure(args.checkpoint, args.out, _data(args), args.compare, args.num_samples,
                              args.batch_size, _device(args))
    for m, name in zip(result["metrics"], ["checkpoint", "compare"]):
        print(f"{name}: mIoU {100 * m['mIoU']:.2f} over {m['num_valid_classes']} classes")
    return _done(result, "per-class IoU (and class_iou.tsv)")


def cmd_panels(args) -> int:
    """``esseg viz panels``."""
    result = panels_figure(args.checkpoint, args.out, _data(args), args.compare, args.index, args.num, _device(args))
    return _done(result, "prediction panels")


def cmd_export_embeddings(args) -> int:
    """``esseg export-embeddings``."""
    result = export_embeddings(args.checkpoint, args.out)
    c, d = result["embeddings"].shape
    print(f"wrote {c} class embeddings of dimension {d}: {result['pt']}, {result['npy']}, {result['tsv']}")
    return 0


def cmd_export(args) -> int:
    """``esseg export``."""
    result = export_model(args.checkpoint, args.out, args.format, args.size, args.seed)
    shapes = ", ".join("x".join(map(str, s)) for s in result["checked"])
    print(f"wrote {result['format']} {result['method']} model: {result['path']} "
          f"(images (B,3,H,W) -> labels (B,H,W) int64; matches eager predict on random {shapes} images)")
    return 0


# ---------------------------------------------------------------------------------- parsers


def _common(p: argparse.ArgumentParser, data: bool = True, compare: bool = False,
            out_help: str = "output folder for the PNG(s)") -> None:
    """--checkpoint, --out, (--compare), the data options and --device."""
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a last.pt/best.pt written by esseg train")
    if compare:
        p.add_argument("--compare", metavar="FILE", help="a second checkpoint (e.g. the baseline) drawn beside the first")
    p.add_argument("--out", required=True, metavar="DIR", help=out_help)
    if data:
        p.add_argument("--data-root", metavar="DIR", help="dataset folder (default: the one used for training)")
        p.add_argument("--dataset", help="dataset name (default: the training dataset)")
        p.add_argument("--split", default="val", help="split to read (default val)")
        p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                       help="override data.* keys of the checkpoint's config, e.g. 'data.val_options={length: 50}'")
        p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default cpu")


def _num_samples(p: argparse.ArgumentParser, default: int | None) -> None:
    what = "all" if default is None else str(default)
    p.add_argument("--num-samples", type=int, default=default, metavar="N",
                   help=f"samples, spread evenly over the split, to count class pixels on (default {what})")


def register(subparsers) -> None:
    """Add ``viz`` (with one subcommand per figure), ``export-embeddings`` and ``export`` to ``esseg``."""
    viz = subparsers.add_parser(
        "viz", help="analysis figures of a checkpoint (paper Fig. 5, 6/7, 9-13) as PNGs",
        description="Analysis figures of a trained checkpoint, written as PNGs to --out. The data is the "
                    "checkpoint's validation split unless --dataset/--data-root/--split/--set say otherwise. "
                    "See docs/visualisation.md for what to look for in each.",
    )
    viz.set_defaults(func=lambda args: viz.print_help() or 2)
    sub = viz.add_subparsers(dest="viz_command", metavar="FIGURE")

    p = sub.add_parser("norms", help="class pixel frequency vs class-embedding length (Fig. 9)",
                       description="Two panels, classes sorted by pixel frequency: their share of the pixels and the "
                                   "length of their raw class_table embedding (meaningful for a model trained without "
                                   "normalisation). Also writes norms.tsv.")
    _common(p)
    _num_samples(p, 200)
    p.set_defaults(func=cmd_norms)

    p = sub.add_parser("projection", help="one image's pixel and class embeddings in 2-D (Fig. 10)",
                       description="Pixel embeddings of one image (subsampled) as dots coloured by ground-truth class, "
                                   "the class embeddings of its classes as stars. PCA by default; --method tsne needs "
                                   "scikit-learn.")
    _common(p)
    p.add_argument("--index", type=int, default=0, help="sample of the split (default 0)")
    p.add_argument("--method", choices=["pca", "tsne"], default="pca", help="2-D projection (default pca)")
    p.add_argument("--max-pixels", type=int, default=2000, metavar="N", help="pixels to sample (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="pixel sampling and t-SNE seed")
    p.set_defaults(func=cmd_projection)

    p = sub.add_parser("rgb", help="pixel embeddings projected to RGB beside image and prediction (Fig. 11)",
                       description="Per sample: the image, its pixel embeddings projected to 3-D by PCA and shown as "
                                   "RGB, and the predicted mask.")
    _common(p)
    p.add_argument("--index", type=int, nargs="+", default=[0], metavar="I", help="samples of the split (default 0)")
    p.set_defaults(func=cmd_rgb)

    p = sub.add_parser("dendrogram", help="agglomerative clustering of class embeddings (Fig. 12/13)",
                       description="Hierarchical clustering (scipy) of the class embeddings of the --top most frequent "
                                   "classes of the split, leaves labelled with class names.")
    _common(p)
    p.add_argument("--top", type=int, default=50, metavar="N", help="most frequent classes to cluster (default 50)")
    _num_samples(p, 200)
    p.add_argument("--linkage", default="average", help="scipy linkage method: average (default), complete, single, ward")
    p.set_defaults(func=cmd_dendrogram)

    p = sub.add_parser("class-iou", help="per-class IoU sorted by class frequency, optionally two models (Fig. 5)",
                       description="Evaluates --checkpoint (and --compare) on the split and plots per-class IoU, classes "
                                   "sorted by ground-truth pixel frequency. Also writes class_iou.tsv.")
    _common(p, compare=True)
    _num_samples(p, None)
    p.add_argument("--batch-size", type=int, default=1, metavar="B", help="evaluation batch size (default 1)")
    p.set_defaults(func=cmd_class_iou)

    p = sub.add_parser("panels", help="image | ground truth | prediction(s) for a few samples (Fig. 6/7)",
                       description="One row per sample: image, ground truth (ignored pixels black), the prediction of "
                                   "--checkpoint and, with --compare, of a second model; dataset palette.")
    _common(p, compare=True)
    p.add_argument("--index", type=int, default=0, help="first sample of the split (default 0)")
    p.add_argument("--num", type=int, default=4, help="number of samples (default 4)")
    p.set_defaults(func=cmd_panels)

    p = subparsers.add_parser(
        "export-embeddings", help="write an ESS checkpoint's class embeddings (.pt, .npy, classes.tsv)",
        description="Writes class_embeddings.pt and class_embeddings.npy (the (C, d) embeddings the model classifies "
                    "with) and classes.tsv (index, name, norm of the raw class_table row) to --out.",
    )
    _common(p, data=False, out_help="output folder for class_embeddings.pt, class_embeddings.npy and classes.tsv")
    p.set_defaults(func=cmd_export_embeddings)

    p = subparsers.add_parser(
        "export", help="export a checkpoint as a pt2/TorchScript/ONNX model that outputs the label map",
        description="The exported graph maps normalised images (B, 3, H, W) to labels (B, H, W) int64, with the "
                    "nearest-class search (ESS) or argmax (baseline) inside. It is checked against the eager model "
                    "on random images before it is written.",
    )
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a last.pt/best.pt written by esseg train")
    p.add_argument("--format", choices=["torchscript", "onnx", "pt2"], default="torchscript",
                   help='torchscript (default), onnx (needs pip install "esseg[onnx]") or pt2 (torch.export)')
    p.add_argument("--out", required=True, metavar="FILE", help="output file, e.g. model.pt or model.onnx")
    p.add_argument("--size", type=int, default=64, metavar="S", help="side of the random example image (default 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random check images")
    p.set_defaults(func=cmd_export)


__all__ = ["register"]
