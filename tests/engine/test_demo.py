"""`esseg demo` with configs/demo.yaml shrunk to seconds: report, panels and predictions."""

import torch
from engine_tiny import tiny_args
from PIL import Image

from esseg.cli import build_parser, main
from esseg.engine.commands import _config_from_args
from esseg.engine.demo import find_demo_config, run_demo


def test_demo_writes_report_panels_and_predictions(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", *tiny_args(out), "--set", "train.num_vis=2"]) == 0
    printed = capsys.readouterr().out
    head = ["PAcc", "mAcc", "mIoU", "fIoU", "thing_mIoU", "thing_Acc", "stuff_mIoU", "stuff_Acc"]
    assert head in [line.split() for line in printed.splitlines()]
    assert "report:" in printed
    report = (out / "report.md").read_text()
    assert "| PAcc | mAcc | mIoU | fIoU |" in report and "![predictions](panels.png)" in report
    assert "By class group: thing mIoU " in report and "; stuff mIoU " in report
    assert Image.open(out / "panels.png").mode == "RGB"
    written = sorted(p.name for p in (out / "predictions").iterdir())
    assert written == [f"val_{i:03d}_{kind}.png" for i in range(2) for kind in ("color", "label", "overlay")]


def test_demo_reports_the_engines_training_clock(tmp_path):
    """run_demo's train_seconds is the engine's time in training steps (as in last.pt), not wall time."""
    out = tmp_path / "demo"
    args = build_parser().parse_args(["demo", *tiny_args(out), "--set", "train.num_vis=0"])
    result = run_demo(_config_from_args(args, find_demo_config()))
    saved = torch.load(out / "last.pt", map_location="cpu", weights_only=True)["train_seconds"]
    assert result["train_seconds"] == saved
    assert 0 < result["train_seconds"] < result["seconds"]
    assert f"{result['train_seconds']:.0f} s in training steps" in (out / "report.md").read_text()
