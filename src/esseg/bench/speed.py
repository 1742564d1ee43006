"""``esseg bench speed``: training-step time and inference time per image, baseline vs ESS, per C.

For each C and method (in this process, one configuration at a time, interleaved per C):
build the model, loss, optimiser and scaler as ``esseg train`` does
(:func:`~esseg.bench.common.build_training`) and one batch of random images with blocky
labels; run ``--warmup`` untimed steps, then ``--repeats`` timed steps of the engine's
``train_step`` (zero_grad, forward under autocast on CUDA, loss, backward, optimizer step;
``train.accum_steps`` micro-batches; device-synchronised around each phase). ``seconds`` is the
median step time (``seconds_mean`` the mean: the amortised cost when occasional steps are
dearer, e.g. ESSLoss refreshing its max-margin neighbours every 16 steps above 4096 classes);
``forward_s``, ``loss_s``, ``backward_s``, ``optimizer_s`` are the medians of each phase
(:func:`~esseg.bench.common.timed_step`). Then ``model.eval()`` and ``model.predict(images)``
under ``no_grad`` (forward + argmax for the baseline, forward + nearest class embedding for
ESS): median over repeats, divided by the batch size.
"""

from __future__ import annotations

import argparse
import gc

import torch

from esseg.bench import report
from esseg.bench.common import (
    FULL, METHODS, PHASES, QUICK, Settings, add_common_arguments, build_training, check_model_settings, describe_step,
    is_out_of_memory, logits_bytes, make_batch, median, memory_limit, resolve_settings, skip_reason, start,
    time_repeats, timed_step,
)
from esseg.bench.report import Ratio, fmt_seconds
from esseg.engine.distributed import resolve_device

HELP = "median training-step time and inference time per image, baseline vs ESS, per number of classes"
DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "")

BASELINE_LOGIT_COPIES = 4
COLUMNS = report.CORE_COLUMNS + ["measure", "status", "seconds_mean", "seconds_min", "seconds_max", "repeats",
                                 *(f"{p}_s" for p in PHASES), "threads", "note"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``esseg bench speed``."""
    add_common_arguments(p, FULL, QUICK, k_help="ESS negatives per pixel (ESSLoss k)")
    p.add_argument("--baseline-max-classes", type=int, default=20000, metavar="C",
                   help="run the baseline only up to this C (default 20000; ESS runs every --classes)")
    p.add_argument("--mem-limit", metavar="BYTES|none",
                   help="skip configurations whose logits alone need more (default on CPU: 80%% of the memory "
                        "available at the start; on CUDA none, out-of-memory is caught)")


def _measure(s: Settings, method: str, num_classes: int, device: torch.device) -> list[dict]:
    torch.manual_seed(s.seed)
    gen = torch.Generator().manual_seed(s.seed)
    training = build_training(method, num_classes, s, device)
    model, images, labels = training.model, *make_batch(num_classes, s, device, gen)
    for _ in range(s.warmup):
        training.step(images, labels)
    steps = [timed_step(training, images, labels) for _ in range(s.repeats)]
    times = [t["seconds"] for t in steps]
    step = dict(measure="train_step", status="ok", seconds=median(times), seconds_mean=sum(times) / len(times),
                seconds_min=min(times), seconds_max=max(times), repeats=s.repeats,
                **{f"{p}_s": median([t[p] for t in steps]) for p in PHASES})
    training.optimizer.zero_grad(set_to_none=True)
    model.eval()
    per_image = [t / s.batch for t in time_repeats(lambda: model.predict(images), s.repeats, max(1, s.warmup), device)]
    infer = dict(measure="inference", status="ok", seconds=median(per_image), seconds_mean=sum(per_image) / len(per_image),
                 seconds_min=min(per_image), seconds_max=max(per_image), repeats=s.repeats, batch=s.batch)
    return [step, infer]


def speed_ratios(classes: list[int]) -> list[Ratio]:
    """Step-time ratios vs the baseline at the smallest C and at equal C, inference ratios, goals."""
    ref = min(classes)
    base = dict(method="baseline", C=ref, measure="train_step")
    out = []
    for c in classes:
        ess, bl = dict(method="ess", C=c, measure="train_step"), dict(method="baseline", C=c, measure="train_step")
        out.append(Ratio(f"ess_step_C{c}_over_baseline_C{ref}", f"ESS step at C={c} / baseline at C={ref}", "seconds", ess, base))
        if c != ref:
            out.append(Ratio(f"baseline_step_C{c}_over_C{ref}", f"baseline step at C={c} / at C={ref}", "seconds", bl, base))
        out.append(Ratio(f"ess_over_baseline_step_C{c}", f"ESS / baseline step, both at C={c}", "seconds", ess, bl))
        out.append(Ratio(f"ess_over_baseline_inference_C{c}", f"ESS / baseline inference per image at C={c}", "seconds",
                         dict(method="ess", C=c, measure="inference"), dict(method="baseline", C=c, measure="inference")))
    b19 = dict(method="baseline", C=19, measure="train_step")
    out += [
        Ratio("goal_ess_step_C1284_over_baseline_C19", "ESS step time at C=1284 / baseline at C=19", "seconds",
              dict(method="ess", C=1284, measure="train_step"), b19, "<= 1.15"),
        Ratio("goal_ess_step_C20000_over_baseline_C19", "ESS step time at C=20000 / baseline at C=19", "seconds",
              dict(method="ess", C=20000, measure="train_step"), b19, "<= 1.5"),
        Ratio("goal_ess_over_baseline_step_C1284", "ESS step time / baseline step time, both at C=1284", "seconds",
              dict(method="ess", C=1284, measure="train_step"), dict(method="baseline", C=1284, measure="train_step"),
              "<= 0.25"),
        Ratio("goal_ess_over_baseline_inference_C1284", "ESS / baseline inference time at C=1284", "seconds",
              dict(method="ess", C=1284, measure="inference"), dict(method="baseline", C=1284, measure="inference"),
              "<= 0.7"),
    ]
    return out


def run(args: argparse.Namespace) -> int:
    """``esseg bench speed``: measure, print, write ``speed.*``."""
    s = resolve_settings(args, FULL, QUICK)
    device = resolve_device(s.device)
    check_model_settings(s)
    limit = memory_limit(args.mem_limit, device)
    env = start(s, device)
    print(f"esseg bench speed: {s.arch}/{s.encoder}, batch {s.batch}, crop {s.crop}, d={s.embedding_dim}, k={s.k}, "
          f"{s.device}, {env['threads']} threads; {s.warmup} warm-up + {s.repeats} timed repeats of "
          f"{describe_step(s, device)}", flush=True)
    rows = []
    for num_classes in s.classes:
        for method in METHODS:
            ess = method == "ess"
            base = dict(method=method, C=num_classes, d=s.embedding_dim if ess else None, k=s.k if ess else None,
                        batch=s.batch, crop=s.crop, device=s.device, threads=env["threads"])
            why = None
            if not ess and num_classes > args.baseline_max_classes:
                why = f"skipped: C > --baseline-max-classes {args.baseline_max_classes}"
            elif not ess:
                why = skip_reason(BASELINE_LOGIT_COPIES * logits_bytes(num_classes, s.num_pixels), limit)
            if why is not None:
                results = [dict(measure=m, status="skipped", note=why) for m in ("train_step", "inference")]
            else:
                try:
                    results = _measure(s, method, num_classes, device)
                except (RuntimeError, MemoryError) as err:
                    if not (isinstance(err, MemoryError) or is_out_of_memory(err)):
                        raise
                    note = f"out of memory: {str(err).splitlines()[0][:200]}"
                    results = [dict(measure=m, status="oom", note=note) for m in ("train_step", "inference")]
                finally:
                    gc.collect()
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
            for r in results:
                rows.append({**base, **r})
                print(f"  {method:8s} C={num_classes:<7d} {r['measure']:10s} {r['status']:8s} "
                      f"{fmt_seconds(r['seconds']) if r.get('seconds') is not None else '-'}", flush=True)
    table = [("method", "method", None), ("C", "C", None), ("measure", "measure", None), ("median", "seconds", fmt_seconds),
             ("mean", "seconds_mean", fmt_seconds), ("min", "seconds_min", fmt_seconds), ("max", "seconds_max", fmt_seconds),
             *((p, f"{p}_s", fmt_seconds) for p in PHASES), ("status", "status", None), ("note", "note", None)]

    def draw(axes):
        report.plot_by_method(axes[0], rows, "seconds", METHODS, measure="train_step")
        axes[0].set_ylabel("seconds per training step (median)")
        report.plot_by_method(axes[1], rows, "seconds", METHODS, scale=1e3, measure="inference")
        axes[1].set_ylabel("ms per image, inference (median)")
        for ax in axes:
            ax.set_title(f"{s.device}, {s.arch}/{s.encoder}, batch {s.batch}, {s.crop}x{s.crop}", fontsize=9)

    extra = dict(baseline_max_classes=args.baseline_max_classes, mem_limit_bytes=limit)
    return report.finish("speed", s, rows, COLUMNS, table, speed_ratios(s.classes), draw, env, extra, ncols=2)
