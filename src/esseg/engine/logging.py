"""Run logging on rank 0: a JSON-lines file ``metrics.jsonl`` and TensorBoard scalars/images.

Each line of ``metrics.jsonl`` is one record, ``{"kind": "train", "iter": ..., "loss": ...,
"ce": ..., "lr/<group>": ...}`` or ``{"kind": "eval", "iter": ..., "split": "val", "PAcc": ...,
"mAcc": ..., "mIoU": ..., "fIoU": ...}``, with ``time`` (Unix seconds) and ``train_seconds``
(the engine's time in training steps up to this record, summed across resumes: the clock of
learning curves), in standard JSON: a non-finite value (an infinite loss) is written as ``null``,
never as ``NaN``/``Infinity``. On other ranks every method is a no-op.

:class:`TrainProgress` shows training progress: a tqdm bar when stderr is a terminal, else (CI,
``2> log``) one plain line every N iterations instead of thousands of carriage-return redraws.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from esseg._io import json_dumps
from esseg.engine.run import RunFolder


def interactive() -> bool:
    """True when stderr is a terminal, where a progress bar may redraw itself in place."""
    return sys.stderr.isatty()


class TrainProgress:
    """Training progress of iterations ``start+1 .. total`` (``enabled=False`` on ranks > 0: silent).

    On a terminal (:func:`interactive`) a tqdm bar with the latest loss; otherwise one line on
    stderr every ``every`` iterations and at the last, e.g.
    ``train: iteration 20/100, loss 1.2345, 0.412 s/iteration``.
    """

    def __init__(self, start: int, total: int, every: int, enabled: bool = True):
        self.start, self.total, self.every, self.enabled = start, total, max(1, every), enabled
        self.bar = None
        if enabled and interactive():
            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)

    def update(self, done: int, loss: float, train_seconds: float) -> None:
        """Iteration ``done`` finished with ``loss``; ``train_seconds``: time in training steps so far."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        elif self.enabled and (done % self.every == 0 or done == self.total):
            rate = f", {train_seconds / done:.3g} s/iteration" if done else ""
            print(f"train: iteration {done}/{self.total}, loss {loss:.4f}{rate}", file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        """Print a line (stdout) without breaking the bar."""
        if self.enabled:
            tqdm.write(line)

    def close(self) -> None:
        """Close the bar."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RunLogger:
    """Writes training and evaluation records of one run (``enabled=False`` on ranks > 0).

    Args:
        out_dir: the run folder (a path or :class:`~esseg.engine.run.RunFolder`); its
            ``metrics.jsonl`` and ``tb/`` (TensorBoard) are written.
        enabled: log at all (rank 0) or not.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, out_dir: str | Path | RunFolder, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.writer = None
        self._file = None
        if not enabled:
            return
        run = out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
        run.path.mkdir(parents=True, exist_ok=True)
        self._file = run.metrics.open("a")
        if tensorboard:  # imported here: it pulls in ~190 modules (protobuf, ...), needed only for TensorBoard runs
            from torch.utils.tensorboard import SummaryWriter  # noqa: PLC0415

            self.writer = SummaryWriter(str(run.tensorboard))

    def _write(self, record: dict, train_seconds: float | None) -> None:
        record = {**record, "time": round(time.time(), 3)}
        if train_seconds is not None:
            record["train_seconds"] = round(train_seconds, 3)
        self._file.write(json_dumps(record) + "\n")
        self._file.flush()

    def log_train(self, iteration: int, values: dict[str, float], train_seconds: float | None = None) -> None:
        """Loss terms and learning rates (keys like ``loss``, ``ce``, ``lr/head``) at ``iteration``."""
        if not self.enabled:
            return
        self._write({"kind": "train", "iter": iteration, **values}, train_seconds)
        if self.writer:
            for key, value in values.items():
                self.writer.add_scalar(key if "/" in key else f"train/{key}", value, iteration)

    def log_eval(self, iteration: int, split: str, metrics: dict, images: list[np.ndarray] = (),
                 train_seconds: float | None = None) -> None:
        """Scalar metrics of an evaluation, plus optional ``(H, W, 3)`` uint8 prediction panels."""
        if not self.enabled:
            return
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self._write({"kind": "eval", "iter": iteration, "split": split, **scalars}, train_seconds)
        if self.writer:
            for key, value in scalars.items():
                self.writer.add_scalar(f"{split}/{key}", value, iteration)
            for i, image in enumerate(images):
                self.writer.add_image(f"{split}/prediction_{i}", image, iteration, dataformats="HWC")
            self.writer.flush()

    def close(self) -> None:
        """Flush and close the files."""
        if self._file:
            self._file.close()
            self._file = None
        if self.writer:
            self.writer.close()
            self.writer = None


__all__ = ["RunLogger", "TrainProgress", "interactive"]
