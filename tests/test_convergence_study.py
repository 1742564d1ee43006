"""tools/convergence_study.py runs each kind of variant (a harness check, not a timing)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "convergence_study.py"


def load():
    spec = importlib.util.spec_from_file_location("convergence_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("variant", [
    ["--method", "ess"], ["--method", "ess", "--mode", "exact", "--no-normalize"], ["--method", "baseline"],
    ["--method", "linear"], ["--method", "cos", "--bias"],
])
def test_each_variant_trains_and_reports_groups(variant, capsys):
    tiny = ["--classes", "8", "--size", "32", "--val-images", "2", "--steps", "2", "--evals", "1", "--batch", "2", "--d", "4", "--k", "3"]
    results = load().main(tiny + variant)
    assert [r["step"] for r in results] == [1, 2]
    for r in results:
        assert 0 <= r["thing_mIoU"] <= 1 and 0 <= r["stuff_Acc"] <= 1 and r["num_pixels"] == 2 * 32 * 32
    assert capsys.readouterr().out.count("RESULT step=") == 2
