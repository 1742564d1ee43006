"""What every benchmark shares: settings and flags, synthetic data, clocks, memory meters and
the training step that the memory and speed benchmarks measure: the engine's ``train_step``
on the model, loss, optimiser and scaler ``esseg train`` builds (same AMP, accumulation, loss)."""

from __future__ import annotations

import argparse
import copy
import ctypes
import ctypes.util
import dataclasses
import functools
import gc
import itertools
import math
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable

import torch
import torch.nn.functional as F

from esseg.engine.config import Config, apply_overrides, config_from_dict, load_config
from esseg.engine.distributed import resolve_device
from esseg import __version__, create_model
from esseg.engine.train import build_criterion, build_model, build_optimizer_step, train_step
from esseg.errors import EssegError

# No label is ignored in the synthetic batches; -1 is outside [0, C) for every C.
IGNORE_INDEX = -1
METHODS = ("baseline", "ess")
DEFAULT_OUT = "runs/bench"


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass
class Settings:
    """The resolved common settings of one benchmark run (flags, else --quick or full defaults)."""

    device: str
    classes: list[int]
    batch: int
    crop: int
    embedding_dim: int
    k: int
    repeats: int
    warmup: int
    threads: int | None
    seed: int
    out: str
    quick: bool
    arch: str = "deeplabv3plus"
    encoder: str = "mobilenet_v2"
    config: dict = dataclasses.field(default_factory=dict)  # engine config of the measured step (--set)

    @property
    def num_pixels(self) -> int:
        """N = batch * crop * crop: the pixels of one training batch."""
        return self.batch * self.crop * self.crop


# Defaults of the CPU protocol (full) and of --quick (tiny shapes, for tests and smoke runs).
FULL = dict(
    classes=[19, 150, 1284, 5000, 20000, 100000], batch=4, crop=256, arch="deeplabv3plus",
    encoder="mobilenet_v2", embedding_dim=12, k=7, repeats=5, warmup=2,
)
QUICK = dict(classes=[19, 1284], batch=2, crop=32, repeats=2, warmup=1)


def parse_int_list(text: str, flag: str) -> list[int]:
    """``"19,150,1284"`` -> ``[19, 150, 1284]``; raises :class:`EssegError` naming ``flag``."""
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise EssegError(f"{flag} takes comma-separated integers like 19,150,1284; got {text!r}") from None
    if not values:
        raise EssegError(f"{flag} needs at least one value; got {text!r}")
    return values


_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str, flag: str = "--max-batch") -> int:
    """``"4GiB"`` -> 4294967296; accepts B, KB/MB/GB/TB (powers of 10) and KiB/MiB/GiB/TiB."""
    s = text.strip().lower().replace(" ", "")
    number = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(number):]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not value > 0 or not math.isfinite(value):
        raise EssegError(f"{flag} takes a memory size like 4GiB, 512MiB or 12GB; got {text!r}")
    return int(value * _UNITS[unit])


def format_bytes(n: float | None) -> str:
    """Bytes as ``1.23 GiB`` / ``456.7 MiB`` (``-`` for None)."""
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "-"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}" if abs(n) / size < 100 else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


def add_common_arguments(
    p: argparse.ArgumentParser, full: dict, quick: dict, model: bool = True, k_help: str = "k", timed: bool = True
) -> None:
    """The flags every ``esseg bench`` subcommand takes; defaults come from ``full`` / ``quick``.

    ``model=False`` leaves out ``--arch``/``--encoder``; ``timed=False`` leaves out ``--repeats``.
    """

    def dflt(name: str) -> str:
        f, q = full.get(name), quick.get(name, full.get(name))
        show = (lambda v: ",".join(map(str, v)) if isinstance(v, list) else v)
        return f"default {show(f)}" + (f"; --quick: {show(q)}" if q != f else "")

    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="where to run (default cpu)")
    p.add_argument("--classes", metavar="C,C,...", help=f"numbers of classes to sweep ({dflt('classes')})")
    p.add_argument("--batch", type=int, metavar="B", help=f"images per batch ({dflt('batch')})")
    p.add_argument("--crop", type=int, metavar="S", help=f"square S x S crops ({dflt('crop')})")
    if model:
        p.add_argument("--arch", help=f"segmentation_models_pytorch architecture ({dflt('arch')})")
        p.add_argument("--encoder", help=f"encoder, random init ({dflt('encoder')})")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="esseg train config key of the measured step, e.g. train.accum_steps=2, train.amp=false "
                            "or optim.optimizer=adamw (repeatable; default: the engine's defaults)")
    p.add_argument("--embedding-dim", type=int, metavar="D", help=f"ESS embedding dimension d ({dflt('embedding_dim')})")
    p.add_argument("--k", type=int, metavar="K", help=f"{k_help} ({dflt('k')})")
    if timed:
        p.add_argument("--repeats", type=int, metavar="N", help=f"timed repeats, the median is reported ({dflt('repeats')})")
    p.add_argument("--warmup", type=int, metavar="N", help=f"untimed warm-up repeats ({dflt('warmup')})")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch and FAISS (default: torch's default)")
    p.add_argument("--seed", type=int, default=0, help="seed of models and synthetic data (default 0)")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="tiny shapes and few repeats: checks the harness, not performance")


def resolve_settings(args: argparse.Namespace, full: dict, quick: dict) -> Settings:
    """Flags win; otherwise the --quick defaults (with --quick) or the full defaults. Validates."""
    defaults = {**full, **quick} if args.quick else dict(full)

    def pick(name: str):
        value = getattr(args, name, None)
        return defaults.get(name) if value is None else value

    classes = parse_int_list(args.classes, "--classes") if args.classes else list(defaults["classes"])
    s = Settings(
        device=args.device, classes=classes, batch=pick("batch"), crop=pick("crop"),
        embedding_dim=pick("embedding_dim"), k=pick("k"), repeats=pick("repeats"), warmup=pick("warmup"),
        threads=args.threads, seed=args.seed, out=args.out, quick=args.quick,
        arch=pick("arch") or full.get("arch", "deeplabv3plus"), encoder=pick("encoder") or full.get("encoder", "mobilenet_v2"),
    )
    if min(s.classes) < 2:
        raise EssegError(f"--classes must all be >= 2; got {','.join(map(str, s.classes))}")
    for flag, value, low in (("--batch", s.batch, 1), ("--crop", s.crop, 1), ("--embedding-dim", s.embedding_dim, 1),
                             ("--k", s.k, 1), ("--repeats", s.repeats, 1), ("--warmup", s.warmup, 0)):
        if value < low:
            raise EssegError(f"{flag} must be >= {low}; got {value}")
    if s.threads is not None and s.threads < 1:
        raise EssegError(f"--threads must be >= 1; got {s.threads}")
    resolve_device(s.device)
    if hasattr(args, "overrides"):
        refuse_owned_keys([("--set", item) for item in args.overrides], OWNED_KEYS, "configuration by the benchmark")  # the benchmarks that build the training step
        s.config = load_config(None, args.overrides).to_dict()
        for method in METHODS:
            step_config(method, s)  # a bad combination fails here, before anything runs
    return s


def set_threads(threads: int | None) -> int:
    """Use ``threads`` CPU threads in torch (and so in FAISS, whose calls follow torch's setting:
    ``esseg.knn.search.faiss_threads``); returns the count in use."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def check_model_settings(s: Settings) -> None:
    """Fail early with one line on an unknown arch/encoder or a crop the network cannot take."""
    model = build_model(step_config("ess", s), 2)
    check = getattr(model.net, "check_input_shape", None)
    if check is not None:
        try:
            check(torch.empty(1, 3, s.crop, s.crop))
        except RuntimeError as err:
            raise EssegError(f"--crop {s.crop} does not fit {s.arch}/{s.encoder}: {err}") from None


# ------------------------------------------------------------------------- synthetic data


def blocky_labels(batch: int, size: int, num_classes: int, cell: int = 16, generator=None) -> torch.Tensor:
    """(B, size, size) int64 labels constant on ``cell`` x ``cell`` blocks, uniform over [0, C)."""
    n = -(-size // cell)
    low = torch.randint(num_classes, (batch, n, n), generator=generator)
    return low.repeat_interleave(cell, 1).repeat_interleave(cell, 2)[:, :size, :size].contiguous()


def unit_vectors(n: int, d: int, generator=None) -> torch.Tensor:
    """(n, d) random directions, uniform on the unit sphere."""
    return F.normalize(torch.randn(n, d, generator=generator), dim=1)


def smooth_pixel_embeddings(
    class_embeddings: torch.Tensor, labels: torch.Tensor, noise: float = 0.15, stride: int = 4, generator=None
) -> torch.Tensor:
    """Unit pixel embeddings (B, d, H, W) shaped like a trained network's output.

    At 1/``stride`` resolution each pixel is its label's class embedding plus Gaussian noise
    (std ``noise`` per coordinate); the field is bilinearly upsampled to full size (as
    DeepLabV3+ upsamples its stride-4 output) and L2-normalised. Neighbouring pixels are
    therefore similar, which is what sharing kNN results between pixels relies on.
    """
    low = labels[:, ::stride, ::stride]
    field = class_embeddings[low] + noise * torch.randn(*low.shape, class_embeddings.shape[1], generator=generator)
    field = F.interpolate(field.permute(0, 3, 1, 2), size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.normalize(field, dim=1)


# ------------------------------------------------------------------------------ estimates


def memory_limit(text: str | None, device: torch.device) -> int | None:
    """``--mem-limit``: bytes from the flag, ``None`` for ``none``; default 80% of the memory
    available now on CPU (``MemAvailable``) and no limit on CUDA (out-of-memory is caught)."""
    if text is not None:
        return None if text.lower() == "none" else parse_bytes(text, "--mem-limit")
    if device.type == "cuda":
        return None
    avail = available_memory()
    return int(0.8 * avail) if avail else None


def available_memory() -> int | None:
    """``MemAvailable`` from /proc/meminfo in bytes (None where there is no /proc)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def logits_bytes(num_classes: int, num_pixels: int) -> int:
    """Bytes of one fp32 (N, C) logit tensor: the buffer that makes the baseline grow with C."""
    return 4 * num_classes * num_pixels


def skip_reason(estimate: int, limit: int | None) -> str | None:
    """Why a configuration is not run, or None: its C-dependent buffers alone exceed the limit."""
    if limit is not None and estimate > limit:
        return f"skipped: needs >= {format_bytes(estimate)} for logits, over --mem-limit {format_bytes(limit)}"
    return None


# ------------------------------------------------------------------------ clocks, memory


def clock(device: torch.device) -> float:
    """``time.perf_counter()`` after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def time_repeats(fn: Callable[[], object], repeats: int, warmup: int, device: torch.device) -> list[float]:
    """Wall seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls (device-synchronised)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = clock(device)
        fn()
        times.append(clock(device) - t0)
    return times


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return float(statistics.median(values))


@functools.lru_cache(maxsize=1)
def _libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def exact_malloc() -> bool:
    """Make this process's resident memory follow its live buffers (glibc only; returns success).

    Sets a fixed mmap threshold of 128 KiB, which also turns off glibc's dynamic threshold, so
    every tensor above 128 KiB is mmap-ed and handed back to the OS when freed; then trims what
    is cached. Without it, buffers freed by a warm-up step stay resident and the next step's
    peak above its starting RSS would be underestimated. Call it in a measuring process only.
    """
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    ok = libc.mallopt(-3, 128 * 1024) == 1 and libc.mallopt(-1, 128 * 1024) == 1  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD
    libc.malloc_trim(0)
    return ok


def timing_malloc() -> bool:
    """Undo :func:`exact_malloc` for timing (glibc only; returns success): an mmap threshold of
    32 MiB and a trim threshold of 64 MiB, about where glibc's dynamic thresholds settle in a
    training loop, so freed buffers are reused as in ``esseg train`` instead of being unmapped
    and page-faulted in again at every step (which slows large-table steps by up to 2x).
    :func:`exact_malloc` switches back for a memory measurement."""
    libc = _libc()
    if libc is None or not hasattr(libc, "mallopt"):
        return False
    return libc.mallopt(-3, 32 << 20) == 1 and libc.mallopt(-1, 64 << 20) == 1


def release_free_memory() -> None:
    """Collect garbage and return malloc's free pages to the OS (glibc), before reading RSS."""
    gc.collect()
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _ru_maxrss() -> int:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss if sys.platform == "darwin" else rss * 1024


class MemoryMeter:
    """Current and peak memory of this process on one device, with a resettable peak.

    CUDA: ``torch.cuda.memory_allocated`` / ``max_memory_allocated`` after
    ``reset_peak_memory_stats`` (live tensors only; no CUDA context, no cached free blocks).
    CPU: resident set size ``VmRSS`` and its high-water mark ``VmHWM`` from /proc/self/status;
    the mark is reset by writing 5 to /proc/self/clear_refs (Linux >= 4.0). Where that is not
    possible the peak is ``ru_maxrss``, the peak since the process started, and
    :attr:`method` says so.
    """

    def __init__(self, device: torch.device):
        self.device = device
        if device.type == "cuda":
            self.method = "cuda.max_memory_allocated"
        elif _proc_status("VmHWM") is not None and self._clear_refs():
            self.method = "VmHWM"
        else:
            self.method = "ru_maxrss (not resettable: peak since process start)"

    @staticmethod
    def _clear_refs() -> bool:
        try:
            with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
                f.write("5")
            return True
        except OSError:
            return False

    def current(self) -> int:
        """Bytes in use now (CUDA: allocated by tensors; CPU: resident set size)."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.memory_allocated(self.device)
        rss = _proc_status("VmRSS")
        return rss if rss is not None else _ru_maxrss()

    def reset_peak(self) -> None:
        """Start a new peak at the current usage."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.method == "VmHWM":
            self._clear_refs()

    def peak(self) -> int:
        """Highest usage since the last :meth:`reset_peak`."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device)
        if self.method == "VmHWM":
            return _proc_status("VmHWM") or 0
        return _ru_maxrss()


def runtime_warmup(s: Settings, device: torch.device) -> None:
    """Load what a measured step loads lazily (the model's modules, the conv/BatchNorm kernels and
    autograd) so that it counts as runtime, not as the step's memory."""
    create_model(s.arch, s.encoder, 2, embedding_dim=s.embedding_dim)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU()).to(device)
    net(torch.randn(2, 3, 16, 16, device=device)).sum().backward()


@dataclasses.dataclass
class Measurement:
    """A worker's set-up for one measured configuration (see :func:`start_measurement`)."""

    device: torch.device
    meter: "MemoryMeter"
    runtime: int  # bytes in use after the runtime warm-up: the zero of every peak reported
    generator: torch.Generator  # seeded with the run seed, for the batch
    threads: int
    exact: bool  # CPU peaks read with exact malloc accounting


def start_measurement(s: Settings) -> Measurement:
    """In a fresh worker process: exact malloc accounting on CPU, ``s.threads`` threads, the
    runtime warmed up and its memory taken as the baseline, the RNGs seeded with ``s.seed``."""
    device = torch.device(s.device)
    exact = exact_malloc() if device.type == "cpu" else False
    threads = set_threads(s.threads)
    meter = MemoryMeter(device)
    runtime_warmup(s, device)
    release_free_memory()
    runtime = meter.current()
    torch.manual_seed(s.seed)
    return Measurement(device, meter, runtime, torch.Generator().manual_seed(s.seed), threads, exact)


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA out-of-memory and for the CPU allocator failing to allocate."""
    if isinstance(err, torch.cuda.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


# ------------------------------------------------------------------------- environment


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    """Versions, hardware, threads and the load average at the start (noisy timings show here)."""
    info = dict(
        esseg=__version__, torch=torch.__version__, python=platform.python_version(), platform=platform.platform(),
        cpu=_cpu_name(), cpu_count=os.cpu_count(), threads=torch.get_num_threads(),
        load_average=[round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    )
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_bytes=props.total_memory, cuda=torch.version.cuda)
    return info


def load_warning(env: dict) -> str | None:
    """A warning line when the machine was busy at the start (timings will be noisy)."""
    load, cpus = env.get("load_average"), env.get("cpu_count") or 1
    if load and load[0] > 0.5 * cpus:
        return (f"warning: load average {load[0]:.1f} on {cpus} CPUs at the start: other processes are running, "
                "timings are noisy; measure on a quiet machine")
    return None


def start(s: Settings, device: torch.device) -> dict:
    """Set the thread count, describe the environment, and print a warning if the machine is busy."""
    set_threads(s.threads)
    env = environment(device)
    if warning := load_warning(env):
        print(warning)
    return env


# ---------------------------------------------------------------------- training step


# --set keys the benchmark sets per configuration, and the flag to use instead (None: set by the sweep)
OWNED_KEYS = {"model.method": None, "model.arch": "--arch", "model.encoder": "--encoder",
              "model.embedding_dim": "--embedding-dim", "loss.k": "--k", "train.batch_size": "--batch",
              "train.device": "--device"}


def refuse_owned_keys(items: list[tuple[str, str]], owned: dict[str, str | None], per: str) -> None:
    """Raise on a ``(flag, "KEY=VALUE")`` whose key the benchmark sets ``per`` run, naming the flag to use."""
    for flag, item in items:
        key = item.partition("=")[0].strip()
        if key in owned:
            raise EssegError(f"{flag} {key} is set per {per}" + (f"; use {owned[key]}" if owned[key] else ""))


def step_config(method: str, s: Settings) -> Config:
    """The engine config of one measured configuration: ``s.config`` (the engine's defaults plus
    ``--set``) with the method, arch, encoder, d and k of the sweep."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    updates = {"model.method": method, "model.arch": s.arch, "model.encoder": s.encoder,
               "model.embedding_dim": s.embedding_dim, "loss.k": s.k, "train.batch_size": s.batch, "train.device": s.device}
    return config_from_dict(apply_overrides(copy.deepcopy(s.config), updates=updates))


@dataclasses.dataclass
class Training:
    """What ``esseg train`` builds for one config, ready for the engine's ``train_step``."""

    cfg: Config
    model: torch.nn.Module
    criterion: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp: bool

    def step(self, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """One :func:`esseg.engine.train.train_step` on ``train.accum_steps`` copies of the batch."""
        return train_step(self.model, self.criterion, self.optimizer, self.scaler, itertools.repeat((images, labels)),
                          images.device, self.cfg.train.accum_steps, self.amp)


def build_training(method: str, num_classes: int, s: Settings, device: torch.device) -> Training:
    """Model, loss, optimiser and gradient scaler of one configuration, built as ``esseg train`` builds them.

    :func:`step_config` gives the config; then the engine's ``build_model``, ``build_criterion``
    and ``build_optimizer_step`` (the backbone's BatchNorm momentum, then ``build_optimizer``
    with ``cfg.optim``; defaults: SGD with momentum, lr 0.01, the paper's groups; ESS:
    ``ESSLoss`` with kNN cross-entropy + max-margin), and AMP on CUDA when
    ``train.amp`` (the default). Random init; ``ignore_index=-1`` (valid for every C).
    """
    cfg = step_config(method, s)
    model = build_model(cfg, num_classes).to(device).train()
    criterion = build_criterion(cfg, num_classes, IGNORE_INDEX)
    optimizer = build_optimizer_step(cfg, model)
    amp = cfg.train.amp and device.type == "cuda"
    return Training(cfg, model, criterion, optimizer, torch.amp.GradScaler(device.type, enabled=amp), amp)


def describe_step(s: Settings, device: torch.device) -> str:
    """One line on the measured step: the engine's train_step and the config keys that shape it."""
    cfg = step_config("ess", s)
    amp = "on" if cfg.train.amp and device.type == "cuda" else "off"
    return (f"the engine's train_step (AMP {amp}, train.accum_steps {cfg.train.accum_steps}, "
            f"optim.optimizer {cfg.optim.optimizer}, loss.mode {cfg.loss.mode})")


def make_batch(num_classes: int, s: Settings, device: torch.device, generator=None, batch: int | None = None):
    """Random images (B, 3, S, S) and blocky labels (B, S, S) on ``device``."""
    b = batch or s.batch
    images = torch.randn(b, 3, s.crop, s.crop, generator=generator)
    labels = blocky_labels(b, s.crop, num_classes, generator=generator)
    return images.to(device), labels.to(device)


PHASES = ("forward", "loss", "backward", "optimizer")


def timed_step(training: Training, images: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Run :meth:`Training.step` once; returns its seconds and phase times (device-synchronised).

    ``forward`` (the model's forward, under autocast on CUDA), ``loss`` (the criterion: ESS
    includes the kNN search and the max-margin term) and ``optimizer`` (``optimizer.step``) are
    clocked by hooks on the model, the criterion and the optimiser, summed over micro-batches;
    ``backward`` is the rest of the step (``zero_grad``, backward, the scaler's unscale).
    """
    device = images.device
    spent = dict.fromkeys(PHASES, 0.0)
    started: dict[str, float] = {}

    def begin(phase):
        def hook(*args):
            started[phase] = clock(device)
        return hook

    def end(phase):
        def hook(*args):
            spent[phase] += clock(device) - started[phase]
        return hook

    t = training
    hooks = [t.model.register_forward_pre_hook(begin("forward")), t.model.register_forward_hook(end("forward")),
             t.criterion.register_forward_pre_hook(begin("loss")), t.criterion.register_forward_hook(end("loss")),
             t.optimizer.register_step_pre_hook(begin("optimizer")), t.optimizer.register_step_post_hook(end("optimizer"))]
    try:
        t0 = clock(device)
        t.step(images, labels)
        seconds = clock(device) - t0
    finally:
        for hook in hooks:
            hook.remove()
    spent["backward"] = max(0.0, seconds - spent["forward"] - spent["loss"] - spent["optimizer"])
    return dict(spent, seconds=seconds)
