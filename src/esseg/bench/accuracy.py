"""``esseg bench accuracy``: mIoU of ESS vs the softmax baseline on glyph scenes, per C, trained alike.

Every run trains with :func:`esseg.engine.train.train` for the same number of steps on the
built-in ``glyph_scenes`` with Zipf class frequencies, and evaluates every ``--eval-every`` steps
on the same validation scenes. The recipe (network, loss, optimiser) of a run at C comes from
``configs/glyph_c<R>_<method>.yaml`` with R the recipe's C nearest to C (``loss.k`` capped at
C - 1), then ``--set``, then the harness's keys (data, schedule, folder). The runs:

- ``ess_C<C>`` and ``baseline_C<C>`` for every ``--classes`` C, both at batch ``--batch``;
- ``baseline_C<C>_eqmem`` at the largest C: the baseline at an equal memory budget, i.e. the
  largest batch whose training step fits in the peak memory of ESS's step at ``--batch``
  (measured like ``esseg bench memory``, in fresh processes; or ``--baseline-batch``);
- ``ess_C<A>_random``, ``ess_C<A>_nonorm``, ``ess_C<A>_nomargin`` at each ``--ablation-classes``
  A: random negatives, no L2 normalisation, no max-margin term, each against ``ess_C<A>``;
- ``ess_C<A>_<name>`` for every ``--variant NAME KEY=VALUE ...``: ESS with those config keys
  changed, against ``ess_C<A>`` (one factor at a time, e.g. ``--variant exact loss.mode=exact``).

Each run trains in ``<out>/<name>/`` and resumes there (``last.pt``) after an interruption; a
finished run is not trained again. ``seconds`` is the wall time of a run (its sessions: training,
periodic evaluations, checkpoints), ``train_seconds`` the engine's time in training steps only
(``train_seconds`` of its ``metrics.jsonl`` records, summed across resumes by the engine): the x
axis of the learning curves.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import gc
import json
import math
import re
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from esseg import create_model
from esseg.bench import report
from esseg.bench.common import Settings, format_bytes, logits_bytes, parse_int_list, refuse_owned_keys, start
from esseg.bench.memory import BASELINE_LOGIT_COPIES, PRELOAD, find_max_batch
from esseg.bench.report import fmt_seconds
from esseg.bench.worker import MODES, IsolatedRunner
from esseg.engine import train as engine
from esseg.engine.checkpoint import load_checkpoint
from esseg.engine.config import Config, apply_overrides, config_from_dict, load_config, set_value
from esseg.engine.data import build_split
from esseg.engine.distributed import resolve_device
from esseg.engine.run import RunFolder
from esseg.errors import EssegError

HELP = "mIoU / PAcc / fIoU and learning curves of ESS vs the baseline on glyph scenes, per number of classes"
DESCRIPTION = __doc__.split("\n\n", 1)[0].replace("``", "")

FULL = dict(classes=[20, 200, 2000], iters=300, batch=16, size=64, eval_every=50, val_images=200, ablation_classes=[200])
QUICK = dict(classes=[8, 16], iters=4, batch=4, size=32, eval_every=2, val_images=8, ablation_classes=[16])
MIN_BATCH = 2  # BatchNorm (ASPP image pooling) cannot train on one image
EVAL_BATCH = 20
METRICS = ("PAcc", "mAcc", "mIoU", "fIoU", "thing_mIoU", "stuff_mIoU")
CURVE_METRICS = ("PAcc", "mAcc", "mIoU", "fIoU", "thing_mIoU", "thing_Acc", "stuff_mIoU")
# name suffix -> (label, the config change) of the leave-one-out ablations (paper Table 2)
ABLATIONS = {
    # each also clears what the recipes set that only the full method allows (tail draws need kNN
    # negatives; the pixel-length cap needs free pixel lengths)
    "random": ("random negatives", {"loss.mode": "random", "loss.tail_samples": 0}),
    "nonorm": ("no normalisation", {"model.normalize": False, "model.unit_pixels": True, "model.max_pixel_length": None}),
    "nomargin": ("no max-margin", {"loss.reg_weight": 0.0}),
}
# --set keys the harness sets per run; the flag to use instead, if any
OWNED_KEYS = {
    "model.method": None, "train.out_dir": None, "train.resume": None, "train.stop_at": None,
    "train.iters": "--iters", "train.batch_size": "--batch", "train.eval_every": "--eval-every",
    "train.num_threads": "--threads", "train.device": "--device", "train.seed": "--seed",
    "data.options": "--size, --zipf, --difficulty", "data.val_options": "--val-images",
}
COLUMNS = report.CORE_COLUMNS + [
    "name", "variant", "status", "iters", "train_seconds", "s_per_iter", *METRICS, "num_valid_classes",
    "loss_mode", "tau", "normalize", "reg_weight", "batch_rule", "threads", "sessions", "reused", "run_dir", "recipe", "note",
]
CURVE_COLUMNS = ["name", "method", "variant", "C", "batch", "iter", "train_seconds", *CURVE_METRICS]
CLASS_COLUMNS = ["name", "method", "variant", "C", "class_id", "class_name", "frequency", "IoU", "gt_pixels"]


@dataclasses.dataclass
class AccuracySettings:
    """The resolved flags of one ``esseg bench accuracy`` invocation."""

    classes: list[int]
    iters: int
    batch: int
    size: int
    eval_every: int
    val_images: int
    ablations: bool
    ablation_classes: list[int]
    equal_memory: bool
    baseline_batch: int | None
    threads: int | None
    device: str
    zipf: float
    difficulty: float
    seed: int
    out: str
    quick: bool
    overrides: list[str]
    isolation: str
    variants: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # name -> KEY=VALUE overrides
    recipes: str | None = None


@dataclasses.dataclass
class RunSpec:
    """One training run: its name, method, C, batch and the config keys that make it differ."""

    name: str
    method: str
    num_classes: int
    batch: int
    variant: str  # full | random | nonorm | nomargin | a --variant name (ESS); equal_batch | equal_memory (baseline)
    updates: dict = dataclasses.field(default_factory=dict)
    overrides: list[str] = dataclasses.field(default_factory=list)  # --variant KEY=VALUE
    same_as: str | None = None  # an equal-memory baseline whose batch equals --batch reuses that run
    batch_rule: str = "--batch"
    cfg: Config | None = None
    recipe: str | None = None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``esseg bench accuracy``."""

    def dflt(name: str) -> str:
        show = lambda v: ",".join(map(str, v)) if isinstance(v, list) else v  # noqa: E731
        return f"default {show(FULL[name])}; --quick: {show(QUICK[name])}"

    p.add_argument("--classes", metavar="C,C,...", help=f"numbers of classes ({dflt('classes')})")
    p.add_argument("--iters", type=int, metavar="N", help=f"training steps of every run ({dflt('iters')})")
    p.add_argument("--batch", type=int, metavar="B", help=f"images per step, both methods ({dflt('batch')})")
    p.add_argument("--size", type=int, metavar="S", help=f"glyph scenes are S x S pixels ({dflt('size')})")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help=f"steps between evaluations, the learning-curve points; 0: only at the end ({dflt('eval_every')})")
    p.add_argument("--val-images", type=int, metavar="N", help=f"validation scenes ({dflt('val_images')})")
    p.add_argument("--ablations", action=argparse.BooleanOptionalAction, default=True,
                   help="run the ESS ablations: random negatives, no normalisation, no max-margin (default on)")
    p.add_argument("--ablation-classes", metavar="C,...", help=f"C of the ablations ({dflt('ablation_classes')})")
    p.add_argument("--equal-memory", action=argparse.BooleanOptionalAction, default=True,
                   help="at the largest C also train the baseline with the batch that fits in ESS's memory (default on)")
    p.add_argument("--baseline-batch", type=int, metavar="B",
                   help="the equal-memory baseline batch (default: measured, peak memory of one step)")
    p.add_argument("--threads", type=int, default=1, metavar="T",
                   help="torch CPU threads of every run (default 1: steadiest when the CPU is shared)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to train (default cpu)")
    p.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of the thing-class frequencies (default 1.0)")
    p.add_argument("--difficulty", type=float, default=0.0,
                   help="glyph_scenes difficulty in [0, 1]: classes told apart by shape alone (default 0)")
    p.add_argument("--seed", type=int, default=0, help="data and training seed, the same for every run (default 0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every run, e.g. optim.lr=0.02 or model.embedding_dim=16 (repeatable)")
    p.add_argument("--variant", dest="variants", action="append", nargs="+", default=[], metavar=("NAME", "KEY=VALUE"),
                   help="an extra ESS run ess_C<A>_NAME at each --ablation-classes A with these config keys changed, "
                        "compared with ess_C<A> (repeatable), e.g. --variant exact loss.mode=exact")
    p.add_argument("--recipes", metavar="DIR",
                   help="folder of the glyph_c<C>_<method>.yaml recipes (default: configs/ here, else in the checkout)")
    p.add_argument("--isolation", choices=MODES, default="fork",
                   help="how the equal-memory measurement starts its fresh processes (default fork)")
    p.add_argument("--out", default="runs/bench/accuracy", metavar="DIR",
                   help="one subfolder per run and the reports (default runs/bench/accuracy)")
    p.add_argument("--quick", action="store_true", help="tiny settings that only check the harness works (tests)")


# ------------------------------------------------------------------------------ planning


def resolve(args: argparse.Namespace) -> AccuracySettings:
    """Flags, else the --quick or full defaults; raises :class:`EssegError` on a bad value."""
    defaults = QUICK if args.quick else FULL

    def pick(name: str):
        value = getattr(args, name)
        return defaults[name] if value is None else value

    unique = lambda values: list(dict.fromkeys(values))  # noqa: E731
    s = AccuracySettings(
        classes=unique(parse_int_list(args.classes, "--classes") if args.classes else defaults["classes"]),
        iters=pick("iters"), batch=pick("batch"), size=pick("size"), eval_every=pick("eval_every"),
        val_images=pick("val_images"), ablations=args.ablations,
        ablation_classes=unique(parse_int_list(args.ablation_classes, "--ablation-classes") if args.ablation_classes
                                else defaults["ablation_classes"]),
        equal_memory=args.equal_memory, baseline_batch=args.baseline_batch, threads=args.threads, device=args.device,
        zipf=args.zipf, difficulty=args.difficulty, seed=args.seed, out=args.out, quick=args.quick,
        overrides=list(args.overrides), isolation=args.isolation, recipes=args.recipes,
        variants={v[0]: v[1:] for v in args.variants},
    )
    for flag, value, low in (("--iters", s.iters, 1), ("--batch", s.batch, MIN_BATCH), ("--size", s.size, 16),
                             ("--eval-every", s.eval_every, 0), ("--val-images", s.val_images, 1)):
        if value < low:
            why = " (BatchNorm cannot train on one image)" if flag == "--batch" else ""
            raise EssegError(f"{flag} must be >= {low}{why}; got {value}")
    if min(s.classes + s.ablation_classes) < 3:
        raise EssegError("--classes and --ablation-classes must all be >= 3 (glyph scenes need stuff and things)")
    if s.baseline_batch is not None:
        if not s.equal_memory:
            raise EssegError("--baseline-batch sets the equal-memory run; drop it or drop --no-equal-memory")
        if s.baseline_batch < MIN_BATCH:
            raise EssegError(f"--baseline-batch must be >= {MIN_BATCH} (BatchNorm cannot train on one image); "
                             f"got {s.baseline_batch}")
    if s.threads is not None and s.threads < 1:
        raise EssegError(f"--threads must be >= 1; got {s.threads}")
    if len(s.variants) != len(args.variants):
        raise EssegError("--variant names must be unique")
    for name, items in s.variants.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name) or name in ABLATIONS or "=" in name:
            raise EssegError(f"--variant takes a NAME (letters, digits, _ or -; not {', '.join(ABLATIONS)}) and then "
                             f"KEY=VALUE pairs, e.g. --variant exact loss.mode=exact; got {name!r}")
        if not items:
            raise EssegError(f"--variant {name} changes nothing; add KEY=VALUE pairs, e.g. loss.mode=exact")
    items = [("--set", i) for i in s.overrides] + [("--variant", i) for v in s.variants.values() for i in v]
    refuse_owned_keys(items, OWNED_KEYS, "run by the harness")
    resolve_device(s.device)
    return s


RECIPE_FILES = re.compile(r"glyph_c(\d+)_(ess|baseline)\.yaml")


def recipe_dir(recipes: str | None) -> Path:
    """``--recipes``, else ``configs/`` in the working directory, else in the source checkout."""
    if recipes is not None:
        return Path(recipes)
    here = Path("configs")
    return here if here.is_dir() else Path(__file__).resolve().parents[3] / "configs"


def recipe_path(method: str, num_classes: int, folder: Path) -> Path:
    """``glyph_c<R>_<method>.yaml`` in ``folder`` with R nearest to C on a log scale (ties: the smaller R)."""
    found = {int(m[1]): f for f in sorted(folder.glob("glyph_c*_*.yaml"))
             if (m := RECIPE_FILES.fullmatch(f.name)) and m[2] == method}
    if not found:
        raise EssegError(f"no glyph_c<C>_{method}.yaml recipe in {folder}; run from the repository root or pass --recipes DIR")
    return found[min(found, key=lambda r: (abs(math.log(r / num_classes)), r))]


def base_config(s: AccuracySettings, num_classes: int) -> dict:
    """The keys the harness sets in every run at C, over the recipe and ``--set``."""
    return {
        "data.dataset": "glyph_scenes", "data.crop_size": None, "data.num_workers": 0,
        "data.options": {"num_classes": num_classes, "size": s.size, "zipf": s.zipf, "difficulty": s.difficulty,
                         "seed": s.seed},
        "data.val_options": {"length": s.val_images},
        "train.iters": s.iters, "train.batch_size": s.batch, "train.device": s.device, "train.num_threads": s.threads,
        "train.seed": s.seed, "train.resume": "auto", "train.stop_at": None, "train.eval_every": s.eval_every,
        "train.save_every": 0, "train.eval_batch_size": EVAL_BATCH, "train.num_vis": 0, "train.tensorboard": False,
        "train.log_every": math.gcd(s.eval_every, s.iters),
    }


def plan_runs(s: AccuracySettings) -> list[RunSpec]:
    """Every run of the experiment, in the order they are trained (configs not built yet)."""
    runs = []
    for c in s.classes:
        runs += [RunSpec(f"ess_C{c}", "ess", c, s.batch, "full"),
                 RunSpec(f"baseline_C{c}", "baseline", c, s.batch, "equal_batch")]
    if s.equal_memory:
        c = max(s.classes)
        runs.append(RunSpec(f"baseline_C{c}_eqmem", "baseline", c, s.batch, "equal_memory"))
    if s.ablations or s.variants:
        for c in s.ablation_classes:
            if c not in s.classes:
                runs.append(RunSpec(f"ess_C{c}", "ess", c, s.batch, "full"))
            for suffix, (_, updates) in ABLATIONS.items() if s.ablations else ():
                runs.append(RunSpec(f"ess_C{c}_{suffix}", "ess", c, s.batch, suffix, updates))
            for name, items in s.variants.items():
                runs.append(RunSpec(f"ess_C{c}_{name}", "ess", c, s.batch, name, overrides=items))
    return runs


def build_config(s: AccuracySettings, spec: RunSpec) -> Config:
    """The run's config: its recipe file (``loss.k`` capped at C - 1), ``--set`` and ``--variant``
    overrides, the harness's keys, then the run's method, batch, variant and folder. Sets ``spec.recipe``."""
    path = recipe_path(spec.method, spec.num_classes, recipe_dir(s.recipes))
    spec.recipe = str(path)
    d = load_config(path).to_dict()
    d["loss"]["k"] = min(d["loss"]["k"], spec.num_classes - 1)
    apply_overrides(d, [*s.overrides, *spec.overrides])
    for key, value in base_config(s, spec.num_classes).items():
        set_value(d, key, value)
    updates = {"model.method": spec.method, "train.batch_size": spec.batch, "train.out_dir": str(Path(s.out) / spec.name)}
    apply_overrides(d, updates=updates)
    for key, value in spec.updates.items():  # an ablation's changes, None included (it clears a key)
        set_value(d, key, value)
    return config_from_dict(d)


def check_config(cfg: Config):
    """Build the run's dataset and loss once, so a bad option fails before any training; returns the train split."""
    dataset = build_split(cfg, cfg.data.train_split, train=True)
    if cfg.model.method == "ess":
        engine.build_criterion(cfg, dataset.num_classes, dataset.ignore_index)
    return dataset


# ----------------------------------------------------------------- equal memory budget


def choose_baseline_batch(measure: Callable[[str, int], dict], batch: int, min_batch: int = MIN_BATCH,
                          lower_bound: Callable[[int], int] | None = None) -> dict:
    """The largest baseline batch in [min_batch, batch] whose training step fits in ESS's peak at ``batch``.

    Args:
        measure: ``(method, batch) -> {"status", "peak_bytes", ...}``, one training step's peak memory.
        lower_bound: bytes the baseline needs at least at a batch; a probe above the budget is not run.

    Returns:
        ``{"baseline_batch", "budget_bytes", "ess", "probes", "rule", "note"}``. ``baseline_batch``
        is ``batch`` when the baseline fits the same batch, and ``min_batch`` (with a note) when not
        even that fits.
    """
    ess = measure("ess", batch)
    if ess.get("status") != "ok":
        raise EssegError(f"could not measure ESS's peak memory at batch {batch}: {ess.get('note') or ess.get('status')}; "
                         "pass --baseline-batch B")
    budget = ess["peak_bytes"]
    probes: list[dict] = []

    def fits(b: int) -> bool:
        need = lower_bound(b) if lower_bound else 0
        if need > budget:
            probe = dict(batch=b, status="skipped", note=f"logits alone need >= {format_bytes(need)}")
        else:
            probe = dict(batch=b, **measure("baseline", b))
        probe["fits"] = probe["status"] == "ok" and probe["peak_bytes"] <= budget
        probes.append(probe)
        print(f"  memory probe baseline batch={b:<4d} {format_bytes(probe.get('peak_bytes')):>10s}  "
              f"{'fits' if probe['fits'] else probe.get('note') or 'over budget'}", flush=True)
        if probe["status"] not in ("ok", "skipped"):
            raise EssegError(f"the baseline's memory probe at batch {b} failed ({probe.get('note') or probe['status']}); "
                             "pass --baseline-batch B")
        return probe["fits"]

    best, capped = find_max_batch(fits, min_batch, batch)
    note = None
    if capped:
        note = f"the baseline fits batch {batch} in ESS's memory"
    elif best == 0:
        best = min_batch
        note = f"the baseline does not fit in ESS's memory even at batch {min_batch}; it runs batch {min_batch}"
    return dict(baseline_batch=best, budget_bytes=budget, ess=dict(batch=batch, **ess), probes=probes,
                rule="measured", note=note)


def measure_baseline_batch(s: AccuracySettings, ess_cfg: Config) -> dict:
    """:func:`choose_baseline_batch` with the peak memory of ``esseg bench memory`` (fresh processes)."""
    c, m = ess_cfg.data.options["num_classes"], ess_cfg.model
    bench = Settings(device=s.device, classes=[c], batch=s.batch, crop=s.size, embedding_dim=m.embedding_dim,
                     k=ess_cfg.loss.k, repeats=1, warmup=1, threads=s.threads, seed=s.seed, out=s.out, quick=s.quick,
                     arch=m.arch, encoder=m.encoder, config=ess_cfg.to_dict())  # the baseline: this with method baseline
    print(f"equal memory at C={c}: peak of one training step (esseg bench memory, {s.isolation}): "
          f"ESS at batch {s.batch}, then the baseline's largest batch within it", flush=True)
    with IsolatedRunner(s.isolation, preload=PRELOAD, timeout=1800) as runner:
        def measure(method: str, batch: int) -> dict:
            params = dict(settings=dataclasses.asdict(bench), method=method, num_classes=c, batch=batch)
            return runner.run("train_step", params)

        found = choose_baseline_batch(
            measure, s.batch, lower_bound=lambda b: BASELINE_LOGIT_COPIES * logits_bytes(c, b * s.size * s.size))
    found.update(C=c, key=_memory_key(s, ess_cfg))
    return found


def _memory_key(s: AccuracySettings, ess_cfg: Config) -> dict:
    cfg = ess_cfg.to_dict()
    return dict(C=ess_cfg.data.options["num_classes"], batch=s.batch, size=s.size, device=s.device,
                model=cfg["model"], loss=cfg["loss"], optim=cfg["optim"], amp=cfg["train"]["amp"],
                accum_steps=cfg["train"]["accum_steps"])


def equal_memory_batch(s: AccuracySettings, ess_cfg: Config) -> dict:
    """``--baseline-batch``, else a measurement saved in ``<out>/equal_memory.json`` (reused on reruns)."""
    if s.baseline_batch is not None:
        return dict(baseline_batch=s.baseline_batch, rule="--baseline-batch", C=ess_cfg.data.options["num_classes"],
                    note=None, probes=[])
    path = Path(s.out) / "equal_memory.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == _memory_key(s, ess_cfg):
            print(f"equal memory: reusing the measurement in {path} (baseline batch {saved['baseline_batch']})")
            return saved
    found = measure_baseline_batch(s, ess_cfg)
    report.write_json(path, found)
    return found


# ------------------------------------------------------------------------- one run


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(a) | set(b))
    out = []
    for key in keys:
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}={va!r} (now {vb!r})")
    return out


def learning_curve(records: list[dict]) -> list[dict]:
    """Evaluation points ``{"iter", "train_seconds", metrics...}`` from ``metrics.jsonl``.

    ``train_seconds`` is the engine's (time in training steps, summed across resumes); a resumed
    session's evaluation replaces the interrupted session's at the same step.
    """
    points = {r["iter"]: {"iter": r["iter"], "train_seconds": r.get("train_seconds"), **{k: r.get(k) for k in CURVE_METRICS}}
              for r in records if r.get("kind") == "eval"}
    return [points[i] for i in sorted(points)]


def collect(spec: RunSpec, dataset, state: dict, reused: bool) -> tuple[dict, list[dict], list[dict]]:
    """The run's row, learning-curve points and per-class IoU rows, from the files in its folder."""
    cfg = spec.cfg
    run = RunFolder(cfg.train.out_dir)
    full = run.read_eval(cfg.data.val_split)
    records = run.read_records()
    sessions = state.get("sessions", [])
    curve = learning_curve(records)
    train_seconds = curve[-1]["train_seconds"] if curve and curve[-1]["iter"] == cfg.train.iters else None
    row = _row_base(spec, cfg)
    wall = sum(sess["end"] - sess["start"] for sess in sessions if sess.get("end"))  # a killed session: not counted
    row.update(status="ok", seconds=wall, train_seconds=train_seconds,
               s_per_iter=train_seconds / cfg.train.iters if train_seconds else None,
               sessions=len(sessions), reused=reused)
    row.update({k: full.get(k) for k in ("PAcc", "mAcc", "mIoU", "fIoU", "num_valid_classes")})
    row.update({k: full.get(k) for k in ("thing_mIoU", "stuff_mIoU")})  # glyph scenes' class groups
    ident = dict(name=spec.name, method=spec.method, variant=spec.variant, C=spec.num_classes)
    curves = [dict(ident, batch=spec.batch, **p) for p in curve]
    freq = getattr(dataset, "class_frequencies", None)
    if freq is None:
        total = max(1, sum(full["gt_pixels"]))
        freq = [g / total for g in full["gt_pixels"]]
    classes = [dict(ident, class_id=i, class_name=name, frequency=float(f), IoU=iou, gt_pixels=gt)
               for i, (name, f, iou, gt) in enumerate(zip(full["class_names"], freq, full["IoU"], full["gt_pixels"]))]
    return row, curves, classes


def _row_base(spec: RunSpec, cfg: Config) -> dict:
    ess = spec.method == "ess"
    return dict(
        name=spec.name, method=spec.method, C=spec.num_classes, d=cfg.model.embedding_dim if ess else None,
        k=cfg.loss.k if ess else None, batch=spec.batch, crop=cfg.data.options.get("size"), device=cfg.train.device,
        variant=spec.variant, iters=cfg.train.iters,
        # "knn+tail<m>": kNN negatives with m uniform draws estimating the rest (loss.tail_samples)
        loss_mode=(cfg.loss.mode + (f"+tail{cfg.loss.tail_samples}" if cfg.loss.tail_samples else "")) if ess else None,
        tau=cfg.loss.tau if ess else None,
        # True: unit pixel and class embeddings (the paper's); "classes": the class table only (model.unit_pixels=false)
        normalize=(cfg.model.normalize if cfg.model.unit_pixels else "classes") if ess else None,
        reg_weight=cfg.loss.reg_weight if ess else None,
        batch_rule=spec.batch_rule, threads=cfg.train.num_threads, run_dir=cfg.train.out_dir, recipe=spec.recipe,
    )


def run_state(spec: RunSpec) -> dict | None:
    """The run's ``run.json`` (None for a new run); raises if its folder holds a different run."""
    run = RunFolder(spec.cfg.train.out_dir)
    state = _read_json(run.bench_state)
    if state is None and run.run_files():
        raise EssegError(f"{run.path} holds training outputs but no {run.bench_state.name} (not written by esseg bench accuracy); "
                         "remove it or use another --out")
    wanted = spec.cfg.to_dict()
    if state is not None and state.get("config") != wanted:
        diff = "; ".join(_differences(state.get("config") or {}, wanted)[:4])
        raise EssegError(f"run {spec.name} in {run.path} was started with other settings ({diff}); "
                         "rerun with the same flags, or use another --out")
    return state


def _warm_up(s: AccuracySettings) -> None:
    """One tiny training step, so the first run's time does not include one-off lazy imports and set-up."""
    device = resolve_device(s.device)
    for dim in (6, None):
        model = create_model("deeplabv3plus", "mobilenet_v2", 4, embedding_dim=dim).to(device).train()
        model(torch.randn(2, 3, 32, 32, device=device)).sum().backward()


def train_run(spec: RunSpec, dataset) -> tuple[dict, list[dict], list[dict]]:
    """Train ``spec`` in its folder (resuming; skipped when finished earlier) and collect its results."""
    cfg = spec.cfg
    run = RunFolder(cfg.train.out_dir)
    state_path, eval_path = run.bench_state, run.eval_json(cfg.data.val_split)
    state = run_state(spec)
    if state is not None and state.get("finished") and eval_path.is_file():
        print(f"{spec.name}: finished earlier, not trained again ({run.path})", flush=True)
        return collect(spec, dataset, state, reused=True)
    start_iter = 0
    if run.last.is_file():
        start_iter = int(load_checkpoint(run.last).get("iteration", 0))
    state = state or dict(name=spec.name, config=cfg.to_dict(), sessions=[], finished=False)
    state["sessions"].append(dict(start=time.time(), start_iter=start_iter, end=None))
    report.write_json(state_path, state)
    print(f"{spec.name}: {spec.method}, C={spec.num_classes}, batch {spec.batch}, {cfg.train.iters} steps"
          + (f", resuming at step {start_iter}" if start_iter else "") + f" -> {run.path}", flush=True)
    try:
        result = engine.train(cfg)
    finally:
        state["sessions"][-1]["end"] = time.time()
        report.write_json(state_path, state)
        gc.collect()
    state["finished"] = result["iterations"] >= cfg.train.iters and eval_path.is_file()
    report.write_json(state_path, state)
    return collect(spec, dataset, state, reused=False)


# ----------------------------------------------------------------------- comparisons


def comparisons(s: AccuracySettings, runs: list[RunSpec]) -> list[tuple[str, str, str, str]]:
    """(name, label, run a, run b): the differences a - b the experiment is about."""
    names = {r.name for r in runs}
    out = [(f"ess_minus_baseline_C{c}", f"ESS - baseline, C={c}, batch {s.batch} both", f"ess_C{c}", f"baseline_C{c}")
           for c in s.classes]
    for r in runs:
        if r.variant == "equal_memory":
            c = r.num_classes
            out.append((f"ess_minus_baseline_eqmem_C{c}",
                        f"ESS (batch {s.batch}) - baseline (batch {r.batch}, equal memory), C={c}", f"ess_C{c}", r.name))
    whats = {"random": "kNN - random negatives", "nonorm": "normalised - not", "nomargin": "max-margin - none",
             **{name: f"ESS - {name} ({' '.join(items)})" for name, items in s.variants.items()}}
    for c in s.ablation_classes:
        for suffix, what in whats.items():
            if f"ess_C{c}_{suffix}" in names:
                out.append((f"ess_minus_{suffix}_C{c}", f"{what}, ESS C={c}", f"ess_C{c}", f"ess_C{c}_{suffix}"))
    return out


def compare(rows: list[dict], name: str, label: str, a: str, b: str) -> dict:
    """Differences in percentage points (a - b) of every metric, and the wall-time ratio a / b."""
    ra, why_a = report.find_row(rows, {"name": a})
    rb, why_b = report.find_row(rows, {"name": b})
    out = dict(name=name, label=label, a=a, b=b, note=why_a or why_b)
    for key in METRICS:
        va, vb = (ra or {}).get(key), (rb or {}).get(key)
        out[f"{key}_a"], out[f"{key}_b"] = va, vb
        out[f"delta_{key}"] = 100 * (va - vb) if va is not None and vb is not None else None
    sa, sb = (ra or {}).get("seconds"), (rb or {}).get("seconds")
    out["seconds_ratio"] = sa / sb if sa and sb else None
    return out


# ---------------------------------------------------------------------------- figures


def _pct(v) -> str:
    return f"{100 * v:.2f}"


def _label(row: dict) -> str:
    if row["method"] == "baseline":
        return f"baseline, batch {row['batch']}" + (" (equal memory)" if row["variant"] == "equal_memory" else "")
    if row["variant"] == "full":
        return "ESS"
    return f"ESS, {ABLATIONS[row['variant']][0] if row['variant'] in ABLATIONS else row['variant']}"


def _groups(s: AccuracySettings, rows: list[dict]) -> list[tuple[str, list[dict]]]:
    """Panels of the figures: one per C (ESS, baseline, equal-memory baseline), one per ablation C."""
    ok = [r for r in rows if r.get("status") == "ok"]
    groups = [(f"C={c}", [r for r in ok if r["C"] == c and r["variant"] in ("full", "equal_batch", "equal_memory")])
              for c in s.classes]
    if s.ablations or s.variants:
        groups += [(f"ablations, C={c}", [r for r in ok if r["C"] == c and r["method"] == "ess"])
                   for c in s.ablation_classes]
    return [(title, members) for title, members in groups if members]


def _grid(axes, nrows: int, ncols: int):
    fig = axes[0].figure
    for ax in axes:
        ax.remove()
    return fig.subplots(nrows, ncols, squeeze=False)


def draw_summary(axes, s: AccuracySettings, rows: list[dict]) -> None:
    """Bars of mIoU per run, grouped per panel, and the wall time of every run."""
    groups = _groups(s, rows)
    ax = axes[0]
    x, ticks, labels = 0, [], []
    colours = {}
    for title, members in groups:
        start = x
        for r in members:
            lab = _label(r)
            colour = colours.setdefault(lab, f"C{len(colours) % 10}")
            ax.bar(x, 100 * (r.get("mIoU") or 0), color=colour, label=lab if lab not in labels else None)
            ax.annotate(_pct(r.get("mIoU") or 0), (x, 100 * (r.get("mIoU") or 0)), ha="center", va="bottom", fontsize=7)
            labels.append(lab)
            x += 1
        ticks.append(((start + x - 1) / 2, title))
        x += 1
    ax.set_xticks([t for t, _ in ticks], [title for _, title in ticks], fontsize=8)
    ax.set_ylabel("validation mIoU (%)")
    ax.set_title(f"glyph scenes {s.size}x{s.size}, zipf {s.zipf}, {s.iters} steps", fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)
    if labels:
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2)
    ok = [r for r in rows if r.get("status") == "ok" and r.get("seconds") is not None]
    ax = axes[1]
    ax.barh(range(len(ok)), [r["seconds"] for r in ok], color=[colours.get(_label(r), "C7") for r in ok])
    ax.set_yticks(range(len(ok)), [f"{r['name']} (b={r['batch']})" for r in ok], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("wall seconds per run (training + evaluations)")
    ax.grid(True, axis="x", alpha=0.3)


def draw_curves(axes, s: AccuracySettings, rows: list[dict], curves: list[dict]) -> None:
    """mIoU against steps (top row) and against training seconds (bottom row), one column per panel."""
    groups = _groups(s, rows)
    grid = _grid(axes, 2, max(1, len(groups)))
    for col, (title, members) in enumerate(groups):
        for r in members:
            pts = [p for p in curves if p["name"] == r["name"] and p.get("mIoU") is not None]
            if not pts:  # an equal-memory run that is the equal-batch run
                continue
            things = [p for p in pts if p.get("thing_mIoU") is not None]
            for row, x in ((0, "iter"), (1, "train_seconds")):
                (line,) = grid[row][col].plot([p[x] for p in pts], [100 * p["mIoU"] for p in pts], marker=".", label=_label(r))
                if things:  # glyph scenes: the thing classes alone, dashed, same colour
                    grid[row][col].plot([p[x] for p in things], [100 * p["thing_mIoU"] for p in things], ls="--",
                                        color=line.get_color(), label=f"{_label(r)}: thing mIoU")
        for row, xlabel in ((0, "training steps"), (1, "training seconds (without evaluations)")):
            ax = grid[row][col]
            ax.set_xlabel(xlabel)
            ax.set_ylabel("validation mIoU (%), dashed: thing classes")
            ax.set_title(title, fontsize=9)
            ax.grid(True, alpha=0.3)
            if ax.get_lines():
                ax.legend(fontsize=7)


def draw_class_iou(axes, s: AccuracySettings, rows: list[dict], classes: list[dict]) -> None:
    """Per-class IoU against the class's expected pixel share, one panel per C, binned means as lines."""
    from matplotlib.ticker import NullFormatter  # noqa: PLC0415 - matplotlib is heavy: only when drawing

    for ax, c in zip(axes, s.classes):
        members = [r for r in rows if r.get("status") == "ok" and r["C"] == c
                   and r["variant"] in ("full", "equal_batch", "equal_memory")]
        for i, r in enumerate(members):
            pts = [(p["frequency"], 100 * p["IoU"]) for p in classes
                   if p["name"] == r["name"] and p["IoU"] is not None and p["frequency"] > 0]
            if not pts:
                continue
            f, iou = np.array(pts).T
            colour = f"C{i}"
            ax.scatter(f, iou, s=6, alpha=0.35, color=colour)
            edges = np.geomspace(f.min(), f.max() * 1.0001, 9)
            which = np.digitize(f, edges) - 1
            mids, means = [], []
            for b in range(len(edges) - 1):
                if (which == b).any():
                    mids.append(math.sqrt(edges[b] * edges[b + 1]))
                    means.append(iou[which == b].mean())
            ax.plot(mids, means, color=colour, marker="o", label=f"{_label(r)} (binned mean)")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("class frequency (expected share of training pixels)")
        ax.set_ylabel("validation IoU (%)")
        ax.set_title(f"per-class IoU, C={c}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_lines():
            ax.legend(fontsize=7)


# ------------------------------------------------------------------------------- run


def _write_tables(out: Path, s: AccuracySettings, env: dict, memory: dict | None, rows: list[dict],
                  comps: list[dict], curves: list[dict], classes: list[dict]) -> None:
    report.write_csv(out / "accuracy.csv", rows, COLUMNS)
    report.write_csv(out / "curves.csv", curves, CURVE_COLUMNS)
    report.write_csv(out / "class_iou.csv", classes, CLASS_COLUMNS)
    report.write_json(out / "accuracy.json", dict(
        bench="accuracy", created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        settings=dataclasses.asdict(s), environment=env, equal_memory=memory, columns=COLUMNS,
        rows=[{c: r.get(c) for c in COLUMNS} for r in rows], comparisons=comps,
        files=dict(curves="curves.csv", class_iou="class_iou.csv", figures=["accuracy.png", "curves.png", "class_iou.png"]),
    ))


def run(args: argparse.Namespace) -> int:
    """``esseg bench accuracy``: plan, train every run (or reuse it), write and print the results."""
    s = resolve(args)
    runs = plan_runs(s)
    datasets = {}
    for spec in runs:  # every config and dataset is checked before anything is trained or written
        spec.cfg = build_config(s, spec)
        datasets[spec.name] = check_config(spec.cfg)
    env = start(s, resolve_device(s.device))
    out = Path(s.out)
    print(f"esseg bench accuracy: {len(runs)} runs, C={','.join(map(str, s.classes))}, {s.iters} steps, batch {s.batch}, "
          f"{s.size}x{s.size} glyph scenes (zipf {s.zipf}), eval every {s.eval_every or s.iters} steps on "
          f"{s.val_images} scenes, {s.device}, {env['threads']} threads -> {out}", flush=True)

    memory = None
    eq = next((r for r in runs if r.variant == "equal_memory"), None)
    if eq is not None:
        ess_spec = next(r for r in runs if r.name == f"ess_C{eq.num_classes}")
        memory = equal_memory_batch(s, ess_spec.cfg)
        eq.batch, eq.batch_rule = memory["baseline_batch"], memory["rule"]
        if eq.batch == s.batch:
            eq.same_as = f"baseline_C{eq.num_classes}"
        eq.cfg = build_config(s, eq)
        print(f"equal memory at C={eq.num_classes}: baseline batch {eq.batch} ({eq.batch_rule})"
              + (f"; {memory['note']}" if memory.get("note") else ""), flush=True)
    for spec in runs:
        if spec.same_as is None:
            run_state(spec)  # a folder holding another run stops us before anything is trained

    _warm_up(s)
    rows, curves, classes = [], [], []
    by_name: dict[str, dict] = {}
    for spec in runs:
        if spec.same_as is not None:
            row = dict(by_name[spec.same_as], name=spec.name, variant=spec.variant, batch_rule=spec.batch_rule,
                       note=f"same run as {spec.same_as}: {memory['note']}")  # no second, identical training
        else:
            try:
                row, run_curves, run_classes = train_run(spec, datasets[spec.name])
                curves += run_curves
                classes += run_classes
            except (EssegError, RuntimeError, MemoryError) as err:  # one failed run does not stop the others
                text = str(err).strip().splitlines()
                row = dict(_row_base(spec, spec.cfg), status="error",
                           note=f"{type(err).__name__}: {text[0] if text else ''}"[:300])
                print(f"{spec.name}: error: {row['note']}", flush=True)
        row["peak_bytes"] = _measured_peak(memory, row)
        rows.append(row)
        by_name[spec.name] = row
        _write_tables(out, s, env, memory, rows, [], curves, classes)  # progress survives an interruption

    comps = [compare(rows, *c) for c in comparisons(s, runs)]
    _write_tables(out, s, env, memory, rows, comps, curves, classes)
    groups = max(1, len(_groups(s, rows)))
    report.write_png(out / "accuracy.png", lambda axes: draw_summary(axes, s, rows), ncols=2)
    report.write_png(out / "curves.png", lambda axes: draw_curves(axes, s, rows, curves), ncols=groups, size=(5.0, 8.0))
    report.write_png(out / "class_iou.png", lambda axes: draw_class_iou(axes, s, rows, classes), ncols=len(s.classes))

    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    table = [("run", "name", None), ("C", "C", None), ("batch", "batch", None), ("steps", "iters", None),
             ("wall", "seconds", fmt_seconds), ("train", "train_seconds", fmt_seconds), ("PAcc", "PAcc", pct),
             ("mIoU", "mIoU", pct), ("fIoU", "fIoU", pct), ("thing mIoU", "thing_mIoU", pct),
             ("status", "status", None), ("note", "note", None)]
    print("\n" + report.format_table(rows, table))
    signed = lambda v: f"{v:+.2f}"  # noqa: E731
    print("\ncomparisons (percentage points, a - b; measured side by side in this run)")
    print(report.format_table(comps, [
        ("comparison", "label", None), ("mIoU a", "mIoU_a", pct), ("mIoU b", "mIoU_b", pct),
        ("d mIoU", "delta_mIoU", signed), ("d PAcc", "delta_PAcc", signed), ("d fIoU", "delta_fIoU", signed),
        ("d thing mIoU", "delta_thing_mIoU", signed), ("time a/b", "seconds_ratio", report.fmt_ratio), ("note", "note", None)]))
    files = ", ".join(str(out / f) for f in ("accuracy.csv", "accuracy.json", "curves.csv", "class_iou.csv",
                                              "accuracy.png", "curves.png", "class_iou.png"))
    print(f"\nwrote {files}")
    return 1 if any(r.get("status") == "error" for r in rows) else 0


def _measured_peak(memory: dict | None, row: dict) -> int | None:
    """The peak memory of one step that the equal-memory measurement found for this row's method and batch."""
    if not memory or memory.get("rule") != "measured" or row.get("C") != memory.get("C"):
        return None
    if row["method"] == "ess":
        return memory["ess"].get("peak_bytes") if row["batch"] == memory["ess"]["batch"] and row["variant"] == "full" else None
    found = [p.get("peak_bytes") for p in memory["probes"] if p["batch"] == row["batch"] and p["status"] == "ok"]
    return found[0] if found else None
