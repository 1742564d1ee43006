"""RunFolder owns the run folder's layout: every file a run writes is one it names."""

import json

import pytest

from esseg.engine.run import RunFolder, checkpoint_eval_paths, per_class_csv
from esseg.errors import ConfigError


def test_a_training_run_writes_exactly_the_files_its_run_folder_names(trained_run):
    run = RunFolder(trained_run)
    named = {run.last, run.best, run.metrics, run.eval_json("val"), run.eval_csv("val"), run.tensorboard}
    assert {p for p in trained_run.iterdir()} == named  # (glyph scenes record no class_frequency.json)
    assert list(run.tensorboard.glob("events.out.tfevents.*"))
    records = run.read_records()
    assert [r["kind"] for r in records] == ["train", "train", "eval"]
    assert run.read_eval("val")["mIoU"] == pytest.approx(records[-1]["mIoU"])
    assert run.run_files() == ["last.pt", "best.pt", "metrics.jsonl"]


def test_reading_a_run_that_was_cut_short(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert run.read_records() == [] and run.read_eval("val") is None and run.run_files() == []
    run.path.mkdir()
    run.metrics.write_text('{"kind": "train", "iter": 1}\n{"kind": "eval", "iter": 2, "mI')  # killed mid-line
    assert run.read_records() == [{"kind": "train", "iter": 1}]
    run.eval_json("test").write_text(json.dumps({"mIoU": 0.5}))
    assert run.read_eval("test") == {"mIoU": 0.5} and run.read_eval("val") is None
    assert run.run_files() == ["metrics.jsonl"]


def test_prepare_refuses_another_run_and_overwrite_deletes_only_its_files(tmp_path, capsys):
    run = RunFolder(tmp_path / "run")
    run.prepare(resume=None, overwrite=False)  # a new folder is fine
    run.path.mkdir()
    for path in (run.last, run.metrics, run.eval_json("val"), run.eval_csv("val"), run.path / "notes.txt"):
        path.write_text("x")
    run.tensorboard.mkdir()
    (run.tensorboard / "events.out.tfevents.1.host").write_text("x")
    stale = run.path / ".last.pt.k1ll3d.tmp"
    stale.write_text("x")
    with pytest.raises(ConfigError, match=r"already holds a run \(last.pt, metrics.jsonl\).*--resume auto.*--overwrite"):
        run.prepare(resume=None, overwrite=False)
    run.prepare(resume="auto", overwrite=False, is_main=False)  # resuming: allowed; other ranks clean nothing
    assert stale.exists()
    run.prepare(resume=None, overwrite=True)
    assert sorted(p.name for p in run.path.iterdir()) == ["notes.txt", "tb"] and not list(run.tensorboard.iterdir())
    out = capsys.readouterr().out
    assert "--overwrite: deleted 5 files of the previous run" in out and "removed 1 temporary file(s)" in out


def test_eval_outputs_of_a_checkpoint_sit_beside_it(tmp_path):
    json_path, csv_path = checkpoint_eval_paths(tmp_path / "runs" / "best.pt", "test")
    assert json_path == tmp_path / "runs" / "best_eval_test.json"
    assert csv_path == tmp_path / "runs" / "best_eval_test_per_class.csv" == per_class_csv(json_path)
    assert json_path != RunFolder(tmp_path / "runs").eval_json("test")  # never the run's own evaluation
