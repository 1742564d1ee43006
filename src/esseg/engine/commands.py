"""``esseg train | eval | predict | demo``: argument parsing only; the work is in the engine modules."""

from __future__ import annotations

import argparse
from pathlib import Path

from esseg._io import check_output_file
from esseg.cli import fraction, positive_int
from esseg.engine.config import Config, load_config, valid_keys
from esseg.engine.demo import find_demo_config, run_demo
from esseg.engine.distributed import is_main_process, resolve_device
from esseg.engine.evaluate import evaluate_checkpoint, write_metrics
from esseg.engine.predict import predict_files
from esseg.engine.run import checkpoint_eval_paths, per_class_csv
from esseg.engine.train import train
from esseg.errors import ConfigError
from esseg.metrics import format_table

# train/demo flags and the config keys they set (they win over --config and --set)
TRAIN_FLAGS = {
    "dataset": "data.dataset",
    "data_root": "data.root",
    "method": "model.method",
    "arch": "model.arch",
    "encoder": "model.encoder",
    "iters": "train.iters",
    "batch_size": "train.batch_size",
    "crop_size": "data.crop_size",
    "device": "train.device",
    "out": "train.out_dir",
    "resume": "train.resume",
    "overwrite": "train.overwrite",
    "seed": "train.seed",
}


def _add_config_args(p: argparse.ArgumentParser, config_help: str) -> None:
    """--config, --set and the TRAIN_FLAGS shortcuts (shared by train and demo)."""
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override config keys (values are YAML), e.g. --set loss.k=8 'data.options={num_classes: 20}'; "
                        "the valid keys are listed at the end of `esseg train --help`")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="train.device (default auto: cuda if available)")
    p.add_argument("--out", metavar="DIR", help="train.out_dir: run folder for checkpoints, logs and metrics")
    p.add_argument("--iters", type=int, metavar="N", help="train.iters: total training iterations")
    p.add_argument("--seed", type=int, help="train.seed")
    p.add_argument("--dataset", help="data.dataset (e.g. glyph_scenes, cityscapes, ade20k)")
    p.add_argument("--data-root", metavar="DIR", help="data.root: dataset folder")
    p.add_argument("--method", choices=["ess", "baseline"], help="model.method")
    p.add_argument("--arch", help="model.arch (e.g. deeplabv3plus)")
    p.add_argument("--encoder", help="model.encoder (e.g. mobilenet_v2, resnet50)")
    p.add_argument("--batch-size", type=int, metavar="B", help="train.batch_size (per process)")
    p.add_argument("--crop-size", type=int, metavar="S", help="data.crop_size (square S x S training crops)")
    p.add_argument("--resume", metavar="PATH|auto", help="train.resume: a checkpoint, or auto for <out>/last.pt if present; "
                                                         "with a larger --iters the run is extended and the lr decays to the new total")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="train.overwrite: if --out holds another run, delete its last.pt, best.pt, metrics.jsonl, eval_* and "
                        "TensorBoard files and start over (otherwise such a folder is refused unless --resume)")


def _config_from_args(args, config_path=None) -> Config:
    updates = {key: getattr(args, flag, None) for flag, key in TRAIN_FLAGS.items()}
    return load_config(args.config or config_path, args.overrides, updates)


def _add_tile_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", type=positive_int, metavar="S",
                   help="sliding-window prediction with S x S crops (e.g. 512; bounds memory on large images); "
                        "each pixel takes the class from the crop whose centre is nearest (default: whole images)")
    p.add_argument("--overlap", type=fraction, default=0.25, metavar="F",
                   help="overlap of neighbouring crops as a fraction of --tile, in [0, 1) (default 0.25)")


def _print_metrics(metrics: dict) -> None:
    print(format_table(metrics))


# ------------------------------------------------------------------------------- train


def cmd_train(args) -> int:
    """``esseg train``: build the config from --config/--set/flags, train, print the final metrics (rank 0)."""
    cfg = _config_from_args(args)
    result = train(cfg)
    if not is_main_process():
        return 0
    if result.get("metrics"):
        _print_metrics(result["metrics"])
    print(f"trained to iteration {result['iterations']} in {result['seconds']:.0f} s; checkpoint: {result['last_checkpoint']}"
          + (f", best: {result['best_checkpoint']}" if result.get("best_checkpoint") else ""))
    return 0


# -------------------------------------------------------------------------------- eval


def cmd_eval(args) -> int:
    """``esseg eval``: evaluate a checkpoint, print the table, write the JSON and per-class CSV (rank 0)."""
    updates = {"data.root": args.data_root, "data.dataset": args.dataset}
    thresholds = _thresholds(args.freq_thresholds)  # checked before the evaluation
    json_path = Path(args.json) if args.json else checkpoint_eval_paths(args.checkpoint, args.split)[0]
    csv_path = Path(args.csv) if args.csv else per_class_csv(json_path)
    if is_main_process():  # before the evaluation, not after it
        check_output_file(json_path, "--json file")
        check_output_file(csv_path, "--csv file")
    metrics = evaluate_checkpoint(args.checkpoint, args.split, args.overrides, updates, args.device or "auto", args.batch_size,
                                  freq_thresholds=thresholds, class_frequency=args.class_frequency,
                                  tile=args.tile, overlap=args.overlap, classes=args.classes)
    if not is_main_process():
        return 0
    write_metrics(metrics, json_path, csv_path)
    _print_metrics(metrics)
    if "frequency_thresholds" in metrics:
        t1, t2 = metrics["frequency_thresholds"]
        print(f"classes by training images: {metrics['rare_classes']} rare (1-{t1}), {metrics['common_classes']} common "
              f"({t1 + 1}-{t2}), {metrics['frequent_classes']} frequent (> {t2}), {metrics['unseen_classes']} unseen (0)")
    print(f"{metrics['num_valid_classes']} classes present; metrics: {json_path}; per-class IoU: {csv_path}")
    return 0


def _thresholds(text: str) -> tuple[int, int]:
    try:
        t1, t2 = (int(v) for v in text.split(","))
    except ValueError:
        t1 = t2 = 0
    if not 1 <= t1 < t2:
        raise ConfigError(f"--freq-thresholds must be two integers 1 <= RARE_MAX < COMMON_MAX like 10,100, got {text!r}")
    return t1, t2


# ----------------------------------------------------------------------------- predict


def cmd_predict(args) -> int:
    """``esseg predict``: label / colour / overlay PNGs for image files."""
    written = predict_files(args.checkpoint, args.inputs, args.out, resolve_device(args.device or "auto"), args.tile, args.overlap,
                            classes=args.classes)
    print(f"wrote {len(written) // 3} predictions (label map, colour and overlay images) to {args.out}")
    return 0


# -------------------------------------------------------------------------------- demo


def cmd_demo(args) -> int:
    """``esseg demo``: train with configs/demo.yaml, evaluate, write predictions and report.md (rank 0 prints)."""
    config_path = args.config or find_demo_config()
    if config_path is None:
        raise ConfigError("configs/demo.yaml not found; run from the repository root or pass --config FILE")
    cfg = _config_from_args(args, config_path)
    result = run_demo(cfg)
    if not result:
        return 0
    _print_metrics(result["metrics"])
    print(f"demo finished in {result['seconds']:.0f} s ({result['train_seconds']:.0f} s in training steps); report: {result['report']}")
    return 0


# ---------------------------------------------------------------------------- register

CLASSES_HELP = ("a class list to use instead of the training classes (models with model.class_encoder=attributes/text): "
                "a .tsv of 'id<TAB>token token ...[<TAB>name]' lines, or a C x D .npy/.pt text-feature file (names from "
                "the .txt of the same stem)")


def register(subparsers) -> None:
    """Add the train, eval, predict and demo subcommands to the ``esseg`` parser."""
    keys = ", ".join(valid_keys())
    p = subparsers.add_parser(
        "train", help="train an ESS or baseline segmentation model",
        description="Train a model. Settings come from --config (YAML), then --set KEY=VALUE, then the flags below. "
                    "With no config: ESS on the built-in glyph_scenes dataset.",
        epilog=f"config keys: {keys}",
    )
    _add_config_args(p, "YAML config, e.g. configs/cityscapes_mobilenetv2_ess.yaml (default: built-in defaults)")
    p.set_defaults(func=cmd_train)

    p = subparsers.add_parser(
        "eval", help="evaluate a checkpoint: PAcc, mAcc, mIoU, fIoU and per-class IoU",
        description="Evaluate a checkpoint on the dataset it was trained on. Writes all metrics as JSON and "
                    "per-class IoU as CSV (default: next to the checkpoint).",
    )
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a last.pt/best.pt written by esseg train")
    p.add_argument("--data-root", metavar="DIR", help="dataset folder (default: the one used for training)")
    p.add_argument("--dataset", help="dataset name (default: the training dataset)")
    p.add_argument("--split", default="val", help="split to evaluate (default val)")
    p.add_argument("--set", dest="overrides", metavar="KEY=VALUE", nargs="+", action="extend", default=[],
                   help="override data.* keys of the checkpoint's config, e.g. data.val_mode=crop_val")
    p.add_argument("--json", metavar="FILE", help="metrics JSON (default <checkpoint>_eval_<split>.json)")
    p.add_argument("--csv", metavar="FILE", help="per-class CSV (default <json stem>_per_class.csv)")
    p.add_argument("--batch-size", type=positive_int, metavar="B", help="evaluation batch size (default train.eval_batch_size)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    p.add_argument("--freq-thresholds", default="10,100", metavar="RARE_MAX,COMMON_MAX",
                   help="frequency groups by training images per class: rare 1..RARE_MAX, common ..COMMON_MAX, "
                        "frequent above (default 10,100 as LVIS); needs the checkpoint's class_frequency")
    p.add_argument("--class-frequency", metavar="FILE",
                   help="images per class from `esseg data inspect --split <train split> --json FILE` "
                        "(default: the class_frequency the checkpoint records)")
    _add_tile_args(p)
    p.add_argument("--classes", metavar="FILE", help=CLASSES_HELP + "; the dataset's labels must index it")
    p.set_defaults(func=cmd_eval)

    p = subparsers.add_parser(
        "predict", help="segment image files with a checkpoint",
        description="Write, per image, <stem>_label.png (class ids; 16-bit when C > 255), <stem>_color.png and "
                    "<stem>_overlay.png.",
    )
    p.add_argument("--checkpoint", required=True, metavar="FILE", help="a last.pt/best.pt written by esseg train")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default auto")
    _add_tile_args(p)
    p.add_argument("--classes", metavar="FILE", help=CLASSES_HELP)
    p.set_defaults(func=cmd_predict)

    p = subparsers.add_parser(
        "demo", help="train ESS on glyph scenes (>= 200 classes), evaluate and write a report (< 10 min on CPU)",
        description="Train with configs/demo.yaml, evaluate, save predictions, prediction panels and report.md in the "
                    "run folder, print the metrics.",
    )
    _add_config_args(p, "demo config (default configs/demo.yaml)")
    p.set_defaults(func=cmd_demo)


__all__ = ["register", "TRAIN_FLAGS", "cmd_train", "cmd_eval", "cmd_predict", "cmd_demo"]
