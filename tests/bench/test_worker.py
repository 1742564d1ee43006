"""The fresh-process runner: results, errors and timeouts come back as statuses."""

import dataclasses

import pytest

from esseg.bench.common import Settings
from esseg.bench.worker import IsolatedRunner, run_task


def _params(method, num_classes, batch=1, crop=16):
    s = Settings(device="cpu", classes=[num_classes], batch=batch, crop=crop, embedding_dim=4, k=3, repeats=1,
                 warmup=0, threads=1, seed=0, out="unused", quick=True)
    return dict(settings=dataclasses.asdict(s), method=method, num_classes=num_classes)


@pytest.mark.slow
def test_fork_runner_returns_results_errors_and_timeouts():
    with IsolatedRunner("fork", preload=("torch", "esseg"), timeout=120) as runner:
        ok = runner.run("loss", _params("exact_ce", 10))
        assert ok["status"] == "ok" and ok["peak_bytes"] > 0 and ok["threads"] == 1
        bad = runner.run("loss", _params("no_such_loss", 10))
        assert bad["status"] == "error" and "unknown loss method" in bad["note"]
        slow = runner.run("loss", _params("exact_ce", 200_000, batch=8, crop=256), timeout=0.5)
        assert slow["status"] == "timeout"
        again = runner.run("loss", _params("knn_ce", 10))  # the server survives a killed child
        assert again["status"] == "ok"


def test_run_task_in_process_reports_errors():
    assert run_task("loss", _params("no_such_loss", 10))["status"] == "error"
    with pytest.raises(ValueError, match="unknown benchmark task"):
        run_task("nope", {})
