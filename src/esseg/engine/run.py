"""The run folder: one object names every file a training run keeps in ``train.out_dir``.

Layout (every reader and writer asks :class:`RunFolder` for these paths)::

    last.pt                        checkpoint of the latest iteration (esseg.engine.checkpoint)
    best.pt                        checkpoint of the best validation mIoU
    metrics.jsonl                  one JSON record per log/eval step (esseg.engine.logging)
    eval_<split>.json              all metrics of the latest evaluation on <split>
    eval_<split>_per_class.csv     its per-class IoU / accuracy / pixel counts
    tb/                            TensorBoard event files
    class_frequency.json           training images per class, cached (esseg.data.frequency)
    predictions/, panels.png, report.md   what ``esseg demo`` adds
    run.json                       what ``esseg bench accuracy`` records of the run's sessions

``last.pt``, ``best.pt`` and ``metrics.jsonl`` (:attr:`RunFolder.RUN_FILES`) mark a folder that
holds a run; :meth:`RunFolder.prepare` refuses to mix a second run into it.
``esseg eval`` writes its metrics next to the checkpoint it evaluates (:func:`checkpoint_eval_paths`).
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from esseg._io import check_output_dir, clean_stale_temps
from esseg.errors import ConfigError


class RunFolder:
    """The paths of one run folder, and its checks.

    Args:
        out_dir: the folder (``train.out_dir``); it need not exist yet.
    """

    RUN_FILES = ("last.pt", "best.pt", "metrics.jsonl")  # their presence means the folder holds a run

    def __init__(self, out_dir: str | Path):
        self.path = Path(out_dir)
        self.last = self.path / "last.pt"
        self.best = self.path / "best.pt"
        self.metrics = self.path / "metrics.jsonl"
        self.tensorboard = self.path / "tb"
        self.class_frequency = self.path / "class_frequency.json"
        self.predictions = self.path / "predictions"
        self.panels = self.path / "panels.png"
        self.report = self.path / "report.md"
        self.bench_state = self.path / "run.json"

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    def eval_json(self, split: str) -> Path:
        """``eval_<split>.json``: all metrics of the run's latest evaluation on ``split``."""
        return self.path / f"eval_{split}.json"

    def eval_csv(self, split: str) -> Path:
        """``eval_<split>_per_class.csv``: the per-class rows of that evaluation."""
        return self.path / f"eval_{split}_per_class.csv"

    def run_files(self) -> list[str]:
        """The names of :attr:`RUN_FILES` present: non-empty iff the folder holds a run."""
        return [name for name in self.RUN_FILES if (self.path / name).exists()]

    def prepare(self, resume: str | None, overwrite: bool, is_main: bool = True) -> None:
        """Check the folder before any work; refuse to mix two runs in it.

        The folder must be writable (or creatable). If it already holds a run and ``resume`` is
        not set, a ConfigError is raised unless ``overwrite``, which deletes that run's files
        (:attr:`RUN_FILES`, ``eval_*.json``/``eval_*_per_class.csv`` and the TensorBoard event
        files; nothing else). Rank 0 (``is_main``) also removes the temporary files of a save
        that was killed (:func:`esseg._io.clean_stale_temps`).
        """
        check_output_dir(self.path, "run folder")
        found = self.run_files()
        if found and resume is None and not overwrite:
            raise ConfigError(
                f"run folder {self.path} already holds a run ({', '.join(found)}); continue it with --resume auto, "
                f"start over with --overwrite (deletes that run's files) or choose another --out"
            )
        if not is_main:
            return
        if found and resume is None and overwrite:
            old = [self.path / name for name in found]
            old += [*self.path.glob("eval_*.json"), *self.path.glob("eval_*_per_class.csv"),
                    *self.tensorboard.glob("events.out.tfevents.*")]
            for path in old:
                path.unlink(missing_ok=True)
            tqdm.write(f"--overwrite: deleted {len(old)} files of the previous run in {self.path}")
        stale = clean_stale_temps(self.path)
        if stale:
            tqdm.write(f"removed {len(stale)} temporary file(s) of an interrupted save in {self.path}")

    def read_records(self) -> list[dict]:
        """The records of ``metrics.jsonl`` in order ([] without one); a line cut short by a kill is skipped."""
        if not self.metrics.is_file():
            return []
        out = []
        for line in self.metrics.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def read_eval(self, split: str) -> dict | None:
        """The metrics dict of ``eval_<split>.json``, or None when the run has not evaluated on ``split``."""
        path = self.eval_json(split)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def checkpoint_eval_paths(checkpoint: str | Path, split: str) -> tuple[Path, Path]:
    """Where ``esseg eval`` writes by default: ``<stem>_eval_<split>.json`` and ``..._per_class.csv``
    next to the checkpoint (``runs/x/best.pt`` -> ``runs/x/best_eval_val.json``), so they never
    replace the run's own ``eval_<split>.json``."""
    ckpt = Path(checkpoint)
    json_path = ckpt.with_name(f"{ckpt.stem}_eval_{split}.json")
    return json_path, per_class_csv(json_path)


def per_class_csv(json_path: str | Path) -> Path:
    """The per-class CSV that goes with a metrics JSON: ``<json stem>_per_class.csv``."""
    json_path = Path(json_path)
    return json_path.with_name(json_path.stem + "_per_class.csv")


__all__ = ["RunFolder", "checkpoint_eval_paths", "per_class_csv"]
