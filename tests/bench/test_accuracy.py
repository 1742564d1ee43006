"""`esseg bench accuracy`: the quick experiment end to end, resuming, the equal-memory batch, bad input."""

import csv
import json

import pytest
import torch
from bench_helpers import read_outputs
from PIL import Image

from esseg.bench.accuracy import choose_baseline_batch, learning_curve, wall_seconds
from esseg.cli import main
from esseg.errors import EssegError

QUICK_RUNS = {"ess_C8", "baseline_C8", "ess_C16", "baseline_C16", "baseline_C16_eqmem",
              "ess_C16_random", "ess_C16_nonorm", "ess_C16_nomargin"}


def _csv(path):
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _cell(value):
    return "" if value is None else str(value)


def _no_training(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


@pytest.mark.slow
def test_quick_experiment_reports_and_skips_finished_runs(tmp_path, capsys, monkeypatch):
    out = tmp_path / "acc"
    args = ["bench", "accuracy", "--quick", "--baseline-batch", "2", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "kNN - random negatives, ESS C=16" in printed and "ESS - baseline, C=8" in printed

    rows, data = read_outputs(out, "accuracy")  # CSV/JSON columns agree, the PNG decodes, no temporary files
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == QUICK_RUNS
    for row, json_row in zip(rows, data["rows"]):
        assert row == {c: _cell(json_row[c]) for c in data["columns"]}
        assert row["status"] == "ok" and row["iters"] == "4" and row["reused"] == "False"
        assert float(row["seconds"]) >= float(row["train_seconds"]) > 0
        for key in ("PAcc", "mIoU", "fIoU", "thing_mIoU"):
            assert 0 <= float(row[key]) <= 1
    assert by_name["baseline_C16_eqmem"]["batch"] == "2" and by_name["baseline_C16_eqmem"]["batch_rule"] == "--baseline-batch"
    assert by_name["ess_C16_random"]["loss_mode"] == "random"
    assert by_name["ess_C16_nonorm"]["normalize"] == "False"
    assert float(by_name["ess_C16_nomargin"]["reg_weight"]) == 0
    assert data["equal_memory"]["rule"] == "--baseline-batch"

    comps = {c["name"]: c for c in data["comparisons"]}
    assert set(comps) == {"ess_minus_baseline_C8", "ess_minus_baseline_C16", "ess_minus_baseline_eqmem_C16",
                          "ess_minus_random_C16", "ess_minus_nonorm_C16", "ess_minus_nomargin_C16"}
    for c in comps.values():
        a, b = by_name[c["a"]], by_name[c["b"]]
        assert c["delta_mIoU"] == pytest.approx(100 * (float(a["mIoU"]) - float(b["mIoU"])), abs=1e-9)
        assert c["seconds_ratio"] == pytest.approx(float(a["seconds"]) / float(b["seconds"]), rel=1e-9)

    curves = _csv(out / "curves.csv")
    for name, row in by_name.items():
        pts = [p for p in curves if p["name"] == name]
        assert [int(p["iter"]) for p in pts] == [2, 4]  # --eval-every 2
        assert 0 < float(pts[0]["train_seconds"]) <= float(pts[1]["train_seconds"]) == float(row["train_seconds"])
        assert float(pts[-1]["mIoU"]) == float(row["mIoU"])
    classes = _csv(out / "class_iou.csv")
    assert len([c for c in classes if c["name"] == "ess_C16"]) == 16
    assert all(float(c["frequency"]) > 0 for c in classes)
    for png in ("curves.png", "class_iou.png"):
        with Image.open(out / png) as im:
            im.load()
            assert im.format == "PNG" and min(im.size) > 100

    # rerun: every finished run is reused, nothing is trained again
    marks = {name: (out / name / "eval_val.json").stat().st_mtime_ns for name in QUICK_RUNS}
    monkeypatch.setattr("esseg.engine.train.train", _no_training)
    assert main(args) == 0
    assert capsys.readouterr().out.count("finished earlier, not trained again") == len(QUICK_RUNS)
    assert marks == {name: (out / name / "eval_val.json").stat().st_mtime_ns for name in QUICK_RUNS}
    again, _ = read_outputs(out, "accuracy")
    assert [dict(r, reused="") for r in again] == [dict(r, reused="") for r in rows]
    assert {r["reused"] for r in again} == {"True"}

    # other settings into the same folders: refused before anything runs
    assert main([*args, "--iters", "5"]) == 2
    err = capsys.readouterr().err
    assert "started with other settings" in err and "train.iters=4 (now 5)" in err


@pytest.mark.slow
def test_equal_memory_batch_is_measured_once(tmp_path, capsys, monkeypatch):
    out = tmp_path / "eqmem"
    args = ["bench", "accuracy", "--quick", "--classes", "8", "--no-ablations", "--iters", "2", "--eval-every", "0",
            "--val-images", "4", "--out", str(out)]
    assert main(args) == 0
    assert "memory probe baseline batch=2" in capsys.readouterr().out
    memory = json.loads((out / "equal_memory.json").read_text())
    assert memory["rule"] == "measured" and memory["ess"]["status"] == "ok" and memory["budget_bytes"] > 0
    rows, data = read_outputs(out, "accuracy")
    by_name = {r["name"]: r for r in rows}
    assert set(by_name) == {"ess_C8", "baseline_C8", "baseline_C8_eqmem"}
    eq = by_name["baseline_C8_eqmem"]
    assert eq["batch_rule"] == "measured" and 2 <= int(eq["batch"]) <= 4
    assert data["equal_memory"]["baseline_batch"] == int(eq["batch"])
    if eq["batch"] == "4":  # the baseline fits ESS's batch: the equal-batch run stands in for it
        assert eq["note"].startswith("same run as baseline_C8") and eq["mIoU"] == by_name["baseline_C8"]["mIoU"]
    assert int(by_name["ess_C8"]["peak_bytes"]) == memory["budget_bytes"]
    # a rerun reuses the measurement and the runs
    monkeypatch.setattr("esseg.engine.train.train", _no_training)
    assert main(args) == 0
    assert "reusing the measurement" in capsys.readouterr().out


def test_choose_baseline_batch_bisects_within_ess_peak():
    calls = []

    def measure(method, batch):  # ESS: 100 bytes at batch 16; baseline: 30 bytes per image
        calls.append((method, batch))
        return {"status": "ok", "peak_bytes": 100 if method == "ess" else 30 * batch}

    found = choose_baseline_batch(measure, 16)
    assert found["baseline_batch"] == 3 and found["budget_bytes"] == 100 and found["note"] is None
    assert calls == [("ess", 16), ("baseline", 2), ("baseline", 4), ("baseline", 3)]
    # a lower bound above the budget skips the measurement
    calls.clear()
    found = choose_baseline_batch(measure, 16, lower_bound=lambda b: 1000)
    assert found["baseline_batch"] == 2 and "does not fit" in found["note"]
    assert calls == [("ess", 16)] and found["probes"][0]["status"] == "skipped"
    # the same batch fits: the equal-memory run is the equal-batch run
    found = choose_baseline_batch(lambda m, b: {"status": "ok", "peak_bytes": 100 if m == "ess" else b}, 8)
    assert found["baseline_batch"] == 8 and "fits batch 8" in found["note"]
    with pytest.raises(EssegError, match="--baseline-batch"):
        choose_baseline_batch(lambda m, b: {"status": "oom", "note": "out of memory"}, 8)


def test_learning_curve_clock_skips_evaluations_and_restarts_on_resume():
    sessions = [{"start": 100.0, "start_iter": 0, "end": None}, {"start": 200.0, "start_iter": 10, "end": 215.0}]
    records = [
        {"kind": "train", "iter": 5, "time": 105.0},
        {"kind": "train", "iter": 10, "time": 110.0},
        {"kind": "eval", "iter": 10, "mIoU": 0.1, "time": 113.0},  # 3 s of evaluation, not counted
        {"kind": "train", "iter": 20, "time": 123.0},
        {"kind": "eval", "iter": 20, "mIoU": 0.2, "time": 125.0},  # killed before last.pt was saved
        {"kind": "train", "iter": 20, "time": 211.0},  # resumed at 10
        {"kind": "eval", "iter": 20, "mIoU": 0.3, "time": 214.0},
    ]
    curve = learning_curve(records, sessions)
    assert [(p["iter"], p["train_seconds"], p["mIoU"]) for p in curve] == [(10, 10.0, 0.1), (20, 21.0, 0.3)]
    assert wall_seconds(records, sessions) == pytest.approx(25.0 + 15.0)


@pytest.mark.parametrize("extra, message", [
    (["--set", "loss.nope=1"], "unknown config key 'loss.nope'"),
    (["--set", "train.iters=5"], "use --iters"),
    (["--set", "model.method=baseline"], "set per run by the harness"),
    (["--batch", "1"], "--batch must be >= 2"),
    (["--classes", "8,x"], "--classes takes comma-separated integers"),
    (["--no-equal-memory", "--baseline-batch", "2"], "--baseline-batch sets the equal-memory run"),
    (["--set", "loss.k=9"], "loss.k=9 exceeds the 7 negatives"),
])
def test_bad_input_exits_2_and_writes_nothing(extra, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["bench", "accuracy", "--quick", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("esseg: error:") and message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_gpu_exits_2(tmp_path, capsys):
    assert main(["bench", "accuracy", "--quick", "--device", "cuda", "--out", str(tmp_path / "out")]) == 2
    assert "no CUDA device" in capsys.readouterr().err
