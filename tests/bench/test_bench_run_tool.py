"""tools/bench_run.py trains exactly the config `esseg bench accuracy` builds for a --variant run."""

import importlib.util
from pathlib import Path

from esseg.bench import accuracy


def _tool():
    path = Path(__file__).resolve().parents[2] / "tools" / "bench_run.py"
    spec = importlib.util.spec_from_file_location("bench_run", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tool_config_equals_the_harness_variant_config(tmp_path, monkeypatch):
    tool, seen = _tool(), []
    monkeypatch.setattr(tool, "train", seen.append)
    tool.main(["--classes", "200", "--iters", "40", "--eval-every", "20", "--seed", "2", "--out", str(tmp_path / "r"),
               "model.unit_pixels=false", "loss.tau=2"])
    (cfg,) = seen
    args = accuracy.add_arguments.__globals__["argparse"].ArgumentParser()
    accuracy.add_arguments(args)
    s = accuracy.resolve(args.parse_args(["--classes", "200", "--iters", "40", "--eval-every", "20", "--seed", "2",
                                          "--batch", "8", "--variant", "v", "model.unit_pixels=false", "loss.tau=2",
                                          "--no-ablations", "--ablation-classes", "200"]))
    spec = next(r for r in accuracy.plan_runs(s) if r.name == "ess_C200_v")
    want = accuracy.build_config(s, spec)
    want.train.out_dir = str(tmp_path / "r")
    assert cfg.to_dict() == want.to_dict()
    assert cfg.model.unit_pixels is False and cfg.loss.tau == 2 and cfg.train.seed == 2
    # the timing flags change only the stop step and the log interval
    seen.clear()
    tool.main(["--classes", "200", "--iters", "40", "--eval-every", "20", "--seed", "2", "--out", str(tmp_path / "r"),
               "--stop-at", "10", "--log-every", "5", "model.unit_pixels=false", "loss.tau=2"])
    (timed,) = seen
    assert (timed.train.stop_at, timed.train.log_every) == (10, 5)
    timed.train.stop_at, timed.train.log_every = want.train.stop_at, want.train.log_every
    assert timed.to_dict() == want.to_dict()
