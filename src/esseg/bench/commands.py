"""``esseg bench <subcommand>``: argument parsing only; the work is in the benchmark modules.

Each benchmark module exposes ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)`` and
``run(args) -> int``.
"""

from __future__ import annotations

import importlib

# Subcommand -> module, in the order ``esseg bench --help`` lists them. A module that does not
# exist yet is skipped: ``accuracy`` (mIoU of baseline vs ESS per C) arrives with the
# training engine and plugs in here by providing the four names above.
SUBCOMMANDS = {
    "memory": "esseg.bench.memory",
    "speed": "esseg.bench.speed",
    "knn": "esseg.bench.knn",
    "loss": "esseg.bench.loss",
    "accuracy": "esseg.bench.accuracy",
    "scale": "esseg.bench.scale",
}


def register(subparsers) -> None:
    """Add ``bench`` and its subcommands to the ``esseg`` command line."""
    bench = subparsers.add_parser(
        "bench", help="benchmarks: memory, speed, kNN search and losses, baseline vs ESS per number of classes",
        description="Benchmarks that write tidy CSV/JSON and a PNG plot into --out and print ratios and goals. "
                    "See docs/benchmarks.md for what each one measures.",
    )
    bench.set_defaults(func=lambda args: bench.print_help() or 2)
    sub = bench.add_subparsers(dest="bench_command", metavar="SUBCOMMAND")
    for name, module_name in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:  # not written yet
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(p)
        p.set_defaults(func=module.run)
