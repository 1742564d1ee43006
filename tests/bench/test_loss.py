"""`esseg bench loss` in --quick mode (fresh processes)."""

import pytest
from bench_helpers import ratio, read_outputs, recompute

from esseg.cli import main


@pytest.mark.slow
def test_loss_quick_rows_ratios_and_goal(tmp_path, capsys):
    out = tmp_path / "loss"
    assert main(["bench", "loss", "--quick", "--threads", "1", "--out", str(out)]) == 0
    assert "exact_cross_entropy / F.cross_entropy on logits at C=1284, peak memory" in capsys.readouterr().out
    rows, data = read_outputs(out, "loss")
    methods = ["knn_ce", "ess_loss", "exact_ce", "softmax_ce"]
    assert [(r["method"], r["C"]) for r in rows] == [(m, c) for c in ("19", "1284") for m in methods]
    for r in rows:
        assert r["status"] == "ok" and r["num_pixels"] == str(2 * 32 * 32) and r["d"] == "12"
        assert int(r["peak_bytes"]) > 0 and 0 < float(r["seconds_min"]) <= float(r["seconds"]) <= float(r["seconds_max"])
        assert r["k"] == ("7" if r["method"] in ("knn_ce", "ess_loss") else "")
    goal = ratio(data, "goal_exact_ce_over_softmax_ce_peak_C1284")
    assert goal["value"] == pytest.approx(recompute(rows, goal), rel=1e-12) and goal["verdict"] in ("PASS", "MISS")
    r = ratio(data, "knn_ce_over_softmax_ce_time_C19")
    assert r["value"] == pytest.approx(recompute(rows, r), rel=1e-12)
