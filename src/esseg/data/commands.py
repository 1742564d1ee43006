"""``esseg data inspect`` and (when its module exists) ``esseg build-coco-lvis``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from esseg._io import atomic_write_text, check_output_file, json_dumps
from esseg.cli import non_negative_int
from esseg.data import DATASETS
from esseg.data.inspect import format_report, inspect_dataset
from esseg.errors import ConfigError

BUILDER = "esseg.data.coco_lvis_builder"


def _inspect(args: argparse.Namespace) -> int:
    if args.json and args.json != "-":
        check_output_file(args.json, "--json file")  # before the scan, not after it
    report = inspect_dataset(
        args.dataset, args.root, args.split, check_images=args.check_images, progress=sys.stderr.isatty(),
        **_options(args.options),
    )
    if args.json != "-":
        print(format_report(report, top=args.top))
    if args.json:
        text = json_dumps(report, indent=2)
        if args.json == "-":
            print(text)
        else:
            atomic_write_text(Path(args.json), text + "\n")
    return 0 if report["ok"] else 2


def _options(text: str | None) -> dict:
    if not text:
        return {}
    try:
        options = yaml.safe_load(text)
    except yaml.YAMLError:
        options = None
    if not isinstance(options, dict):
        raise ConfigError(f"--options must be a YAML mapping like '{{label_suffix: _gt}}', got {text!r}")
    return options


def register(subparsers) -> None:
    """Add ``data inspect`` (and ``build-coco-lvis`` once its module exists) to the CLI."""
    data = subparsers.add_parser("data", help="check datasets on disk")
    data.set_defaults(func=lambda args: data.print_help() or 2)
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    p = sub.add_parser(
        "inspect",
        help="read every label of a split: classes present, pixel counts, invalid files",
        description="Read every label of a dataset split and report class statistics and broken "
        "files. Exit status 0 when every sample is valid, 2 otherwise.",
    )
    p.add_argument("--dataset", required=True, choices=sorted(DATASETS), help="dataset name")
    p.add_argument("--root", "--data-root", dest="root", help="dataset root directory (see docs/datasets.md)")
    p.add_argument("--split", default="train", help="split name (default: train)")
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON to FILE ('-' = stdout only)")
    p.add_argument("--top", type=non_negative_int, default=10, help="classes to list by pixel count (default: 10)")
    p.add_argument("--check-images", action="store_true", help="also decode every image (slower)")
    p.add_argument("--options", metavar="YAML", help="dataset options as in data.options, e.g. '{label_suffix: _gt}'")
    p.set_defaults(func=_inspect)

    try:  # looked up at registration, so the CLI also works without the builder
        from esseg.data.coco_lvis_builder import register_cli
    except ModuleNotFoundError as err:
        if err.name != BUILDER:
            raise
    else:
        register_cli(subparsers)
