"""`esseg bench memory` in --quick mode (fresh processes), and the max-batch search."""

import pytest
from bench_helpers import csv_row, ratio, read_outputs, recompute

from esseg.bench.memory import find_max_batch
from esseg.cli import main


@pytest.mark.slow
def test_memory_quick_writes_rows_ratios_and_goals(tmp_path, capsys):
    out = tmp_path / "mem"
    assert main(["bench", "memory", "--quick", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "goals" in printed and "ESS peak memory at C=1284 / baseline at C=19" in printed
    rows, data = read_outputs(out, "memory")
    assert [(r["method"], r["C"]) for r in rows] == [("baseline", "19"), ("ess", "19"), ("baseline", "1284"), ("ess", "1284")]
    for r in rows:
        assert r["status"] == "ok" and r["measure"] == "train_step" and r["batch"] == "2" and r["crop"] == "32"
        peak, step, state = int(r["peak_bytes"]), int(r["step_bytes"]), int(r["state_bytes"])
        assert peak > 0 and step > 0 and peak == step + state  # peak - runtime = (peak - before) + (before - runtime)
        assert int(r["process_peak_bytes"]) > peak and r["peak_method"].startswith("VmHWM")
        assert (r["d"], r["k"]) == (("12", "7") if r["method"] == "ess" else ("", ""))
    # the activations of the step hold the (B, C, H, W) logits: the baseline's step grows with C
    assert int(csv_row(rows, dict(method="baseline", C=1284))["step_bytes"]) > int(
        csv_row(rows, dict(method="baseline", C=19))["step_bytes"])
    goal = ratio(data, "goal_ess_peak_C1284_over_baseline_C19")
    assert goal["value"] == pytest.approx(recompute(rows, goal), rel=1e-12)
    assert goal["verdict"] in ("PASS", "MISS") and goal["goal"] == "<= 1.10"
    assert ratio(data, "goal_ess_peak_C20000_over_baseline_C19")["verdict"] == "n/a"  # C=20000 not in a quick run
    same_c = ratio(data, "ess_over_baseline_C1284")
    assert same_c["value"] == pytest.approx(recompute(rows, same_c), rel=1e-12)
    assert data["settings"]["quick"] is True and data["environment"]["torch"]


@pytest.mark.slow
def test_max_batch_search_is_consistent_with_its_probes(tmp_path):
    out = tmp_path / "mb"
    args = ["bench", "memory", "--quick", "--threads", "1", "--classes", "1284", "--max-batch", "1GiB",
            "--max-batch-limit", "4", "--out", str(out)]
    assert main(args) == 0
    rows, data = read_outputs(out, "max_batch")
    assert not (out / "memory.csv").exists()
    for method in ("baseline", "ess"):
        probes = [r for r in rows if r["method"] == method and r["measure"] == "probe"]
        best = csv_row(rows, dict(method=method, measure="max_batch"))
        fitting = [int(p["batch"]) for p in probes if p["fits"] == "True"]
        assert int(best["max_batch"]) == max(fitting, default=0) and [int(p["batch"]) for p in probes][0] == 2
        for p in probes:
            assert (p["fits"] == "True") == (int(p["peak_bytes"]) <= 2**30)
        assert best["capped"] == str(int(best["max_batch"]) == 4) and best["probes"] == str(len(probes))
    goal = ratio(data, "goal_max_batch_C1284")
    assert goal["goal"] == ">= 6"
    if goal["value"] is not None:
        assert goal["value"] == pytest.approx(recompute(rows, goal))


@pytest.mark.parametrize("threshold", [0, 1, 2, 3, 5, 7, 8, 9, 64, 100, 1000])
def test_find_max_batch_doubles_then_bisects(threshold):
    probed = []

    def fits(b):
        probed.append(b)
        return b <= threshold

    best, capped = find_max_batch(fits, start=2, limit=100)
    expected = 0 if threshold < 2 else min(threshold, 100)
    assert best == expected and capped == (threshold >= 100)
    assert len(probed) == len(set(probed)) and len(probed) <= 2 * 7 + 1  # doubling + bisection, no repeats
    assert probed[0] == 2


def test_find_max_batch_start_above_limit():
    assert find_max_batch(lambda b: True, start=8, limit=4) == (0, False)
