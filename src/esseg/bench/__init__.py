"""Benchmarks behind ``esseg bench memory | speed | knn | loss``.

Each benchmark sweeps the number of classes C, measures baseline and ESS (or each kNN path /
each loss) side by side in one run, writes tidy rows to ``<out>/<name>.csv`` and
``<out>/<name>.json`` (rows, ratios, goals, settings and environment) and a plot to
``<out>/<name>.png``, and prints the rows, the ratios and a goals table (PASS / MISS / n/a).

Modules: :mod:`~esseg.bench.common` (settings, synthetic data, timing, memory meters, the
training step), :mod:`~esseg.bench.worker` (runs one configuration per fresh process),
:mod:`~esseg.bench.report` (ratios, goals, tables, atomic CSV/JSON/PNG writers) and one module
per subcommand. What each one measures, exactly, is in ``docs/benchmarks.md``.
"""
