"""``esseg bench memory``: peak memory of one full training step, baseline vs ESS, per C;
with ``--max-batch BUDGET``, the largest batch whose step fits in the budget (paper Fig. 1).

Every configuration runs in a fresh process (:mod:`esseg.bench.worker`). In it:

1. ``runtime``: memory after the imports, the thread set-up, building (and dropping) a 2-class
   model (imports what the model imports lazily) and a tiny conv forward/backward (CPU:
   resident set size; CUDA: bytes allocated by tensors, ~0).
2. build model, loss, optimiser and scaler as ``esseg train`` does
   (:func:`~esseg.bench.common.build_training`) and one batch; run ``--warmup`` steps of the
   engine's ``train_step`` (at least one, so the optimiser's state exists); clear the
   gradients (``set_to_none``); ``before``: memory now.
3. reset the peak; run ONE ``train_step`` (zero_grad, forward under autocast on CUDA, loss,
   backward, optimizer step; ``train.accum_steps`` micro-batches); ``peak``: the highest
   memory during it.

Reported: ``peak_bytes = peak - runtime`` (everything the training holds at its worst moment:
weights, gradients, optimiser state, batch, activations, loss buffers; on CUDA this is exactly
``max_memory_allocated``), ``step_bytes = peak - before`` (what the step adds on top of the
persistent state: activations, gradients, temporaries), ``state_bytes = before - runtime`` and,
on CPU, ``process_peak_bytes`` (the raw ``VmHWM`` including the Python/torch runtime).
**Ratios and goals use peak_bytes.**
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Callable

import torch

from esseg.bench import report
from esseg.bench.common import (
    FULL, METHODS, QUICK, Settings, add_common_arguments, build_training, check_model_settings, describe_step,
    format_bytes, logits_bytes, make_batch, memory_limit, parse_bytes, release_free_memory, resolve_settings,
    skip_reason, start, start_measurement, timed_step,
)
from esseg.bench.report import Ratio, bytes_column, fmt_seconds
from esseg.bench.worker import MODES, IsolatedRunner
from esseg.engine.distributed import resolve_device
from esseg.errors import EssegError

HELP = "peak memory of one training step, baseline vs ESS, per number of classes (or --max-batch)"
DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "")

# Copies of the full-resolution logits the baseline's step holds at once (upsampled logits,
# log-softmax, their gradients): the lower bound used to skip configurations that cannot fit.
BASELINE_LOGIT_COPIES = 4
PRELOAD = ("torch", "esseg", "segmentation_models_pytorch")
MEMORY_COLUMNS = report.CORE_COLUMNS + [
    "measure", "status", "step_bytes", "state_bytes", "process_peak_bytes", "peak_method", "threads", "note",
]
MAX_BATCH_COLUMNS = report.CORE_COLUMNS + [
    "measure", "status", "max_batch", "budget_bytes", "fits", "capped", "probes", "step_bytes", "peak_method",
    "threads", "note",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``esseg bench memory``."""
    add_common_arguments(p, FULL, QUICK, k_help="ESS negatives per pixel (ESSLoss k)", timed=False)
    p.add_argument("--baseline-max-classes", type=int, default=20000, metavar="C",
                   help="run the baseline only up to this C (default 20000; ESS runs every --classes)")
    p.add_argument("--max-batch", metavar="BUDGET",
                   help="instead: find the largest batch whose step fits in BUDGET (e.g. 4GiB) per C and method")
    p.add_argument("--min-batch", type=int, default=2, metavar="B",
                   help="smallest batch the --max-batch search tries (default 2: BatchNorm cannot train on 1)")
    p.add_argument("--max-batch-limit", type=int, default=256, metavar="B",
                   help="largest batch the --max-batch search tries (default 256)")
    p.add_argument("--mem-limit", metavar="BYTES|none",
                   help="skip configurations whose logits alone need more, and --max-batch probes extrapolated "
                        "to need more (default on CPU: 80%% of the memory available at the start; on CUDA none, "
                        "out-of-memory is caught)")
    p.add_argument("--isolation", choices=MODES, default="fork",
                   help="fresh process per configuration: fork from a pre-imported server (default) or spawn")
    p.add_argument("--timeout", type=float, default=1800, metavar="S", help="seconds per configuration (default 1800)")


# --------------------------------------------------------------------- in the worker


def train_step_task(params: dict) -> dict:
    """Peak memory of one training step (runs in a fresh worker process; see the module doc).

    Args:
        params: ``settings`` (a :class:`Settings` as dict), ``method``, ``num_classes``, ``batch``.
    """
    s = Settings(**params["settings"])
    method, num_classes, batch = params["method"], params["num_classes"], params["batch"]
    m = start_measurement(s)
    device, meter, runtime, gen, threads, exact = m.device, m.meter, m.runtime, m.generator, m.threads, m.exact
    training = build_training(method, num_classes, s, device)
    images, labels = make_batch(num_classes, s, device, gen, batch=batch)
    for _ in range(max(1, s.warmup)):
        training.step(images, labels)
    training.optimizer.zero_grad(set_to_none=True)
    release_free_memory()
    before = meter.current()
    meter.reset_peak()
    times = timed_step(training, images, labels)
    peak = meter.peak()
    how = meter.method + ("" if device.type == "cuda" else " + exact malloc" if exact else " (malloc may cache)")
    return dict(
        status="ok", seconds=times["seconds"], peak_bytes=peak - runtime, step_bytes=peak - before,
        state_bytes=before - runtime, process_peak_bytes=peak if device.type == "cpu" else None,
        peak_method=how, threads=threads,
    )


# ------------------------------------------------------------------- in the main process


def _row(s: Settings, method: str, num_classes: int, batch: int, measure: str) -> dict:
    ess = method == "ess"
    return dict(method=method, C=num_classes, d=s.embedding_dim if ess else None, k=s.k if ess else None,
                batch=batch, crop=s.crop, device=s.device, measure=measure)


def _skip(s: Settings, method: str, num_classes: int, batch: int, baseline_max: int, limit: int | None) -> str | None:
    if method != "baseline":
        return None
    if num_classes > baseline_max:
        return f"skipped: C > --baseline-max-classes {baseline_max}"
    need = BASELINE_LOGIT_COPIES * logits_bytes(num_classes, batch * s.crop * s.crop)
    return skip_reason(need, limit)


def _measure(runner: IsolatedRunner, s: Settings, method: str, num_classes: int, batch: int) -> dict:
    params = dict(settings=dataclasses.asdict(s), method=method, num_classes=num_classes, batch=batch)
    return runner.run("train_step", params)


def find_max_batch(fits: Callable[[int], bool], start: int = 2, limit: int = 256) -> tuple[int, bool]:
    """Largest batch b in [start, limit] with ``fits(b)``, assuming fitting is monotone in b.

    Doubles from ``start`` until a batch does not fit (or ``limit`` is reached), then bisects
    between the last batch that fit and the first that did not.

    Returns:
        ``(max_batch, capped)``: 0 when ``start`` does not fit; ``capped`` when ``limit`` fit.
    """
    if start > limit or not fits(start):
        return 0, False
    lo, hi = start, None
    while hi is None:
        nxt = min(lo * 2, limit)
        if nxt == lo:
            return lo, True
        if fits(nxt):
            lo = nxt
        else:
            hi = nxt
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, False


class _ProbeError(Exception):
    """A probe failed for a reason other than memory: the search of that configuration stops."""


def _probe_skip(s: Settings, args, method: str, num_classes: int, batch: int, budget: int, limit: int | None,
                earlier: list[dict]) -> str | None:
    why = _skip(s, method, num_classes, batch, args.baseline_max_classes, limit)
    need = BASELINE_LOGIT_COPIES * logits_bytes(num_classes, batch * s.crop * s.crop)
    if why is None and method == "baseline" and need > budget:
        why = f"skipped: the logits alone need >= {format_bytes(need)}, over the budget"
    measured = [p for p in earlier if p["status"] == "ok"]
    if why is None and measured and limit is not None:  # do not let one probe exhaust the machine
        ref = max(measured, key=lambda p: p["batch"])
        guess = ref["peak_bytes"] * batch / ref["batch"]
        if guess > limit:
            why = f"skipped: ~{format_bytes(guess)} extrapolated from batch {ref['batch']}, over --mem-limit"
    return why


def _search(runner, s: Settings, args, method: str, num_classes: int, budget: int, limit: int | None) -> list[dict]:
    """The probe rows of one (method, C) and its ``max_batch`` row."""
    probes: list[dict] = []

    def fits(batch: int) -> bool:
        row = _row(s, method, num_classes, batch, "probe")
        why = _probe_skip(s, args, method, num_classes, batch, budget, limit, probes)
        row.update(_measure(runner, s, method, num_classes, batch) if why is None else dict(status="skipped", note=why))
        row.update(fits=row["status"] == "ok" and row["peak_bytes"] <= budget, budget_bytes=budget)
        probes.append(row)
        verdict = "fits" if row["fits"] else row.get("note") or ("over budget" if row["status"] == "ok" else row["status"])
        print(f"  probe {method:8s} C={num_classes:<7d} batch={batch:<4d} {format_bytes(row.get('peak_bytes')):>10s}  "
              f"{verdict}", flush=True)
        if row["status"] in ("error", "timeout"):
            raise _ProbeError(row.get("note") or row["status"])
        return row["fits"]

    best, capped, status, note = 0, False, "ok", None
    if method == "baseline" and num_classes > args.baseline_max_classes:
        status, note = "skipped", f"skipped: C > --baseline-max-classes {args.baseline_max_classes}"
    else:
        try:
            best, capped = find_max_batch(fits, args.min_batch, args.max_batch_limit)
        except _ProbeError as err:
            best, status, note = None, "error", str(err)
    notes = [note,
             f"no batch >= {args.min_batch} fits" if best == 0 and status == "ok" else None,
             f"capped at --max-batch-limit {args.max_batch_limit}" if capped else None,
             "larger batches skipped by --mem-limit"
             if any("--mem-limit" in (p.get("note") or "") for p in probes) else None]
    at_best = next((p for p in probes if p["batch"] == best and p["fits"]), {})
    row = _row(s, method, num_classes, best, "max_batch")
    row.update(status=status, note="; ".join(filter(None, notes)) or None, max_batch=best, budget_bytes=budget,
               capped=capped, probes=len(probes), fits=bool(best),
               **{key: at_best.get(key) for key in ("peak_bytes", "step_bytes", "seconds", "peak_method", "threads")})
    return [*probes, row]


def _max_batch_rows(runner, s: Settings, args, budget: int, limit: int | None) -> list[dict]:
    return [row for num_classes in s.classes for method in METHODS
            for row in _search(runner, s, args, method, num_classes, budget, limit)]


def _peak_rows(runner, s: Settings, args, limit: int | None) -> list[dict]:
    rows = []
    for num_classes in s.classes:
        for method in METHODS:
            row = _row(s, method, num_classes, s.batch, "train_step")
            why = _skip(s, method, num_classes, s.batch, args.baseline_max_classes, limit)
            row.update(_measure(runner, s, method, num_classes, s.batch) if why is None else dict(status="skipped", note=why))
            print(f"  {method:8s} C={num_classes:<7d} {row['status']:8s} peak {format_bytes(row.get('peak_bytes'))}", flush=True)
            rows.append(row)
    return rows


def peak_ratios(classes: list[int]) -> list[Ratio]:
    """Side-by-side peak-memory ratios (vs the baseline at the smallest C, and at equal C) and goals."""
    ref = min(classes)
    base = dict(method="baseline", C=ref, measure="train_step")
    out = []
    for c in classes:
        out.append(Ratio(f"ess_C{c}_over_baseline_C{ref}", f"ESS peak at C={c} / baseline at C={ref}", "peak_bytes",
                         dict(method="ess", C=c, measure="train_step"), base))
        if c != ref:
            out.append(Ratio(f"baseline_C{c}_over_baseline_C{ref}", f"baseline peak at C={c} / at C={ref}", "peak_bytes",
                             dict(method="baseline", C=c, measure="train_step"), base))
        out.append(Ratio(f"ess_over_baseline_C{c}", f"ESS / baseline peak, both at C={c}", "peak_bytes",
                         dict(method="ess", C=c, measure="train_step"), dict(method="baseline", C=c, measure="train_step")))
    for c in classes:
        out.append(Ratio(f"ess_step_C{c}_over_baseline_step_C{ref}",
                         f"step increment: ESS at C={c} / baseline at C={ref}", "step_bytes",
                         dict(method="ess", C=c, measure="train_step"), base))
    base19 = dict(method="baseline", C=19, measure="train_step")
    out += [
        Ratio("goal_ess_peak_C1284_over_baseline_C19", "ESS peak memory at C=1284 / baseline at C=19", "peak_bytes",
              dict(method="ess", C=1284, measure="train_step"), base19, "<= 1.10"),
        Ratio("goal_ess_peak_C20000_over_baseline_C19", "ESS peak memory at C=20000 / baseline at C=19", "peak_bytes",
              dict(method="ess", C=20000, measure="train_step"), base19, "<= 1.15"),
    ]
    return out


def max_batch_ratios(classes: list[int]) -> list[Ratio]:
    """ESS / baseline max batch per C, and the goal at C=1284."""
    out = [Ratio(f"max_batch_ess_over_baseline_C{c}", f"max batch ESS / baseline at C={c}", "max_batch",
                 dict(method="ess", C=c, measure="max_batch"), dict(method="baseline", C=c, measure="max_batch"))
           for c in classes]
    out.append(Ratio("goal_max_batch_C1284", "max batch under one budget at C=1284, ESS / baseline", "max_batch",
                     dict(method="ess", C=1284, measure="max_batch"), dict(method="baseline", C=1284, measure="max_batch"),
                     ">= 6"))
    return out


def run(args: argparse.Namespace) -> int:
    """``esseg bench memory``: measure, print, write ``memory.*`` (or ``max_batch.*``)."""
    s = resolve_settings(args, FULL, QUICK)
    device = resolve_device(s.device)
    budget = parse_bytes(args.max_batch) if args.max_batch else None
    if args.min_batch < 1 or args.max_batch_limit < args.min_batch:
        raise EssegError(f"need 1 <= --min-batch <= --max-batch-limit; got {args.min_batch} and {args.max_batch_limit}")
    check_model_settings(s)
    limit = memory_limit(args.mem_limit, device)
    env = start(s, device)
    what = f"max batch under {format_bytes(budget)}" if budget else f"peak memory of one training step, batch {s.batch}"
    print(f"esseg bench memory: {what}, {s.arch}/{s.encoder}, crop {s.crop}, d={s.embedding_dim}, k={s.k}, "
          f"{s.device}; {describe_step(s, device)}; one fresh process per configuration ({args.isolation})", flush=True)
    with IsolatedRunner(args.isolation, preload=PRELOAD, timeout=args.timeout) as runner:
        rows = _max_batch_rows(runner, s, args, budget, limit) if budget else _peak_rows(runner, s, args, limit)
    extra = dict(baseline_max_classes=args.baseline_max_classes, mem_limit_bytes=limit, isolation=args.isolation)
    if budget:
        extra.update(budget_bytes=budget, min_batch=args.min_batch, max_batch_limit=args.max_batch_limit)
        table = [("method", "method", None), ("C", "C", None), ("measure", "measure", None), ("batch", "batch", None),
                 bytes_column("peak", "peak_bytes"), ("fits", "fits", None), ("status", "status", None), ("note", "note", None)]

        def draw(axes):
            ax = axes[0]
            report.plot_by_method(ax, rows, "max_batch", METHODS, measure="max_batch")
            for r in rows:
                if r["measure"] == "max_batch" and r.get("capped"):
                    ax.annotate("limit", (r["C"], r["max_batch"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            ax.set_ylabel("largest batch that fits")
            ax.set_title(f"max batch under {format_bytes(budget)} ({s.device}, {s.arch}/{s.encoder}, {s.crop}x{s.crop})")

        return report.finish("max_batch", s, rows, MAX_BATCH_COLUMNS, table, max_batch_ratios(s.classes), draw, env, extra)

    table = [("method", "method", None), ("C", "C", None), ("batch", "batch", None), bytes_column("peak", "peak_bytes"),
             bytes_column("step", "step_bytes"), bytes_column("state", "state_bytes"),
             bytes_column("process peak", "process_peak_bytes"), ("step time", "seconds", fmt_seconds),
             ("status", "status", None), ("note", "note", None)]

    def draw(axes):
        for ax, column, title in ((axes[0], "peak_bytes", "peak memory of one training step"),
                                  (axes[1], "step_bytes", "what the step adds (activations, grads, temporaries)")):
            report.plot_by_method(ax, rows, column, METHODS, scale=1 / 2**20, measure="train_step")
            ax.set_ylabel("MiB")
            ax.set_title(f"{title}\n{s.device}, {s.arch}/{s.encoder}, batch {s.batch}, {s.crop}x{s.crop}", fontsize=9)

    return report.finish("memory", s, rows, MEMORY_COLUMNS, table, peak_ratios(s.classes), draw, env, extra, ncols=2)
