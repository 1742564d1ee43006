"""The training loop: iteration-based SGD with per-group poly LR, for ESS and the baseline alike.

Order of operations per iteration (``train_step``)::

    for each of accum_steps micro-batches:
        outputs = model(images)                      # autocast on CUDA
        loss = criterion(outputs, labels, class_embeddings[, tau=model.temperature()]) / accum_steps
        stop if loss is not finite (on any rank)
        scaler.scale(loss).backward()                # DDP all-reduces grads on the last micro-batch
    scaler.step(optimizer); scaler.update(); scheduler.step()

Around it, :func:`train` logs every ``log_every`` iterations, evaluates every ``eval_every``
iterations and at the end, and writes ``last.pt`` (every ``save_every`` iterations, at every
evaluation and when the run ends) and ``best.pt`` (best validation mIoU). Everything a resumed
run needs is in the checkpoint, and the data order depends only on (seed, iteration), so a CPU
run resumed from ``last.pt`` ends with exactly the weights of an uninterrupted run. A resumed run
may be longer than the first (``--iters``): the poly schedule then decays to the new total.

The run folder (its layout: :class:`esseg.engine.run.RunFolder`): training into a folder that
holds another run is refused unless resuming or ``train.overwrite`` (which deletes that run's
files first); temporary files of a save that was killed are removed at the start. Progress: a
bar on a terminal, else a plain line every ``log_every`` iterations (rank 0 only).
SIGINT/SIGTERM let the current step finish, save ``last.pt`` and raise
:class:`TrainingInterrupted` (the CLI exits 130/143); a second signal stops at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from esseg import ESSLoss, PolyLR, SoftmaxCrossEntropyLoss, __version__, build_optimizer, set_backbone_bn_momentum
from esseg.data.frequency import training_class_frequency
from esseg.engine.checkpoint import (
    check_model_matches, create_model_checked, load_checkpoint, load_model_state, plain, rng_state,
    save_checkpoint, set_rng_state,
)
from esseg.engine.config import Config
from esseg.engine.data import build_split, eval_loader, train_loader
from esseg.engine.distributed import DistInfo, all_true, broadcast_buffers, cleanup_distributed, init_distributed
from esseg.engine.evaluate import evaluate, predict_batch, summary, write_metrics
from esseg.engine.logging import RunLogger, TrainProgress, interactive
from esseg.engine.run import RunFolder
from esseg.viz.images import colorize, denormalize, get_palette, panel
from esseg.errors import CheckpointError, ConfigError, DatasetError, EssegError
from esseg.metrics import SUMMARY_KEYS, frequency_group_metrics, group_keys
from esseg.models.class_encoders import read_class_list


class NonFiniteLossError(EssegError):
    """The loss became NaN or infinite; training stopped without saving."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT/SIGTERM stopped training after ``last.pt`` was saved.

    ``message`` says where it saved and how to resume; ``exit_code`` is ``128 + signal number``
    (130 for SIGINT, 143 for SIGTERM), the status the CLI exits with.
    """

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.message, self.exit_code = message, 128 + int(signum)


class StopOnSignal:
    """SIGINT/SIGTERM set ``signum`` instead of stopping the process, so the loop can save and
    stop between steps (``install``/``restore``, or use it as a context manager). The first
    signal restores the previous handlers, so a second one acts at once (KeyboardInterrupt /
    termination). Does nothing outside the main thread."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame) -> None:
        self.signum = signum
        self.restore()

    def install(self) -> "StopOnSignal":
        """Catch SIGINT/SIGTERM from now on (in the main thread)."""
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def restore(self) -> None:
        """Put the previous handlers back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}

    def __enter__(self) -> "StopOnSignal":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: Config, num_classes: int, dataset=None) -> nn.Module:
    """The network ``cfg.model`` describes, for ``num_classes`` classes (ESS or baseline).

    A class encoder's descriptions come from ``model.class_attributes`` / ``model.text_features``
    or, for ``attributes``, from the training ``dataset`` (see :func:`class_encoder_options`).
    """
    m = cfg.model
    extra = {"normalize": m.normalize} if m.method == "ess" else {}
    if m.method == "ess" and m.class_init != "random":
        extra.update(class_init=m.class_init)
    if m.method == "ess" and not m.unit_pixels:
        extra.update(unit_pixels=False)
    if m.method == "ess" and m.max_pixel_length is not None:
        extra.update(max_pixel_length=m.max_pixel_length)
    if m.method == "ess" and m.learn_temperature:
        extra.update(learn_temperature=True, tau=cfg.loss.tau, max_scale=m.max_scale)
    if m.class_encoder != "table":
        extra.update(class_encoder=m.class_encoder, class_encoder_options=class_encoder_options(cfg, num_classes, dataset))
    return create_model_checked(
        arch=m.arch, encoder=m.encoder, num_classes=num_classes,
        embedding_dim=m.embedding_dim if m.method == "ess" else None,
        encoder_weights=m.encoder_weights, output_stride=m.output_stride, **extra,
    )


def class_encoder_options(cfg: Config, num_classes: int, dataset=None) -> dict:
    """``create_model``'s ``class_encoder_options`` for ``cfg.model``: its options plus the descriptions.

    ``attributes``: the token lists of ``model.class_attributes`` (a TSV), else ``dataset.class_attributes``,
    else ``<data.root>/class_attributes.tsv``. ``text``: ``model.text_features``.
    """
    m = cfg.model
    options = dict(m.class_encoder_options)
    if m.class_encoder == "text":
        options["text_features"] = m.text_features
    elif m.class_encoder == "attributes":
        tsv = m.class_attributes or (Path(cfg.data.root) / "class_attributes.tsv" if cfg.data.root else None)
        if m.class_attributes is None and getattr(dataset, "class_attributes", None) is not None:
            options["class_attributes"] = dataset.class_attributes
        elif tsv is not None and Path(tsv).is_file():
            options["class_attributes"] = read_class_list(tsv, num_classes)[1]
        else:
            where = f" (no {tsv})" if tsv is not None else ""
            raise ConfigError(f"model.class_encoder=attributes needs class descriptions: dataset {cfg.data.dataset!r} has no "
                              f"class_attributes{where}; pass model.class_attributes=FILE.tsv (lines id<TAB>token token ...)")
    return options


def build_criterion(cfg: Config, num_classes: int, ignore_index: int) -> nn.Module:
    """``ESSLoss`` (method ess) or ``SoftmaxCrossEntropyLoss`` (baseline) from ``cfg.loss``."""
    if cfg.model.method == "baseline":
        return SoftmaxCrossEntropyLoss(ignore_index=ignore_index)
    lo = cfg.loss
    for key in ("k", "warmup_k"):
        value = getattr(lo, key)
        if lo.mode != "exact" and value is not None and value > num_classes - 1:
            raise ConfigError(
                f"loss.{key}={value} exceeds the {num_classes - 1} negatives a {num_classes}-class dataset has "
                f"(k nearest classes other than the target); use loss.{key} <= {num_classes - 1} or loss.mode=exact"
            )
    return ESSLoss(k=lo.k, tau=lo.tau, margin=lo.margin, reg_weight=lo.reg_weight, ignore_index=ignore_index,
                   mode=lo.mode, query_stride=lo.query_stride, backend=lo.backend,
                   index_refresh_every=lo.index_refresh_every, tail_samples=lo.tail_samples)


def negatives_schedule(step: int, k: int, warmup_k: int | None, warmup_steps: int) -> int:
    """Negatives per pixel at 0-based training step ``step``: ``loss.warmup_k`` falling linearly to ``loss.k``.

    ``k(t) = round(warmup_k + (k - warmup_k) * t / warmup_steps)`` for ``t < warmup_steps``, then ``k``
    (no warm-up when ``warmup_k`` is None or ``warmup_steps`` is 0). A pure function of the step, so a
    resumed run continues the schedule exactly.
    """
    if warmup_k is None or warmup_steps <= 0 or step >= warmup_steps:
        return k
    return int(round(warmup_k + (k - warmup_k) * step / warmup_steps))


def resolve_resume(resume: str | None, run: RunFolder) -> Path | None:
    """The checkpoint to resume from: ``None``, ``"auto"`` (the run folder's ``last.pt`` if it exists) or a path."""
    if resume is None:
        return None
    if resume == "auto":
        return run.last if run.last.is_file() else None
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"resume checkpoint {path} not found (use --resume auto to continue from <out>/last.pt)")
    return path


def check_input_size(images: torch.Tensor, net: nn.Module) -> None:
    """ConfigError, one line, when training images (B, 3, H, W) are not multiples of the network's
    input multiple (``net.input_multiple``: 16 for DeepLabV3+ at output stride 16). Prediction pads
    any size; training does not (padding would need ignored label pixels), so the crop must fit."""
    m = getattr(net, "input_multiple", 1)
    h, w = images.shape[-2:]
    if h % m or w % m:
        fit = max(m, (min(h, w) // m) * m)
        raise ConfigError(
            f"training images are {h}x{w} but this network takes heights and widths that are multiples of {m}: "
            f"pass --crop-size {fit} (or set data.crop_size to a multiple of {m})"
        )


def train_step(model, criterion, optimizer, scaler, batches, device, accum_steps: int = 1, amp: bool = False,
               train_classes: torch.Tensor | None = None) -> dict:
    """One optimiser step over ``accum_steps`` micro-batches from the iterator ``batches``.

    ``model`` may be DDP-wrapped: gradients are synchronised only on the last micro-batch.
    ``train_classes`` (ESS only; int64 class ids in increasing order): the loss sees only these
    classes (their embeddings, labels renumbered to positions in it), e.g. without the classes a
    zero-shot split holds out, which then are not even negatives (inductive zero-shot).
    Returns the float loss terms (``loss`` and ``criterion.terms``, averaged over micro-batches).
    Raises :class:`NonFiniteLossError` before any backward pass if a loss is NaN/inf on any rank,
    and before the optimiser step if a gradient is (:func:`check_finite_gradients`; with a
    gradient scaler enabled the scaler skips such steps itself), so weights never turn NaN.
    """
    net = getattr(model, "module", model)
    optimizer.zero_grad(set_to_none=True)
    totals: dict[str, float] = {}
    for micro in range(accum_steps):
        images, labels = next(batches)
        check_input_size(images, net)
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        last = micro == accum_steps - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with torch.autocast(device.type, enabled=amp):
                outputs = model(images)
            class_embeddings = net.class_embeddings() if net.is_embedding else None
            if train_classes is not None and class_embeddings is not None:
                class_embeddings, labels = class_embeddings[train_classes], _renumber(labels, train_classes, criterion.ignore_index)
            tau = net.temperature() if net.is_embedding else None  # a learned temperature, else None
            loss = criterion(outputs.float(), labels, class_embeddings, **({"tau": tau} if tau is not None else {}))
            value = float(loss.detach())
            if not all_true(math.isfinite(value), device):
                terms = ", ".join(f"{k}={float(v):.4g}" for k, v in criterion.terms.items())
                raise NonFiniteLossError(f"training loss is not finite (loss={value:.4g}; {terms})")
            scaler.scale(loss / accum_steps).backward()
        for key, v in {"loss": value, **{k: float(t) for k, t in criterion.terms.items()}}.items():
            totals[key] = totals.get(key, 0.0) + v / accum_steps
    if not scaler.is_enabled():
        check_finite_gradients(net, totals["loss"])
    scaler.step(optimizer)
    scaler.update()
    return totals


def check_finite_gradients(model: torch.nn.Module, loss: float) -> None:
    """Raise :class:`NonFiniteLossError` naming the first parameter whose gradient holds NaN/inf.

    One pass over the gradients (``sum_p ||g_p||`` is finite iff every gradient is; only scalars
    are allocated); the names are looked up only when it is not. Under DDP every rank holds the same
    reduced gradients, so every rank raises alike.
    """
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None]
    if not named:
        return
    total = torch.stack([n.float() for n in torch._foreach_norm([g for _, g in named])]).sum()
    if math.isfinite(float(total)):
        return
    first = next(name for name, g in named if not bool(torch.isfinite(g).all()))
    raise NonFiniteLossError(f"gradients are not finite though the loss is (loss={loss:.4g}; first in {first}; "
                             "weights not updated; BatchNorm over very few values is a common cause: try a larger "
                             "data.crop_size or train.batch_size)")


def _renumber(labels: torch.Tensor, classes: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Labels as positions in the sorted id list ``classes`` (``ignore_index`` kept); every label must be in it."""
    pos = torch.searchsorted(classes, labels.clamp(min=0))
    return torch.where(labels == ignore_index, labels, pos.clamp(max=len(classes) - 1))


@torch.no_grad()
def prediction_panels(model, dataset, num: int, device, ignore_index: int, palette, amp: bool = False) -> list[np.ndarray]:
    """``image | ground truth | prediction`` strips (uint8 HWC) for the first ``num`` samples."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(min(num, len(dataset))):
        image, label = dataset[i]
        pred = predict_batch(model, image[None].to(device), amp=amp)[0].cpu()
        out.append(panel([[denormalize(image), colorize(label, palette, ignore_index), colorize(pred, palette)]]))
    model.train(was_training)
    return out


def _gather_rng(info: DistInfo) -> list:
    """Every rank's RNG state, in rank order (a collective call under DDP)."""
    if not info.enabled:
        return [rng_state()]
    states = [None] * info.world_size
    dist.all_gather_object(states, rng_state())
    return states


def train(cfg: Config) -> dict:
    """Train (and periodically evaluate) the model ``cfg`` describes; see the module docstring.

    Runs in one process, or in each of the processes torchrun starts (DDP, detected from
    ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``). Only rank 0 logs and writes files.

    Returns:
        ``{"out_dir", "iterations", "num_classes", "last_checkpoint", "best_checkpoint",
        "best_mIoU", "metrics" (latest evaluation summary or None), "device", "seconds",
        "train_seconds" (time in ``train_step`` summed across resumes, also in the checkpoint and
        every ``metrics.jsonl`` record)}``.
    """
    info, device = init_distributed(cfg.train.device)
    try:
        return _train(cfg, info, device)
    finally:
        cleanup_distributed()


def build_optimizer_step(cfg: Config, model: nn.Module) -> torch.optim.Optimizer:
    """The engine's two optimiser steps, in order: set the backbone's BatchNorm momentum to
    ``optim.backbone_bn_momentum`` (paper: 0.01; :func:`esseg.optim.set_backbone_bn_momentum`),
    then ``build_optimizer`` with the other ``optim.*`` keys."""
    options = dataclasses.asdict(cfg.optim)
    set_backbone_bn_momentum(model, options.pop("backbone_bn_momentum"))
    return build_optimizer(model, **options)


def _train(cfg: Config, info: DistInfo, device: torch.device) -> dict:
    t = cfg.train
    run = RunFolder(t.out_dir)
    out_dir = run.path
    start_time = time.time()
    if t.num_threads:
        torch.set_num_threads(t.num_threads)
    if t.sync_bn and info.enabled and device.type != "cuda":
        raise ConfigError("train.sync_bn needs CUDA devices; set train.sync_bn=false for CPU runs")

    resume_path = resolve_resume(t.resume, run)
    run.prepare(t.resume, t.overwrite, info.is_main)
    if info.is_main and t.resume == "auto" and resume_path is None:
        tqdm.write(f"--resume auto: no {run.last} yet; starting a new run")

    # ---- data, model, loss, optimiser
    seed_everything(t.seed)
    train_set = build_split(cfg, cfg.data.train_split, train=True)
    val_set = build_split(cfg, cfg.data.val_split, train=False)
    num_classes, ignore_index = train_set.num_classes, train_set.ignore_index
    if val_set.num_classes != num_classes:
        raise DatasetError(f"{cfg.data.dataset}: train split has {num_classes} classes but val split {val_set.num_classes}")
    class_names = [str(c) for c in train_set.classes]
    palette = get_palette(getattr(train_set, "palette", None), num_classes)
    d = cfg.data  # images per class, counted by every rank (no rank idles at a collective meanwhile)
    source = {"dataset": d.dataset, "root": d.root, "split": d.train_split, "options": d.options}
    class_frequency = training_class_frequency(d.class_frequency, train_set, run.class_frequency, source,
                                               progress=info.is_main and interactive())

    model = build_model(cfg, num_classes, train_set).to(device)
    unseen = set(getattr(train_set, "unseen_classes", None) or [])  # held out of training (zero-shot split)
    train_classes = (torch.tensor([c for c in range(num_classes) if c not in unseen], device=device)
                     if unseen and cfg.model.method == "ess" else None)
    criterion = build_criterion(cfg, num_classes - len(unseen) if train_classes is not None else num_classes, ignore_index)
    if t.sync_bn and info.enabled:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = build_optimizer_step(cfg, model)
    scheduler = PolyLR(optimizer, total_iters=t.iters)
    use_amp = t.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)
    seed_everything(t.seed + info.rank)  # ranks draw different dropout masks; DDP syncs the weights

    # ---- resume
    start_iter, best_miou, metrics = 0, None, None
    train_seconds = 0.0  # time in train_step (data, forward, backward, step), summed across resumes
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        check_model_matches(ckpt, model.config, resume_path)
        load_model_state(model, ckpt["model"], resume_path)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "criterion" in ckpt:  # the loss's refresh state (ESSLoss above 4096 classes)
            criterion.load_state_dict(ckpt["criterion"])
        # --iters may have grown since the checkpoint: decay to the new total, from this iteration's lr
        scheduler.total_iters = t.iters
        for group, lr in zip(optimizer.param_groups, scheduler.get_lr()):
            group["lr"] = lr
        if use_amp and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_iter, best_miou, metrics = ckpt["iteration"], ckpt.get("best_mIoU"), ckpt.get("metrics")
        train_seconds = float(ckpt.get("train_seconds") or 0.0)
        rng = ckpt.get("rng") or []
        if len(rng) == info.world_size:
            set_rng_state(rng[info.rank])
        else:  # resumed with another number of processes: fresh per-rank streams
            seed_everything(t.seed + info.rank + 1000 * start_iter)
        if info.is_main:
            tqdm.write(f"resuming from {resume_path} at iteration {start_iter}")
    if info.is_main and hasattr(criterion, "search_backend") and cfg.loss.mode != "exact":
        tqdm.write(f"kNN search: {criterion.search_backend(num_classes, device)} (loss.backend={cfg.loss.backend}, C={num_classes}; "
                   "knn_recall and index_build_s are logged when the index is used)")

    ddp_model = model
    if info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    pin = device.type == "cuda"
    batches = iter(train_loader(train_set, t.batch_size, t.seed, info.rank, info.world_size,
                                start_iter * t.accum_steps, cfg.data.num_workers, pin))
    val_loader = eval_loader(val_set, t.eval_batch_size, info.rank, info.world_size, cfg.data.num_workers, pin)
    logger = RunLogger(run, enabled=info.is_main, tensorboard=t.tensorboard)
    last_path, best_path = run.last, run.best
    last_saved = start_iter if resume_path is not None else None

    def checkpoint(iteration: int) -> dict:
        return {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "criterion": criterion.state_dict(), "scaler": scaler.state_dict(), "rng": _gather_rng(info),
            "iteration": iteration,
            "config": cfg.to_dict(), "model_config": plain(model.config), "class_names": class_names,
            "palette": torch.from_numpy(palette.copy()), "ignore_index": ignore_index,
            "best_mIoU": best_miou, "metrics": metrics, "esseg_version": __version__, "class_frequency": class_frequency,
            "train_seconds": train_seconds,
        }

    # ---- the loop
    stop_at = t.stop_at or t.iters
    model.train()
    # a bar on a terminal; in a log file (CI, `2> log`) a plain line every log_every iterations; rank 0 only
    progress = TrainProgress(start_iter, stop_at, t.log_every or max(1, stop_at // 10), enabled=info.is_main)
    stop = StopOnSignal().install()  # SIGINT/SIGTERM: finish the step, save last.pt, stop
    try:
        warmup = cfg.model.method == "ess" and cfg.loss.warmup_k is not None and cfg.loss.warmup_steps > 0
        for it in range(start_iter, stop_at):
            if warmup:
                criterion.k = negatives_schedule(it, cfg.loss.k, cfg.loss.warmup_k, cfg.loss.warmup_steps)
            try:
                tick = time.perf_counter()
                values = train_step(ddp_model, criterion, optimizer, scaler, batches, device, t.accum_steps, use_amp,
                                    train_classes)
                train_seconds += time.perf_counter() - tick
            except NonFiniteLossError as err:
                kept = f"last good checkpoint: {last_path} (iteration {last_saved})" if last_saved is not None else "no checkpoint was written yet"
                raise NonFiniteLossError(f"{err} at iteration {it + 1}; stopped, {kept}; try a lower optim.lr") from None
            lrs = {f"lr/{g.get('name', i)}": g["lr"] for i, g in enumerate(optimizer.param_groups)}
            scheduler.step()
            done = it + 1
            progress.update(done, values["loss"], train_seconds)
            if t.log_every and (done % t.log_every == 0 or done == 1):
                logger.log_train(done, {**values, **lrs, **({"k": criterion.k} if warmup else {})}, train_seconds)

            do_eval = (t.eval_every and done % t.eval_every == 0) or done == t.iters
            if do_eval:
                broadcast_buffers(model)  # every rank evaluates rank 0's BatchNorm statistics
                full = evaluate(model, val_loader, num_classes, ignore_index, device, class_names, amp=use_amp,
                                class_groups=getattr(val_set, "class_groups", None))
                if class_frequency is not None:
                    full.update(frequency_group_metrics(full, class_frequency))
                metrics = summary(full)
                panels = []
                if info.is_main and t.tensorboard and t.num_vis:
                    panels = prediction_panels(model, val_set, t.num_vis, device, ignore_index, palette, use_amp)
                logger.log_eval(done, cfg.data.val_split, metrics, panels, train_seconds)
                if info.is_main:
                    shown = [*SUMMARY_KEYS, *group_keys(metrics)]
                    progress.write(f"iter {done}: " + "  ".join(f"{k} {100 * metrics[k]:.2f}" for k in shown))
                    write_metrics(full, run.eval_json(cfg.data.val_split), run.eval_csv(cfg.data.val_split))
                if best_miou is None or metrics["mIoU"] > best_miou:
                    best_miou = metrics["mIoU"]
                    state = checkpoint(done)
                    if info.is_main:
                        save_checkpoint(state, best_path)
            interrupted = not all_true(stop.signum is None, device)  # every rank stops at the same step
            if do_eval or (t.save_every and done % t.save_every == 0) or done == stop_at or interrupted:
                state = checkpoint(done)
                if info.is_main:
                    save_checkpoint(state, last_path)
                last_saved = done
            if interrupted:
                signum = stop.signum or signal.SIGTERM
                raise TrainingInterrupted(signum, (
                    f"interrupted by {signal.Signals(signum).name} after iteration {done}; saved {last_path}; "
                    f"continue with the same command and --resume auto"
                ))
    finally:
        stop.restore()
        progress.close()
        logger.close()
    done = max(start_iter, stop_at)
    return {
        "out_dir": str(out_dir), "iterations": done, "num_classes": num_classes,
        "last_checkpoint": str(last_path), "best_checkpoint": str(best_path) if best_miou is not None else None,
        "best_mIoU": best_miou, "metrics": metrics, "device": str(device), "seconds": time.time() - start_time,
        "train_seconds": train_seconds,
    }


__all__ = [
    "NonFiniteLossError", "StopOnSignal", "TrainingInterrupted", "build_criterion", "build_model", "build_optimizer_step",
    "class_encoder_options", "resolve_resume", "seed_everything", "train", "train_step",
]
