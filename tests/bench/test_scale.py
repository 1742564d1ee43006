"""`esseg bench scale` in --quick mode: the harness, not performance (no timing asserts)."""

import pytest
from bench_helpers import csv_row, ratio, read_outputs, recompute

from esseg.cli import main


@pytest.mark.slow
def test_scale_quick_rows_ratios_and_value_goals(tmp_path, capsys):
    out = tmp_path / "scale"
    args = ["bench", "scale", "--quick", "--threads", "1", "--backend", "ivf", "--recall-steps", "2",
            "--knn-queries", "300", "--crop", "32", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "value goals" in printed and "min negative recall@k" in printed
    rows, data = read_outputs(out, "scale")
    keys = {(r["method"], r["C"], r["measure"]) for r in rows}
    assert {("baseline", "19", "train_step"), ("baseline", "19", "inference"), ("ess", "19", "train_step"),
            ("ess", "400", "inference"), ("default", "400", "knn"), ("ess", "400", "recall")} <= keys
    assert {r["status"] for r in rows} == {"ok"}
    step = csv_row(rows, dict(method="ess", C=400, measure="train_step"))
    assert step["backend"] == "ivf" and 0 < float(step["knn_recall"]) <= 1
    assert float(step["seconds"]) >= float(step["step_s"]) > 0 and float(step["index_build_s"]) > 0
    assert 0.9 < float(step["loss_ratio"]) <= 1.0 + 1e-6  # missed negatives only lower the loss
    assert 0 < float(csv_row(rows, dict(method="ess", C=400, measure="inference"))["top1_agreement"]) <= 1
    recall = [r for r in rows if r["measure"] == "recall"]
    assert [r["iteration"] for r in recall] == ["0"]  # R = 100: only the first refresh within 2 steps
    r = ratio(data, "ess_step_C400_over_baseline_C19")
    assert r["value"] == pytest.approx(recompute(rows, r), rel=1e-12)
    assert ratio(data, "goal_ess_step_C1000000")["verdict"] == "n/a"
    assert {g["goal"] for g in data["value_goals"]} == {">= 0.9", "<= 0.02", ">= 0.99"}


def test_scale_unknown_backend_is_one_line(tmp_path, capsys):
    assert main(["bench", "scale", "--quick", "--backend", "annoy", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["esseg: error: unknown knn backend 'annoy'; known backends: auto, torch, faiss, clustered, ivf, "
                   "faiss_ivf, faiss_hnsw"]
