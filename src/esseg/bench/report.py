"""Ratios, goals, printed tables and the atomic CSV / JSON / PNG outputs of a benchmark run.

A ratio is data: ``row(numerator)[column] / row(denominator)[column]``, where each side is
the one row whose fields equal a selector (e.g. ``{"method": "ess", "C": 1284}``) and whose
status is ``ok``. The values in the JSON are computed from the same rows the CSV holds, so a
reader can recompute every ratio from the CSV.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import io
import json
import math
from pathlib import Path
from typing import Callable, Iterable

from esseg._io import atomic_write
from esseg.bench.common import Settings, format_bytes

# The tidy columns every benchmark writes first (then its own columns).
CORE_COLUMNS = ["method", "C", "d", "k", "batch", "crop", "device", "seconds", "peak_bytes"]


@dataclasses.dataclass(frozen=True)
class Ratio:
    """``value = numerator row[column] / denominator row[column]``, optionally with a goal.

    Args:
        name: stable identifier (JSON key). label: what a reader sees in the tables.
        column: the row field compared (``peak_bytes``, ``seconds``, ``max_batch``).
        numerator, denominator: field values that select exactly one row each.
        goal: ``"<= 1.10"`` or ``">= 6"``, or None for an informative ratio.
    """

    name: str
    label: str
    column: str
    numerator: dict
    denominator: dict
    goal: str | None = None


def _describe(selector: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in selector.items())


def find_row(rows: Iterable[dict], selector: dict) -> tuple[dict | None, str | None]:
    """The row whose fields equal ``selector`` and whose status is ok, else (None, why not)."""
    matches = [r for r in rows if all(r.get(k) == v for k, v in selector.items())]
    if not matches:
        return None, f"not in this run ({_describe(selector)})"
    ok = [r for r in matches if r.get("status", "ok") == "ok"]
    if not ok:
        return None, f"{_describe(selector)}: {matches[0].get('note') or matches[0].get('status')}"
    if len(ok) > 1:
        raise ValueError(f"ratio selector {selector} matches {len(ok)} rows; make it more specific")
    return ok[0], None


def _verdict(value: float, goal: str) -> str:
    op, threshold = goal.split()
    limit = float(threshold)
    passed = value <= limit if op == "<=" else value >= limit if op == ">=" else None
    if passed is None:
        raise ValueError(f"goal must start with <= or >=; got {goal!r}")
    return "PASS" if passed else "MISS"


def compute_ratio(rows: list[dict], ratio: Ratio) -> dict:
    """The ratio's value (None when a side is missing or not ok) and, with a goal, its verdict."""
    num, why_num = find_row(rows, ratio.numerator)
    den, why_den = find_row(rows, ratio.denominator)
    value, note = None, why_num or why_den
    if num is not None and den is not None:
        a, b = num.get(ratio.column), den.get(ratio.column)
        if a is None or b is None:
            note = f"{ratio.column} missing"
        elif b == 0:
            note = f"denominator {ratio.column} is 0"
        else:
            value = float(a) / float(b)
    verdict = None
    if ratio.goal is not None:
        verdict = _verdict(value, ratio.goal) if value is not None else "n/a"
    if value is not None and (num.get("capped") or den.get("capped")):
        # A capped search (e.g. --max-batch-limit) gives a bound, not a value: keep only verdicts it decides.
        bound = "unknown" if num.get("capped") and den.get("capped") else "lower" if num.get("capped") else "upper"
        note = f"{bound} bound: a side hit its search limit"
        if verdict is not None:
            op = ratio.goal.split()[0]
            decided = (bound == "lower" and (verdict, op) in (("PASS", ">="), ("MISS", "<="))) or (
                bound == "upper" and (verdict, op) in (("PASS", "<="), ("MISS", ">=")))
            verdict = verdict if decided else "n/a"
    return dict(name=ratio.name, label=ratio.label, column=ratio.column, numerator=ratio.numerator,
                denominator=ratio.denominator, value=value, goal=ratio.goal, verdict=verdict, note=note)


# ------------------------------------------------------------------------------ writers


def _atomic_write(path: Path, write: Callable[[io.IOBase], None], binary: bool = False) -> None:
    def to_file(tmp: Path) -> None:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)

    atomic_write(path, to_file)


def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """Rows as CSV with ``columns`` in order (None -> empty cell), written atomically."""

    def write(f):
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({c: "" if r.get(c) is None else r[c] for c in columns})

    _atomic_write(path, write)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def write_json(path: Path, obj: dict) -> None:
    """``obj`` as indented JSON (non-finite floats -> null), written atomically."""
    _atomic_write(path, lambda f: f.write(json.dumps(_jsonable(obj), indent=2) + "\n"))


def write_png(path: Path, draw: Callable, ncols: int = 1, size: tuple[float, float] = (6.0, 4.2)) -> None:
    """A figure of ``ncols`` panels drawn by ``draw(axes)``, saved as PNG atomically (no pyplot)."""
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=(size[0] * ncols, size[1]), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    draw(list(axes))
    _atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=110), binary=True)


def plot_by_method(ax, rows: list[dict], y: str, methods: Iterable[str], scale: float = 1.0, x: str = "C",
                   logy: bool = False, **where) -> None:
    """One line per method of ``row[y] * scale`` against ``row[x]`` (log x), ok rows matching ``where``."""
    for method in methods:
        pts = sorted((r[x], r[y] * scale) for r in rows if r.get("method") == method and r.get("status") == "ok"
                     and r.get(y) is not None and all(r.get(k) == v for k, v in where.items()))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=method)
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("number of classes C" if x == "C" else x)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_lines():
        ax.legend()


# ------------------------------------------------------------------------------- tables


def format_table(rows: list[dict], columns: list[tuple[str, str, Callable | None]]) -> str:
    """Rows as an aligned text table; ``columns`` are (header, key, formatter or None)."""
    cells = [[h for h, _, _ in columns]]
    for r in rows:
        line = []
        for _, key, fmt in columns:
            v = r.get(key)
            line.append("-" if v is None else fmt(v) if fmt else str(v))
        cells.append(line)
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
                     for row in cells)


def fmt_seconds(v: float) -> str:
    """Seconds with a unit that keeps 3 significant digits (s / ms / us)."""
    if v >= 1:
        return f"{v:.3g} s"
    if v >= 1e-3:
        return f"{v * 1e3:.3g} ms"
    return f"{v * 1e6:.3g} us"


def fmt_ratio(v: float) -> str:
    """A ratio with 3 significant digits."""
    return f"{v:.3g}"


RATIO_COLUMNS = [("ratio", "label", None), ("value", "value", fmt_ratio), ("note", "note", None)]
GOAL_COLUMNS = [("goal", "label", None), ("measured", "value", fmt_ratio), ("target", "goal", None),
                ("verdict", "verdict", None), ("note", "note", None)]


def finish(
    name: str,
    settings: Settings,
    rows: list[dict],
    columns: list[str],
    table: list[tuple[str, str, Callable | None]],
    ratios: list[Ratio],
    draw: Callable,
    env: dict,
    extra_settings: dict | None = None,
    ncols: int = 1,
) -> int:
    """Write ``<out>/<name>.csv|json|png``, print rows, ratios and goals; exit status 1 if a row errored."""
    out = Path(settings.out)
    results = [compute_ratio(rows, r) for r in ratios]
    info = [r for r in results if r["goal"] is None]
    goals = [r for r in results if r["goal"] is not None]
    csv_path, json_path, png_path = (out / f"{name}.{ext}" for ext in ("csv", "json", "png"))
    write_csv(csv_path, rows, columns)
    write_json(json_path, dict(
        bench=name, created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        settings={**dataclasses.asdict(settings), **(extra_settings or {})}, environment=env,
        columns=columns, rows=[{c: r.get(c) for c in columns} for r in rows], ratios=results,
    ))
    write_png(png_path, draw, ncols=ncols)
    print(format_table(rows, table))
    if info:
        print("\nratios (measured side by side in this run)")
        print(format_table(info, RATIO_COLUMNS))
    if goals:
        print("\ngoals")
        print(format_table(goals, GOAL_COLUMNS))
    print(f"\nwrote {csv_path}, {json_path}, {png_path}")
    errors = [r for r in rows if r.get("status") == "error"]
    return 1 if errors else 0


def bytes_column(header: str, key: str) -> tuple[str, str, Callable]:
    """A table column showing bytes as KiB/MiB/GiB."""
    return (header, key, format_bytes)
