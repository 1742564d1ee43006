"""SIGINT/SIGTERM during `esseg train` save last.pt, exit 130/143 with one line, and --resume auto continues."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from engine_tiny import tiny_args

from esseg.cli import main
from esseg.engine.train import StopOnSignal

SRC = Path(__file__).resolve().parents[2] / "src"


def test_stop_on_signal_records_the_first_and_restores_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with StopOnSignal() as stop:
        assert signal.getsignal(signal.SIGTERM) != before
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signum == signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) == before  # a second signal acts at once
    assert signal.getsignal(signal.SIGTERM) == before


def _wait_for_training(proc, metrics, timeout=120.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"train exited early ({proc.returncode}): {proc.stderr.read()}")
        if metrics.is_file() and metrics.read_text().count("\n") >= 1:
            return
        time.sleep(0.05)
    proc.kill()
    pytest.fail("training did not log its first iteration in time")


@pytest.mark.slow
@pytest.mark.parametrize("signum, status, workers", [(signal.SIGTERM, 143, 0), (signal.SIGINT, 130, 1)])
def test_signal_saves_last_checkpoint_and_resume_continues(tmp_path, capsys, signum, status, workers):
    """SIGTERM to the process; SIGINT to its whole process group, data workers included (a Ctrl-C)."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "esseg", "train", *tiny_args(out, "--iters", "1000", "--set", f"data.num_workers={workers}")]
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _wait_for_training(proc, out / "metrics.jsonl")
        if workers:
            os.killpg(proc.pid, signum)
        else:
            proc.send_signal(signum)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == status, err
    done = torch.load(out / "last.pt", weights_only=True)["iteration"]
    assert 1 <= done < 1000
    last = err.strip().splitlines()[-1]
    name = signal.Signals(signum).name
    assert last == (f"esseg: interrupted by {name} after iteration {done}; saved {out / 'last.pt'}; "
                    "continue with the same command and --resume auto"), err
    assert "Traceback" not in err and not list(out.glob(".*.tmp"))

    assert main(["train", *tiny_args(out, "--iters", "1000"), "--resume", "auto", "--set", f"train.stop_at={done + 1}"]) == 0
    assert f"resuming from {out / 'last.pt'} at iteration {done}" in capsys.readouterr().out
    assert torch.load(out / "last.pt", weights_only=True)["iteration"] == done + 1
