"""The ``esseg`` command line.

Each group of subcommands lives next to the code it drives and exposes
``register(subparsers)``, which adds its parsers and sets ``func(args) -> int`` on each.
This module only wires them together and turns :class:`~esseg.errors.EssegError` into one
line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute subcommands, in the order they appear in ``esseg --help``.
COMMAND_MODULES = (
    "esseg.engine.commands",
    "esseg.data.commands",
    "esseg.bench.commands",
    "esseg.viz.commands",
    "esseg.models.commands",
)


def build_parser() -> argparse.ArgumentParser:
    from esseg import __version__

    parser = argparse.ArgumentParser(
        prog="esseg",
        description="Embedding-based scalable semantic segmentation (ESS).",
    )
    parser.add_argument("--version", action="version", version=f"esseg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that part of the CLI is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from esseg.errors import EssegError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except EssegError as err:
        print(f"esseg: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esseg: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
