"""``esseg bench loss``: time (forward + backward) and peak memory of the losses alone, per C.

Inputs, the same for every method at one C: ``x`` (N, d) unit pixel embeddings shaped like a
network's output (:func:`~esseg.bench.common.smooth_pixel_embeddings`, N = batch * crop^2),
``mu`` (C, d) unit class embeddings, both leaves with ``requires_grad``, and blocky labels.
Methods (each call computes the loss and ``backward()`` into ``x.grad`` and ``mu.grad``):

- ``knn_ce``: :func:`~esseg.knn_cross_entropy` with k negatives (exact torch search);
- ``ess_loss``: ``ESSLoss(k=k)``: knn_ce + the max-margin regulariser (what a training step runs);
- ``exact_ce``: :func:`~esseg.exact_cross_entropy` (chunked, all C classes);
- ``softmax_ce``: the (N, C) logits ``-||x - mu||^2 / tau`` materialised with one ``addmm``,
  then ``F.cross_entropy``: the baseline way of computing the same loss.

Every (method, C) runs in a fresh process. Time: median of ``--repeats`` calls after
``--warmup``, with the normal allocator. Then memory: ``peak_bytes`` = the highest memory
during one more call minus the memory just before it (inputs are resident and equal for all
methods, so this is what the loss itself needs: its buffers, autograd's saved tensors, the
gradients). CPU: resident set size (VmHWM, with glibc told to return freed buffers at once);
CUDA: ``max_memory_allocated - memory_allocated``.
"""

from __future__ import annotations

import argparse
import dataclasses

import torch
import torch.nn.functional as F

from esseg.bench import report
from esseg.bench.common import (
    FULL, IGNORE_INDEX, QUICK, MemoryMeter, Settings, add_common_arguments, blocky_labels, exact_malloc,
    format_bytes, logits_bytes, median, memory_limit, release_free_memory,
    resolve_settings, set_threads, skip_reason, smooth_pixel_embeddings, time_repeats, unit_vectors, start,
)
from esseg.bench.report import Ratio, bytes_column, fmt_seconds
from esseg.bench.worker import MODES, IsolatedRunner
from esseg.engine.distributed import resolve_device

HELP = "time and peak memory of kNN-CE, ESSLoss, exact chunked CE and F.cross_entropy on logits, per C"
DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "")

TAU = 0.05
METHODS = ("knn_ce", "ess_loss", "exact_ce", "softmax_ce")
# (N, C) buffers softmax_ce holds at once (logits, log-softmax, gradient): skip bound on CPU.
SOFTMAX_COPIES = 3
PRELOAD = ("torch", "esseg")
COLUMNS = report.CORE_COLUMNS + ["measure", "status", "num_pixels", "seconds_min", "seconds_max", "peak_method",
                                 "threads", "note"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``esseg bench loss``."""
    add_common_arguments(p, FULL, QUICK, model=False, k_help="negatives per pixel of knn_ce / ess_loss")
    p.add_argument("--mem-limit", metavar="BYTES|none",
                   help="skip softmax_ce where its logits need more (default on CPU: 80%% of the memory available "
                        "at the start; on CUDA none)")
    p.add_argument("--isolation", choices=MODES, default="fork", help="fresh process per configuration (default fork)")
    p.add_argument("--timeout", type=float, default=1800, metavar="S", help="seconds per configuration (default 1800)")


def _softmax_ce(x, labels, mu, tau=TAU):
    logits = torch.addmm(mu.pow(2).sum(1).unsqueeze(0), x, mu.t(), alpha=-2.0).add(x.pow(2).sum(1, keepdim=True))
    return F.cross_entropy(logits.div(-tau), labels, ignore_index=IGNORE_INDEX)


def _loss_fn(method: str, k: int):
    from esseg import ESSLoss, exact_cross_entropy, knn_cross_entropy

    if method == "knn_ce":
        return lambda x, y, mu: knn_cross_entropy(x, y, mu, k=k, tau=TAU, ignore_index=IGNORE_INDEX)
    if method == "ess_loss":
        return ESSLoss(k=k, tau=TAU, ignore_index=IGNORE_INDEX)
    if method == "exact_ce":
        return lambda x, y, mu: exact_cross_entropy(x, y, mu, tau=TAU, ignore_index=IGNORE_INDEX)
    if method == "softmax_ce":
        return _softmax_ce
    raise ValueError(f"unknown loss method {method!r}; known: {', '.join(METHODS)}")


def loss_task(params: dict) -> dict:
    """Time and peak memory of one loss at one C (runs in a fresh worker process; see module doc).

    Args:
        params: ``settings`` (a :class:`Settings` as dict), ``method``, ``num_classes``.
    """
    s = Settings(**params["settings"])
    method, num_classes = params["method"], params["num_classes"]
    device = torch.device(s.device)
    threads = set_threads(s.threads)
    gen = torch.Generator().manual_seed(s.seed)
    mu = unit_vectors(num_classes, s.embedding_dim, gen)
    labels = blocky_labels(s.batch, s.crop, num_classes, generator=gen)
    x = smooth_pixel_embeddings(mu, labels, generator=gen).permute(0, 2, 3, 1).reshape(-1, s.embedding_dim)
    x = x.contiguous().to(device).requires_grad_()
    mu = mu.to(device).requires_grad_()
    y = labels.reshape(-1).to(device)
    fn = _loss_fn(method, s.k)

    def call():
        x.grad = mu.grad = None
        fn(x, y, mu).backward()

    times = time_repeats(call, s.repeats, s.warmup, device)
    x.grad = mu.grad = None
    exact = exact_malloc() if device.type == "cpu" else False
    meter = MemoryMeter(device)
    call()  # once more with the measuring allocator settings
    x.grad = mu.grad = None
    release_free_memory()
    before = meter.current()
    meter.reset_peak()
    call()
    peak = meter.peak()
    how = meter.method + ("" if device.type == "cuda" else " + exact malloc" if exact else " (malloc may cache)")
    return dict(status="ok", seconds=median(times), seconds_min=min(times), seconds_max=max(times),
                peak_bytes=peak - before, peak_method=how, threads=threads)


def loss_ratios(classes: list[int]) -> list[Ratio]:
    """Each loss vs ``softmax_ce`` at equal C (memory and time), and the exact-CE memory goal."""
    out = []
    for c in classes:
        ref = dict(method="softmax_ce", C=c)
        for m in ("exact_ce", "knn_ce", "ess_loss"):
            out.append(Ratio(f"{m}_over_softmax_ce_peak_C{c}", f"{m} / softmax_ce peak memory at C={c}", "peak_bytes",
                             dict(method=m, C=c), ref))
            out.append(Ratio(f"{m}_over_softmax_ce_time_C{c}", f"{m} / softmax_ce time at C={c}", "seconds",
                             dict(method=m, C=c), ref))
    out.append(Ratio("goal_exact_ce_over_softmax_ce_peak_C1284",
                     "exact_cross_entropy / F.cross_entropy on logits at C=1284, peak memory", "peak_bytes",
                     dict(method="exact_ce", C=1284), dict(method="softmax_ce", C=1284), "<= 0.2"))
    return out


def run(args: argparse.Namespace) -> int:
    """``esseg bench loss``: measure, print, write ``loss.*``."""
    s = resolve_settings(args, FULL, QUICK)
    device = resolve_device(s.device)
    limit = memory_limit(args.mem_limit, device)
    env = start(s, device)
    print(f"esseg bench loss: N={s.num_pixels} pixels ({s.batch}x{s.crop}x{s.crop}), d={s.embedding_dim}, k={s.k}, "
          f"{s.device}; one fresh process per configuration ({args.isolation})", flush=True)
    rows = []
    with IsolatedRunner(args.isolation, preload=PRELOAD, timeout=args.timeout) as runner:
        for num_classes in s.classes:
            for method in METHODS:
                row = dict(method=method, C=num_classes, d=s.embedding_dim,
                           k=s.k if method in ("knn_ce", "ess_loss") else None, batch=s.batch, crop=s.crop,
                           device=s.device, measure="loss_forward_backward", num_pixels=s.num_pixels)
                why = None
                if method == "softmax_ce":
                    why = skip_reason(SOFTMAX_COPIES * logits_bytes(num_classes, s.num_pixels), limit)
                if why is None:
                    params = dict(settings=dataclasses.asdict(s), method=method, num_classes=num_classes)
                    row.update(runner.run("loss", params))
                else:
                    row.update(status="skipped", note=why)
                print(f"  {method:10s} C={num_classes:<7d} {row['status']:8s} "
                      f"{fmt_seconds(row['seconds']) if row.get('seconds') is not None else '-':>9s} "
                      f"{format_bytes(row.get('peak_bytes')):>10s}", flush=True)
                rows.append(row)
    table = [("method", "method", None), ("C", "C", None), ("time", "seconds", fmt_seconds),
             bytes_column("peak", "peak_bytes"), ("status", "status", None), ("note", "note", None)]

    def draw(axes):
        report.plot_by_method(axes[0], rows, "seconds", METHODS, logy=True)
        axes[0].set_ylabel("seconds (forward + backward)")
        report.plot_by_method(axes[1], rows, "peak_bytes", METHODS, scale=1 / 2**20, logy=True)
        axes[1].set_ylabel("peak memory above inputs (MiB)")
        for ax in axes:
            ax.set_title(f"losses, N={s.num_pixels}, d={s.embedding_dim}, {s.device}", fontsize=9)

    extra = dict(mem_limit_bytes=limit, isolation=args.isolation, tau=TAU)
    return report.finish("loss", s, rows, COLUMNS, table, loss_ratios(s.classes), draw, env, extra, ncols=2)
