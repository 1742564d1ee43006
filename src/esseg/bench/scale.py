"""``esseg bench scale``: ESS from 10^3 to 10^6 classes on one device, with the defaults a user gets.

Every configuration runs in a fresh process (:mod:`esseg.bench.worker`, as ``bench memory``).
The compass protocol: DeepLabV3+ MobileNetV2, random init, batch 4, 256x256, d = 12,
``ESSLoss()`` defaults (``backend="auto"``: exact kNN below
:data:`esseg.knn.AUTO_INDEX_MIN_CLASSES` classes, the refreshed inverted-file index above),
random labels over C (:func:`~esseg.bench.common.blocky_labels`). The baseline (C-logit
softmax) runs at ``--baseline-classes`` (19) in the same run as the reference. Per C:

- ``train_step``: step 0 (builds the training index and the regulariser's neighbour lists,
  measures recall: ``refresh_s`` is its time above a plain step, first-call overheads included,
  so an upper bound), ``--warmup`` more steps, then
  ``--repeats`` timed steps: ``step_s`` (median) and ``seconds`` = ``step_s + refresh_s / R``
  (the refresh amortised over its period R = ``index_refresh_every``, or the regulariser's 16
  steps when no index is used); ``peak_bytes``: peak memory of the step after the warm-up, above
  the runtime (as ``bench memory``); ``refresh_peak_bytes``: the same for step 0. On CPU these
  peaks are read with exact malloc accounting (every buffer above 128 KiB mapped and unmapped:
  :func:`~esseg.bench.common.exact_malloc`); the timed steps then run, after one more untimed
  step, with malloc reusing freed buffers as in a training run
  (:func:`~esseg.bench.common.timing_malloc`: mapping and faulting in every buffer at every
  step made a step up to 2x slower). ``index_build_s``: the
  k-means partition's build time. ``knn_recall``: recall@(k+1) of the searched negatives
  against exact search (256 block queries). ``loss_ratio``: the kNN cross-entropy with the
  default search / with exact search, same batch and weights.
- ``inference``: ``model.predict`` on one image (median over repeats; the cached index is
  built by the warm-up call, ``index_build_s``), and ``top1_agreement`` with exact search on
  4096 pixels (:func:`esseg.models.segmenter.search_agreement`).
- ``knn``: ``knn_search(q, table, k + 1)`` with the default backend (``method=default``, the
  index cached as in inference) vs FAISS ``IndexFlatL2`` (``method=faiss_flat``) on the same
  16,384 random unit queries (a 256x256 batch of 4 at the loss's block resolution); its
  ``knn_recall`` and ``top1_agreement`` (2048 queries) are against exact search. A random-init
  network gives nearly every pixel the same embedding, so the inference row's agreement is
  close to one sample; the knn row's is over independent queries.
- ``recall``: with ``--recall-steps N``, the largest C trains N steps and logs ``knn_recall``
  at every measurement (each refresh and the step before it), one row per measurement.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from esseg.bench import report
from esseg.bench.common import (
    FULL, QUICK, Settings, add_common_arguments, build_training, check_model_settings, clock, make_batch,
    median, release_free_memory, resolve_device, resolve_settings, set_threads, start, start_measurement, time_repeats,
    timed_step, timing_malloc, unit_vectors,
)
from esseg.bench.report import Ratio, bytes_column, fmt_seconds
from esseg.bench.worker import MODES, IsolatedRunner
from esseg.knn import EXACT_BACKENDS, faiss_available, knn_search, resolve_backend
from esseg.knn.index import recall_at_k
from esseg.losses import knn_cross_entropy
from esseg.models.segmenter import nearest_class, search_agreement

HELP = "ESS training step, memory, index recall, loss deviation and inference from 10^3 to 10^6 classes"
DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "")

SCALE_FULL = {**FULL, "classes": [1000, 10_000, 100_000, 1_000_000], "repeats": 3, "warmup": 1}
SCALE_QUICK = {**QUICK, "classes": [50, 400]}
KNN_QUERIES = 16_384
PRELOAD = ("torch", "esseg", "segmentation_models_pytorch")
COLUMNS = report.CORE_COLUMNS + [
    "measure", "status", "backend", "step_s", "refresh_s", "refresh_every", "refresh_peak_bytes", "index_build_s",
    "knn_recall", "loss_ratio", "top1_agreement", "iteration", "threads", "note",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``esseg bench scale``."""
    add_common_arguments(p, SCALE_FULL, SCALE_QUICK, k_help="ESS negatives per pixel (ESSLoss k)")
    p.add_argument("--backend", default="auto",
                   help="kNN backend of ESSLoss, inference and the knn rows (default auto: what a user gets)")
    p.add_argument("--baseline-classes", type=int, default=19, metavar="C",
                   help="C of the reference baseline run (default 19)")
    p.add_argument("--recall-steps", type=int, default=0, metavar="N",
                   help="also train N steps at the largest C and record knn_recall at every refresh (default 0: off)")
    p.add_argument("--knn-queries", type=int, default=KNN_QUERIES, metavar="N",
                   help=f"queries of the knn rows (default {KNN_QUERIES})")
    p.add_argument("--isolation", choices=MODES, default="fork",
                   help="fresh process per configuration: fork from a pre-imported server (default) or spawn")
    p.add_argument("--timeout", type=float, default=3600, metavar="S", help="seconds per configuration (default 3600)")


# --------------------------------------------------------------------- in the worker


def scale_task(params: dict) -> dict:
    """One C (runs in a fresh worker process; see the module doc) -> ``{"status", "rows": [...]}``."""
    s = Settings(**params["settings"])
    method, c = params["method"], params["num_classes"]
    m = start_measurement(s)
    device, meter, runtime, gen, threads = m.device, m.meter, m.runtime, m.generator, m.threads
    training = build_training(method, c, s, device)
    model, criterion, optimizer = training.model, training.criterion, training.optimizer
    images, labels = make_batch(c, s, device, gen)
    ess = method == "ess"
    backend = params.get("backend", "auto")
    if ess:
        criterion.search_options["backend"] = backend
    common = dict(threads=threads)
    meter.reset_peak()
    first = timed_step(training, images, labels)["seconds"]
    refresh_peak = meter.peak() - runtime
    terms = {k: float(v) for k, v in criterion.terms.items()}
    for _ in range(s.warmup):
        timed_step(training, images, labels)
    optimizer.zero_grad(set_to_none=True)
    release_free_memory()
    meter.reset_peak()
    timed_step(training, images, labels)
    peak = meter.peak() - runtime
    # Then time the steps with malloc reusing freed buffers, as in a training run (module doc).
    if m.exact and timing_malloc():
        timed_step(training, images, labels)
    steps = [timed_step(training, images, labels)["seconds"] for _ in range(s.repeats)]
    step_s = median(steps)
    row = dict(measure="train_step", status="ok", step_s=step_s, peak_bytes=peak, refresh_peak_bytes=refresh_peak,
               **common)
    if ess:
        backend = criterion.search_backend(c, device)
        every = criterion.index.refresh_every if backend == "ivf" else (1 if c <= 4096 else 16)
        refresh = max(0.0, first - step_s) if every > 1 else 0.0  # every = 1: refreshing is in every step
        row.update(backend=backend, refresh_s=refresh, refresh_every=every, seconds=step_s + refresh / every,
                   index_build_s=terms.get("index_build_s"), knn_recall=terms.get("knn_recall"))
        row["loss_ratio"] = _loss_ratio(model, criterion, images, labels)
    else:
        row.update(seconds=step_s)
    rows = [row]
    rows.append(_inference(model, images, s, device, ess, c, backend))
    if ess and params.get("recall_steps"):
        rows += _recall_run(training, images, labels, params["recall_steps"])
    return {"status": "ok", "rows": rows}


@torch.no_grad()
def _loss_ratio(model, criterion, images, labels) -> float:
    """kNN cross-entropy with the loss's own search / with exact search, same batch and weights."""
    x, mu = model(images), model.class_embeddings()
    opts = dict(k=criterion.k, tau=criterion.tau, ignore_index=criterion.ignore_index, query_stride=criterion.query_stride)
    uses_index = criterion.search_backend(mu.shape[0], mu.device) == "ivf"
    fast = knn_cross_entropy(x, labels, mu, **opts, **({"index": criterion.index} if uses_index else {}))
    exact = knn_cross_entropy(x, labels, mu, **opts, backend="torch")
    return float(fast / exact)


@torch.no_grad()
def _inference(model, images, s: Settings, device, ess: bool, c: int, backend: str) -> dict:
    """``model.predict`` on one image (for ESS: forward + :func:`nearest_class` with ``backend``,
    which is what ``predict`` runs when ``backend="auto"``)."""
    model.eval()
    one = images[:1]
    predict = (lambda: nearest_class(model(one), model.class_embeddings(), backend=backend)) if ess else (
        lambda: model.predict(one))
    t0 = clock(device)
    predict()  # builds (and caches) the index when the search uses one
    first = clock(device) - t0
    times = time_repeats(predict, s.repeats, max(0, s.warmup - 1), device)
    row = dict(measure="inference", status="ok", seconds=median(times), batch=1)
    if ess:
        name = resolve_backend(c, backend, device)
        agreement = search_agreement(model(one), model.class_embeddings(), backend=backend)
        row.update(backend=name, index_build_s=max(0.0, first - median(times)) if name not in EXACT_BACKENDS else None,
                   top1_agreement=1.0 if agreement is None else agreement)
    model.train()
    return row


def _recall_run(training, images, labels, steps: int) -> list[dict]:
    """Train ``steps`` more steps from a fresh loss state; a row per recall measurement."""
    criterion = training.criterion
    criterion._calls = 0  # restart the refresh schedule: measurements at 0, R-1, R, 2R-1, ...
    criterion.index.index = None
    rows, every = [], criterion.index.refresh_every
    for it in range(steps):
        times = timed_step(training, images, labels)
        if it % every in (0, every - 1) and "knn_recall" in criterion.terms:
            rows.append(dict(measure="recall", status="ok", iteration=it, seconds=times["seconds"],
                             knn_recall=float(criterion.terms["knn_recall"]),
                             index_build_s=float(criterion.terms["index_build_s"]), backend="ivf"))
    return rows


def knn_task(params: dict) -> dict:
    """Default ``knn_search`` (index cached) vs FAISS ``IndexFlatL2`` on the same queries -> rows."""
    s = Settings(**params["settings"])
    c, n = params["num_classes"], params["queries"]
    set_threads(s.threads)
    device = torch.device(s.device)
    gen = torch.Generator().manual_seed(s.seed)
    table, q = unit_vectors(c, s.embedding_dim, gen).to(device), unit_vectors(n, s.embedding_dim, gen).to(device)
    k = s.k + 1
    option = params.get("backend", "auto")
    backend = resolve_backend(c, option, device)
    t0 = clock(device)
    _, found = knn_search(q, table, k, backend=option)  # builds the cached index when the backend uses one
    first = clock(device) - t0
    times = time_repeats(lambda: knn_search(q, table, k, backend=option), s.repeats, 0, device)
    rows = [dict(method="default", measure="knn", status="ok", backend=backend, seconds=median(times),
                 index_build_s=max(0.0, first - median(times)) if backend not in EXACT_BACKENDS else None)]
    if not faiss_available():
        rows.append(dict(method="faiss_flat", measure="knn", status="unavailable", note="FAISS not installed"))
        return {"status": "ok", "rows": rows}
    times = time_repeats(lambda: knn_search(q, table, k, backend="faiss"), s.repeats, 0, device)
    _, exact = knn_search(q, table, k, backend="faiss")
    rows[0]["knn_recall"] = recall_at_k(found, exact)
    sample = q[: min(2048, n)]  # top-1 on random queries (a random-init network's pixels are nearly all alike)
    rows[0]["top1_agreement"] = search_agreement(sample, table, backend=option) if backend not in EXACT_BACKENDS else 1.0
    rows.append(dict(method="faiss_flat", measure="knn", status="ok", backend="faiss", seconds=median(times)))
    return {"status": "ok", "rows": rows}


# --------------------------------------------------------------------- in the parent


def scale_ratios(classes: list[int], reference: int) -> list[Ratio]:
    """Each goal of the issue, and ESS step / inference per C against the baseline at ``reference``."""
    base = dict(method="baseline", C=reference, measure="train_step")
    out = []
    for c in classes:
        ess = dict(method="ess", C=c, measure="train_step")
        out.append(Ratio(f"ess_step_C{c}_over_baseline_C{reference}", f"ESS step at C={c} / baseline at C={reference}",
                         "seconds", ess, base))
        out.append(Ratio(f"ess_peak_C{c}_over_baseline_C{reference}", f"ESS peak memory at C={c} / baseline at C={reference}",
                         "peak_bytes", ess, base))
    goals = [
        ("step", 100_000, "seconds", "train_step", "<= 1.3", "ESS step time at C=100000 / baseline step at C=19"),
        ("step", 1_000_000, "seconds", "train_step", "<= 2.0", "ESS step time at C=1000000 / baseline step at C=19"),
        ("peak", 1_000_000, "peak_bytes", "train_step", "<= 1.5", "ESS peak step memory at C=1000000 / baseline at C=19"),
        ("inference", 1_000_000, "seconds", "inference", "<= 2.0", "ESS inference per image at C=1000000 / at C=19"),
    ]
    for what, c, column, measure, goal, label in goals:
        den = base if measure == "train_step" else dict(method="ess", C=reference, measure="inference")
        out.append(Ratio(f"goal_ess_{what}_C{c}", label, column, dict(method="ess", C=c, measure=measure), den, goal))
    for c in classes:
        out.append(Ratio(f"default_over_faiss_flat_C{c}", f"default knn_search / FAISS IndexFlatL2 at C={c}", "seconds",
                         dict(method="default", C=c, measure="knn"), dict(method="faiss_flat", C=c, measure="knn"),
                         "<= 1.0" if c <= 20_000 else "<= 0.2" if c >= 1_000_000 else None))
    return out


def _value_goals(rows: list[dict], classes: list[int]) -> list[dict]:
    """Goals on single values (not ratios): recall, loss deviation, top-1 agreement at the largest C."""
    c = max(classes)
    out = []

    def pick(measure: str, key: str):
        return [r[key] for r in rows if r.get("method") == "ess" and r.get("C") == c and r.get("measure") == measure
                and r.get("status") == "ok" and r.get(key) is not None]

    recall = pick("recall", "knn_recall") or pick("train_step", "knn_recall")
    loss = pick("train_step", "loss_ratio")
    agree = pick("inference", "top1_agreement")
    for label, values, goal, ok in [
        (f"min negative recall@k vs exact at C={c} ({len(recall)} measurements)", recall, ">= 0.9",
         lambda v: v >= 0.9),
        (f"loss with the default search / exact search at C={c}, |1 - ratio|", [abs(1 - v) for v in loss], "<= 0.02",
         lambda v: v <= 0.02),
        (f"top-1 agreement with exact search at C={c}", agree, ">= 0.99", lambda v: v >= 0.99),
    ]:
        value = (min(values) if "agreement" in label or "recall" in label else max(values)) if values else None
        out.append(dict(label=label, value=value, goal=goal,
                        verdict="n/a" if value is None else "PASS" if ok(value) else "MISS", note=None))
    return out


def run(args: argparse.Namespace) -> int:
    """``esseg bench scale``: measure, print, write ``scale.*``."""
    s = resolve_settings(args, SCALE_FULL, SCALE_QUICK)
    device = resolve_device(s.device)
    check_model_settings(s)
    env = start(s, device)
    resolve_backend(2, args.backend)  # an unknown name: one line, before any work
    print(f"esseg bench scale: {s.arch}/{s.encoder}, batch {s.batch}, crop {s.crop}, d={s.embedding_dim}, k={s.k}, "
          f"{s.device}, {env['threads']} threads; C = {','.join(map(str, s.classes))} (baseline at "
          f"{args.baseline_classes}); each configuration in a fresh process", flush=True)
    settings = {f.name: getattr(s, f.name) for f in s.__dataclass_fields__.values()}
    rows = []
    reference = [("baseline", args.baseline_classes), ("ess", args.baseline_classes)]
    configs = reference + [("ess", c) for c in s.classes if c != args.baseline_classes]
    with IsolatedRunner(args.isolation, PRELOAD, timeout=args.timeout) as runner:
        for method, c in configs:
            params = dict(settings=settings, method=method, num_classes=c, backend=args.backend,
                          recall_steps=args.recall_steps if method == "ess" and c == max(s.classes) else 0)
            _collect(rows, runner.run("scale", params), method, c, s, env)
        for c in s.classes:
            params = dict(settings=settings, num_classes=c, queries=args.knn_queries, backend=args.backend)
            _collect(rows, runner.run("scale_knn", params), None, c, s, env)
    table = [("method", "method", None), ("C", "C", None), ("measure", "measure", None), ("backend", "backend", None),
             ("seconds", "seconds", fmt_seconds), ("step", "step_s", fmt_seconds), ("refresh", "refresh_s", fmt_seconds),
             bytes_column("peak", "peak_bytes"), ("build", "index_build_s", fmt_seconds),
             ("recall", "knn_recall", _fmt3), ("loss ratio", "loss_ratio", _fmt4),
             ("top-1", "top1_agreement", _fmt3), ("iter", "iteration", None), ("status", "status", None),
             ("note", "note", None)]

    def draw(axes):
        for ax, (y, label, scale) in zip(axes, [("seconds", "seconds per training step (amortised)", 1.0),
                                                ("peak_bytes", "peak step memory (MiB)", 2.0**-20),
                                                ("seconds", "ms per image, inference", 1e3)]):
            measure = "inference" if "inference" in label else "train_step"
            report.plot_by_method(ax, rows, y, ["ess"], scale=scale, logy=True, measure=measure)
            ref = [r[y] for r in rows if r.get("method") == "baseline" and r.get("measure") == measure
                   and r.get("status") == "ok" and r.get(y) is not None]
            if ref:
                ax.axhline(ref[0] * scale, color="gray", linestyle="--", label=f"baseline, C={args.baseline_classes}")
                ax.legend()
            ax.set_ylabel(label)
            ax.set_title(f"{s.device}, {s.arch}/{s.encoder}, batch {s.batch}, {s.crop}x{s.crop}", fontsize=9)
        report.plot_by_method(axes[3], rows, "seconds", ["default", "faiss_flat"], logy=True, measure="knn")
        axes[3].set_ylabel(f"seconds, kNN search of {args.knn_queries} queries")

    extra = dict(backend=args.backend, baseline_classes=args.baseline_classes, recall_steps=args.recall_steps, knn_queries=args.knn_queries)
    code = report.finish("scale", s, rows, COLUMNS, table, scale_ratios(s.classes, args.baseline_classes), draw, env,
                         extra, ncols=4)
    values = _value_goals(rows, s.classes)
    print("\nvalue goals")
    print(report.format_table(values, report.GOAL_COLUMNS))
    _append_value_goals(s, values)
    return code


def _append_value_goals(s: Settings, values: list[dict]) -> None:
    path = Path(s.out) / "scale.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["value_goals"] = values
    report.write_json(path, data)


def _collect(rows: list[dict], result: dict, method: str | None, c: int, s: Settings, env: dict) -> None:
    base = dict(C=c, d=s.embedding_dim, k=s.k, batch=s.batch, crop=s.crop, device=s.device, threads=env["threads"])
    if method is not None:
        base["method"] = method
        if method == "baseline":
            base.update(d=None, k=None)
    found = result.get("rows") if result.get("status") == "ok" else None
    if found is None:
        found = [dict(measure="train_step", status=result.get("status"), note=result.get("note"))]
    for r in found:
        row = {**base, **r}
        rows.append(row)
        shown = ", ".join(f"{k}={_short(row.get(k))}" for k in ("seconds", "peak_bytes", "knn_recall", "loss_ratio",
                                                                  "top1_agreement", "index_build_s") if row.get(k) is not None)
        print(f"  {row.get('method', '?'):10s} C={c:<8d} {row.get('measure', ''):10s} {row.get('status')}  {shown}"
              + (f"  ({row['note']})" if row.get("note") else ""), flush=True)


def _short(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt3(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def _fmt4(v: float) -> str:
    return f"{v:.4f}"
