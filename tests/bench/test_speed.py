"""`esseg bench speed` in --quick mode (in this process)."""

import pytest
from bench_helpers import csv_row, ratio, read_outputs, recompute

from esseg.cli import main


@pytest.mark.slow
def test_speed_quick_rows_phases_and_goals(tmp_path, capsys):
    out = tmp_path / "speed"
    assert main(["bench", "speed", "--quick", "--threads", "1", "--out", str(out)]) == 0
    assert "ESS step time / baseline step time, both at C=1284" in capsys.readouterr().out
    rows, data = read_outputs(out, "speed")
    assert len(rows) == 8  # (baseline, ess) x (19, 1284) x (train_step, inference)
    assert {(r["method"], r["C"], r["measure"]) for r in rows} == {
        (m, c, x) for m in ("baseline", "ess") for c in ("19", "1284") for x in ("train_step", "inference")}
    for r in rows:
        assert r["status"] == "ok" and r["repeats"] == "2"
        assert 0 < float(r["seconds_min"]) <= float(r["seconds"]) <= float(r["seconds_max"])
        if r["measure"] == "train_step":
            assert all(float(r[f"{p}_s"]) >= 0 for p in ("forward", "loss", "backward", "optimizer"))
    for name in ("goal_ess_step_C1284_over_baseline_C19", "goal_ess_over_baseline_step_C1284",
                 "goal_ess_over_baseline_inference_C1284", "ess_step_C1284_over_baseline_C19"):
        r = ratio(data, name)
        assert r["value"] == pytest.approx(recompute(rows, r), rel=1e-12)
    assert ratio(data, "goal_ess_step_C20000_over_baseline_C19")["verdict"] == "n/a"


def test_speed_skips_what_cannot_fit(tmp_path):
    out = tmp_path / "skip"
    args = ["bench", "speed", "--quick", "--classes", "19,150", "--baseline-max-classes", "100",
            "--crop", "16", "--batch", "2", "--repeats", "1", "--warmup", "0", "--out", str(out)]
    assert main(args) == 0
    rows, data = read_outputs(out, "speed")
    skipped = csv_row([dict(r, status="ok") for r in rows], dict(method="baseline", C=150, measure="train_step"))
    assert "--baseline-max-classes 100" in skipped["note"]
    assert {r["status"] for r in rows if r["method"] == "ess"} == {"ok"}
    r = ratio(data, "ess_over_baseline_step_C150")
    assert r["value"] is None and "skipped" in r["note"]
    # a memory limit below the baseline's logits skips it too
    assert main([*args, "--mem-limit", "1KiB", "--classes", "19"]) == 0
    rows, _ = read_outputs(out, "speed")
    assert {r["status"] for r in rows if r["method"] == "baseline"} == {"skipped"}
