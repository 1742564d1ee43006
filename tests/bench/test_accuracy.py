"""`esseg bench accuracy`: the quick experiment end to end, resuming, the equal-memory batch, recipes, variants, bad input."""

import argparse
import csv
import json
from pathlib import Path

import pytest
import torch
from bench_helpers import read_outputs
from PIL import Image

from esseg.bench.accuracy import (
    RunSpec, add_arguments, build_config, choose_baseline_batch, comparisons, learning_curve, plan_runs, resolve,
)
from esseg.cli import main
from esseg.engine.config import load_config
from esseg.errors import EssegError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

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
    assert by_name["ess_C16"]["normalize"] == "classes" and float(by_name["ess_C16"]["tau"]) == 3  # the glyph recipe
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


def test_learning_curve_reads_the_engines_clock_and_resumed_evaluations_win():
    records = [
        {"kind": "train", "iter": 10, "train_seconds": 5.0},
        {"kind": "eval", "iter": 10, "mIoU": 0.1, "train_seconds": 5.0},
        {"kind": "train", "iter": 20, "train_seconds": 10.0},
        {"kind": "eval", "iter": 20, "mIoU": 0.2, "train_seconds": 10.0},  # killed before last.pt was saved
        {"kind": "train", "iter": 20, "train_seconds": 10.5},  # resumed at 10: the engine restored its clock
        {"kind": "eval", "iter": 20, "mIoU": 0.3, "train_seconds": 10.5},
    ]
    curve = learning_curve(records)
    assert [(p["iter"], p["train_seconds"], p["mIoU"]) for p in curve] == [(10, 5.0, 0.1), (20, 10.5, 0.3)]


def _settings(*flags):
    p = argparse.ArgumentParser()
    add_arguments(p)
    return resolve(p.parse_args(["--quick", *flags]))


def test_run_configs_come_from_the_glyph_recipes(tmp_path):
    s = _settings("--out", str(tmp_path))
    for c in (20, 200, 2000):
        for method in ("ess", "baseline"):
            spec = RunSpec(f"{method}_C{c}", method, c, s.batch, "full")
            cfg, recipe = build_config(s, spec), load_config(CONFIGS / f"glyph_c{c}_{method}.yaml")
            assert (cfg.model, cfg.loss, cfg.optim) == (recipe.model, recipe.loss, recipe.optim)
            assert cfg.data.options["num_classes"] == c and cfg.train.iters == s.iters and cfg.train.batch_size == s.batch
            assert cfg.data.num_workers == 0 and cfg.train.out_dir == str(tmp_path / spec.name)
            assert Path(spec.recipe).name == f"glyph_c{c}_{method}.yaml"
    # the recipe with the nearest C (log scale), k capped at C - 1
    small = RunSpec("ess_C8", "ess", 8, s.batch, "full")
    cfg = build_config(s, small)
    assert Path(small.recipe).name == "glyph_c20_ess.yaml" and (cfg.model.embedding_dim, cfg.loss.k) == (16, 7)
    mid = RunSpec("ess_C500", "ess", 500, s.batch, "full")
    assert build_config(s, mid).loss.k == 32 and Path(mid.recipe).name == "glyph_c200_ess.yaml"
    # --recipes: another folder's recipe changes the run; a missing one is a clear error
    (tmp_path / "glyph_c50_ess.yaml").write_text("loss: {tau: 0.3, k: 5}\noptim: {optimizer: sgd}\n")
    other = _settings("--recipes", str(tmp_path), "--set", "loss.margin=0.25")
    cfg = build_config(other, RunSpec("ess_C8", "ess", 8, s.batch, "full"))
    assert (cfg.loss.tau, cfg.loss.k, cfg.loss.margin, cfg.optim.optimizer) == (0.3, 5, 0.25, "sgd")
    with pytest.raises(EssegError, match="no glyph_c<C>_baseline.yaml recipe in"):
        build_config(other, RunSpec("baseline_C8", "baseline", 8, s.batch, "equal_batch"))


def test_variants_are_ess_runs_against_full_ess():
    s = _settings("--no-ablations", "--no-equal-memory", "--classes", "8", "--ablation-classes", "16",
                  "--variant", "exact", "loss.mode=exact", "--variant", "d8k3", "model.embedding_dim=8", "loss.k=3")
    runs = plan_runs(s)
    assert [r.name for r in runs] == ["ess_C8", "baseline_C8", "ess_C16", "ess_C16_exact", "ess_C16_d8k3"]
    by_name = {r.name: build_config(s, r) for r in runs}
    assert by_name["ess_C16_exact"].loss.mode == "exact" and by_name["ess_C16"].loss.mode == "knn"
    assert (by_name["ess_C16_d8k3"].model.embedding_dim, by_name["ess_C16_d8k3"].loss.k) == (8, 3)
    comps = {name: (a, b) for name, _, a, b in comparisons(s, runs)}
    assert comps["ess_minus_exact_C16"] == ("ess_C16", "ess_C16_exact") and "ess_minus_d8k3_C16" in comps


def test_rows_name_the_tail_estimate():
    from esseg.bench.accuracy import _row_base
    s = _settings("--no-ablations", "--no-equal-memory", "--classes", "16", "--variant", "tail", "loss.tail_samples=8")
    runs = {r.name: r for r in plan_runs(s)}
    modes = {name: _row_base(r, build_config(s, r))["loss_mode"] for name, r in runs.items()}
    assert modes == {"ess_C16": "knn", "baseline_C16": None, "ess_C16_tail": "knn+tail8"}


def test_variant_trains_end_to_end(tmp_path):
    out = tmp_path / "var"
    assert main(["bench", "accuracy", "--quick", "--classes", "8", "--ablation-classes", "8", "--no-ablations",
                 "--no-equal-memory", "--iters", "2", "--eval-every", "0", "--val-images", "2",
                 "--variant", "exact", "loss.mode=exact", "--out", str(out)]) == 0
    rows, data = read_outputs(out, "accuracy")
    assert [r["name"] for r in rows] == ["ess_C8", "baseline_C8", "ess_C8_exact"]
    assert all(r["status"] == "ok" and float(r["train_seconds"]) > 0 for r in rows)
    assert json.loads((out / "ess_C8_exact" / "run.json").read_text())["config"]["loss"]["mode"] == "exact"
    assert "ess_minus_exact_C8" in {c["name"] for c in data["comparisons"]}


@pytest.mark.parametrize("extra, message", [
    (["--set", "loss.nope=1"], "unknown config key 'loss.nope'"),
    (["--set", "train.iters=5"], "use --iters"),
    (["--set", "model.method=baseline"], "set per run by the harness"),
    (["--batch", "1"], "--batch must be >= 2"),
    (["--classes", "8,x"], "--classes takes comma-separated integers"),
    (["--no-equal-memory", "--baseline-batch", "2"], "--baseline-batch sets the equal-memory run"),
    (["--set", "loss.k=9"], "loss.k=9 exceeds the 7 negatives"),
    (["--variant", "random", "loss.mode=exact"], "--variant takes a NAME"),
    (["--variant", "x"], "--variant x changes nothing"),
    (["--variant", "x", "train.iters=3"], "--variant train.iters is set per run by the harness; use --iters"),
    (["--variant", "x", "loss.k=99"], "loss.k=99 exceeds the 15 negatives"),
    (["--recipes", "/nonexistent"], "no glyph_c<C>_ess.yaml recipe in /nonexistent"),
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
    assert "no CUDA GPU is available" in capsys.readouterr().err


def test_ablations_clear_what_only_the_full_method_allows(tmp_path):
    # the recipes set tail draws (C = 2000) and a pixel-length cap: the random-negatives and
    # no-normalisation ablations must still build valid configs at every C
    from esseg.bench.accuracy import ABLATIONS
    s = _settings("--out", str(tmp_path))
    for c in (20, 200, 2000):
        cfgs = {v: build_config(s, RunSpec(f"ess_C{c}_{v}", "ess", c, s.batch, v, u)) for v, (_, u) in ABLATIONS.items()}
        assert cfgs["random"].loss.mode == "random" and cfgs["random"].loss.tail_samples == 0
        assert cfgs["nonorm"].model.normalize is False and cfgs["nonorm"].model.max_pixel_length is None
        assert cfgs["nomargin"].model.max_pixel_length == 100
    assert build_config(s, RunSpec("ess_C2000", "ess", 2000, s.batch, "full")).loss.tail_samples == 32
