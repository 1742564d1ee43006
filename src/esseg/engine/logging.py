"""Run logging on rank 0: a JSON-lines file ``metrics.jsonl`` and TensorBoard scalars/images.

Each line of ``metrics.jsonl`` is one record, ``{"kind": "train", "iter": ..., "loss": ...,
"ce": ..., "lr/<group>": ...}`` or ``{"kind": "eval", "iter": ..., "split": "val", "PAcc": ...,
"mAcc": ..., "mIoU": ..., "fIoU": ...}``, with ``time`` (Unix seconds) and ``train_seconds``
(the engine's time in training steps up to this record, summed across resumes: the clock of
learning curves), in standard JSON: a non-finite value (an infinite loss) is written as ``null``,
never as ``NaN``/``Infinity``. On other ranks every method is a no-op.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from esseg._io import json_dumps


class RunLogger:
    """Writes training and evaluation records of one run (``enabled=False`` on ranks > 0).

    Args:
        out_dir: the run folder; ``metrics.jsonl`` and ``tb/`` (TensorBoard) go there.
        enabled: log at all (rank 0) or not.
        tensorboard: also write TensorBoard event files.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True, tensorboard: bool = True):
        self.enabled = enabled
        self.writer = None
        self._file = None
        if not enabled:
            return
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        self._file = (out_dir / "metrics.jsonl").open("a")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out_dir / "tb"))

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


__all__ = ["RunLogger"]
