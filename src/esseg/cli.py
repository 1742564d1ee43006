"""The ``esseg`` command line.

Each group of subcommands lives next to the code it drives and exposes
``register(subparsers)``, which adds its parsers and sets ``func(args) -> int`` on each.
This module only wires them together and turns errors a user can act on into one line on
stderr and exit status 2: :class:`~esseg.errors.EssegError`, and the known outside failures
(``OSError`` such as a full disk, a read-only folder or a path that is a file; ``MemoryError``;
PIL's decompression-bomb guard). Anything else is a bug and keeps its traceback. With the
environment variable ``ESSEG_DEBUG=1`` every error is re-raised with its traceback.

An interrupted ``esseg train`` (SIGINT/SIGTERM) saves ``last.pt`` first and exits 130/143.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys

from esseg import __version__
from esseg.errors import EssegError

# Modules that contribute subcommands, in the order they appear in ``esseg --help``.
COMMAND_MODULES = (
    "esseg.engine.commands",
    "esseg.data.commands",
    "esseg.bench.commands",
    "esseg.viz.commands",
    "esseg.models.commands",
)

# what to do about an OSError, by errno
_OS_ADVICE = {
    errno.ENOSPC: "free some disk space or write elsewhere",
    errno.EDQUOT: "free some space (disk quota exceeded) or write elsewhere",
    errno.EFBIG: "the file is too large for a file size limit or the file system; write elsewhere",
    errno.EACCES: "fix the permissions or choose another path",
    errno.EPERM: "fix the permissions or choose another path",
    errno.EROFS: "the file system is read-only; choose another path",
    errno.EISDIR: "the path is a folder; give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder; choose another path",
    errno.ENOENT: "check the path",
    errno.EIO: "check the disk (is it full?) or write elsewhere",
}


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def fraction(text: str) -> float:
    """argparse type: a number in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="esseg",
        description="Embedding-based scalable semantic segmentation (ESS).",
        epilog="Errors print one line `esseg: error: ...` (exit 2); set ESSEG_DEBUG=1 to see their tracebacks.",
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


def error_line(err: BaseException) -> str | None:
    """The one-line message for an error a user can act on, or ``None`` for a bug (keep the traceback)."""
    if isinstance(err, EssegError):
        return str(err)
    if isinstance(err, OSError):
        what = err.strerror or str(err) or type(err).__name__
        where = f" {err.filename}" + (f" -> {err.filename2}" if err.filename2 else "") if err.filename else ""
        advice = _OS_ADVICE.get(err.errno, "check the path and the disk")
        return f"{what}:{where}; {advice}" if where else f"{what}; {advice}"
    if isinstance(err, MemoryError):
        return "out of memory; use smaller inputs (e.g. predict --tile 512), a smaller batch or a machine with more memory"
    if type(err).__name__ == "DecompressionBombError":  # PIL.Image, without importing PIL here
        return f"{err}; such an image is refused as a possible decompression bomb"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as err:  # esseg train's TrainingInterrupted carries what it saved
        print(f"esseg: {getattr(err, 'message', 'interrupted')}", file=sys.stderr)
        return int(getattr(err, "exit_code", 130))
    except Exception as err:
        line = error_line(err)
        if line is None or os.environ.get("ESSEG_DEBUG", "") not in ("", "0"):
            raise
        print(f"esseg: error: {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
