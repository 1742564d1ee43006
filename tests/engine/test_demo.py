"""`esseg demo` with configs/demo.yaml shrunk to seconds: report, panels and predictions."""

from engine_tiny import tiny_args
from PIL import Image

from esseg.cli import main


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
