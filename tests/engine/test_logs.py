"""Logs: plain progress lines off a terminal, and only rank 0 of a torchrun launch prints."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from engine_tiny import tiny_args

from esseg.cli import main
from esseg.engine import commands, demo
from esseg.engine.config import load_config
from esseg.engine.distributed import is_main_process
from esseg.engine.logging import TrainProgress

SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.mark.slow
def test_training_into_a_log_file_prints_plain_lines_every_log_every_steps(tmp_path):
    log = tmp_path / "train.log"
    cmd = [sys.executable, "-m", "esseg", "train", *tiny_args(tmp_path / "run", "--iters", "6"), "--set", "train.log_every=2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(SRC)}
    with log.open("w") as stderr:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=stderr, text=True, timeout=300, env=env, cwd=tmp_path)
    text = log.read_text()
    assert proc.returncode == 0, text[-2000:]
    assert "\r" not in text
    lines = [line for line in text.splitlines() if line.startswith("train: iteration")]
    assert [line.split(",")[0] for line in lines] == [f"train: iteration {i}/6" for i in (2, 4, 6)]
    assert all(" loss " in line and "s/iteration" in line for line in lines)
    assert "trained to iteration 6" in proc.stdout


def test_progress_off_a_terminal_is_a_line_every_n_and_silent_on_other_ranks(capsys):
    progress = TrainProgress(start=0, total=7, every=3)  # pytest's stderr is not a terminal
    silent = TrainProgress(start=0, total=7, every=3, enabled=False)
    for done in range(1, 8):
        progress.update(done, 0.5, 0.1 * done)
        silent.update(done, 0.5, 0.1 * done)
    progress.close()
    silent.write("hidden")
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == [f"train: iteration {i}/7, loss 0.5000, 0.1 s/iteration" for i in (3, 6, 7)]


def test_rank_helper_follows_the_torchrun_environment(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("RANK", "1")
    assert is_main_process()  # no WORLD_SIZE: one process, as init_distributed sees it
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


def test_only_rank_0_prints_train_eval_and_demo_results(tmp_path, capsys, monkeypatch):
    metrics = {"PAcc": 0.5, "mAcc": 0.5, "mIoU": 0.25, "fIoU": 0.3, "num_valid_classes": 2}
    result = {"metrics": metrics, "iterations": 2, "seconds": 1.0, "last_checkpoint": "x/last.pt", "best_checkpoint": None}
    monkeypatch.setattr(commands, "train", lambda cfg: result)
    monkeypatch.setattr(demo, "train", lambda cfg: result)
    full = {**metrics, "class_names": ["a", "b"], "IoU": [0.2, 0.3], "Acc": [0.5, 0.5], "gt_pixels": [1, 1],
            "pred_pixels": [1, 1]}
    monkeypatch.setattr(commands, "evaluate_checkpoint", lambda *a, **k: full)
    argv_eval = ["eval", "--checkpoint", str(tmp_path / "last.pt"), "--json", str(tmp_path / "m.json")]

    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--out", str(tmp_path / "run")]) == 0
    assert main(argv_eval) == 0
    out = capsys.readouterr().out
    assert "trained to iteration 2" in out and "mIoU" in out and (tmp_path / "m.json").is_file()  # rank 0 prints

    (tmp_path / "m.json").unlink()
    monkeypatch.setenv("RANK", "1")
    assert main(["train", "--out", str(tmp_path / "run")]) == 0
    assert main(argv_eval) == 0
    assert demo.run_demo(load_config(None)) == {}
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert not (tmp_path / "m.json").exists()
