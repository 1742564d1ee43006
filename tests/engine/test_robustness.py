"""Failures a user can act on give one line and exit 2; nothing is half-written or silently wrong."""

import errno
import json
import pathlib

import numpy as np
import pytest
import torch
from cli_checks import run_error
from engine_tiny import tiny_args
from PIL import Image

import esseg._io as esseg_io
from esseg.cli import error_line, main
from esseg.engine.data import eval_loader
from esseg.engine.evaluate import evaluate, write_metrics
from esseg.engine.logging import RunLogger
from esseg.engine.predict import read_rgb
from esseg.errors import DatasetError


def _records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _no_nan_json(text: str):
    """json.loads that refuses the non-standard NaN / Infinity / -Infinity."""
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def _disk_full_after(monkeypatch, method: str, nbytes: int = 3):
    """Make ``pathlib.Path.<method>`` write ``nbytes`` bytes and then fail with ENOSPC."""
    def full(self, data, *args, **kwargs):
        with open(self, "wb") as f:
            f.write((data.encode() if isinstance(data, str) else data)[:nbytes])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(pathlib.Path, method, full)


# --------------------------------------------------------------------- resume and run folders


def test_resume_with_more_iterations_trains_the_extra_steps_at_positive_lr(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_args(out)]) == 0
    assert main(["train", *tiny_args(out), "--iters", "4", "--resume", "auto"]) == 0
    assert f"resuming from {out / 'last.pt'} at iteration 2" in capsys.readouterr().out
    extra = [r for r in _records(out) if r["kind"] == "train" and r["iter"] > 2]
    assert [r["iter"] for r in extra] == [3, 4]
    for record in extra:
        lrs = {k: v for k, v in record.items() if k.startswith("lr/")}
        assert lrs and all(v > 0 for v in lrs.values()), record
    # the poly schedule now runs to 4: step 3 uses base_lr * (1 - 2/4) ** power
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["scheduler"]["total_iters"] == 4 and ckpt["iteration"] == 4
    head = next(k for k in extra[0] if k.startswith("lr/"))
    group = next(g for g in ckpt["optimizer"]["param_groups"] if f"lr/{g['name']}" == head)
    assert extra[0][head] == pytest.approx(group["initial_lr"] * 0.5 ** group["poly_power"])


def test_resume_auto_says_it_found_nothing(tmp_path, capsys):
    out = tmp_path / "fresh"
    assert main(["train", *tiny_args(out, "--iters", "1"), "--resume", "auto"]) == 0
    assert f"--resume auto: no {out / 'last.pt'} yet; starting a new run" in capsys.readouterr().out


def test_training_into_another_runs_folder_is_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *tiny_args(out)]) == 0
    before = (out / "last.pt").read_bytes()
    line = run_error(capsys, ["train", *tiny_args(out, "--seed", "1")])
    assert f"run folder {out} already holds a run (last.pt, best.pt, metrics.jsonl)" in line and "--overwrite" in line
    assert (out / "last.pt").read_bytes() == before  # untouched

    (out / "notes.txt").write_text("mine")
    assert main(["train", *tiny_args(out, "--seed", "1"), "--overwrite"]) == 0
    assert [r["iter"] for r in _records(out) if r["kind"] == "train"] == [1, 2]  # the old run's log is gone
    assert (out / "notes.txt").read_text() == "mine"
    assert torch.load(out / "last.pt", weights_only=True)["config"]["train"]["seed"] == 1


def test_stale_temporary_checkpoint_is_removed_at_the_next_start(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".last.pt.k1ll3d.tmp"  # what atomic_write leaves when the process is killed
    stale.write_bytes(b"x" * 100)
    assert main(["train", *tiny_args(out, "--iters", "1")]) == 0
    assert not stale.exists()
    assert "removed 1 temporary file(s) of an interrupted save" in capsys.readouterr().out
    assert not list(out.glob(".*.tmp"))


@pytest.mark.parametrize("make, message", [
    (lambda p: p.write_text("x"), "is a file, not a folder"),
    (lambda p: None, "is not writable (Read-only file system"),
])
def test_train_out_checked_before_training(tmp_path, capsys, monkeypatch, make, message):
    out = tmp_path / "out"
    make(out)
    if message.startswith("is not writable"):
        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")
        monkeypatch.setattr(esseg_io.tempfile, "mkstemp", read_only)
    assert message in run_error(capsys, ["train", *tiny_args(out)])


# ------------------------------------------------------------------ strict JSON, atomic writes


def test_metrics_jsonl_is_standard_json(tmp_path):
    logger = RunLogger(tmp_path, tensorboard=False)
    logger.log_train(1, {"loss": float("inf"), "reg": float("nan"), "lr/head": 0.01})
    logger.log_eval(1, "val", {"mIoU": float("nan"), "PAcc": 0.5})
    logger.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    train, evaluation = (_no_nan_json(line) for line in lines)
    assert train["loss"] is None and train["reg"] is None and train["lr/head"] == 0.01
    assert evaluation["mIoU"] is None and evaluation["PAcc"] == 0.5


def _metrics():
    return {"mIoU": float("nan"), "class_names": ["a"], "IoU": [0.5], "Acc": [None], "gt_pixels": [3], "pred_pixels": [4]}


def test_write_metrics_is_atomic_and_standard(tmp_path, monkeypatch):
    json_path, csv_path = tmp_path / "m.json", tmp_path / "m.csv"
    write_metrics(_metrics(), json_path, csv_path)
    assert _no_nan_json(json_path.read_text())["mIoU"] is None
    assert csv_path.read_text().splitlines()[1] == "0,a,0.500000,,3,4"
    old = json_path.read_text()
    _disk_full_after(monkeypatch, "write_text")
    with pytest.raises(OSError) as info:
        write_metrics({**_metrics(), "mIoU": 0.25}, json_path, csv_path)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(json_path)
    assert json_path.read_text() == old  # the previous file, not a truncated one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.csv", "m.json"]  # no temporary left


def test_eval_on_a_full_disk_is_one_line_and_leaves_no_json(trained_run, tmp_path, capsys, monkeypatch):
    json_path = tmp_path / "e.json"
    _disk_full_after(monkeypatch, "write_text")
    line = run_error(capsys, ["eval", "--checkpoint", str(trained_run / "last.pt"), "--json", str(json_path), "--device", "cpu"])
    assert line == f"esseg: error: No space left on device: {json_path}; free some disk space or write elsewhere"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--json", "--csv"])
def test_eval_output_that_is_a_folder_is_refused_before_evaluating(trained_run, tmp_path, capsys, monkeypatch, flag):
    import esseg.engine.evaluate as evaluate_module

    monkeypatch.setattr(evaluate_module, "evaluate_checkpoint", lambda *a, **k: pytest.fail("evaluated first"))
    line = run_error(capsys, ["eval", "--checkpoint", str(trained_run / "last.pt"), flag, str(tmp_path)])
    assert f"{flag} file {tmp_path} is a folder; give a file path" in line


def test_predict_writes_pngs_atomically(trained_run, tmp_path, capsys, monkeypatch):
    image = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (10, 200, 30)).save(image)
    out = tmp_path / "pred"
    save = Image.Image.save

    def fail_on_overlay(self, fp, *args, **kwargs):
        if ".in_overlay.png." in str(fp):
            save(self, fp, *args, **kwargs)  # the bytes reach the disk, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", fail_on_overlay)
    line = run_error(capsys, ["predict", "--checkpoint", str(trained_run / "last.pt"), str(image), "--out", str(out), "--device", "cpu"])
    assert f"No space left on device: {out / 'in_overlay.png'}; free some disk space" in line
    assert sorted(p.name for p in out.iterdir()) == ["in_color.png", "in_label.png"]  # no partial overlay, no temp


def test_predict_out_that_is_a_file_is_refused(trained_run, tmp_path, capsys):
    image, out = tmp_path / "in.png", tmp_path / "out.png"
    Image.new("RGB", (8, 8)).save(image)
    out.write_text("x")
    line = run_error(capsys, ["predict", "--checkpoint", str(trained_run / "last.pt"), str(image), "--out", str(out)])
    assert f"--out folder {out} is a file, not a folder" in line


# ---------------------------------------------------------------------- images given to predict


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    grey16 = np.array([[0, 32896], [65535, 257]], dtype=np.uint16)  # 0, 128, 255, 1 in 8 bits
    Image.fromarray(grey16).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    rgb = read_rgb(tmp_path / "g16.png")
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[..., 0].tolist() == [[0, 128], [255, 1]] and (rgb[..., 0] == rgb[..., 2]).all()

    Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32)).save(tmp_path / "f.tif")
    assert read_rgb(tmp_path / "f.tif")[..., 1].tolist() == [[0, 128], [255, 64]]
    Image.fromarray(np.array([[0.0, 1000.0]], dtype=np.float32)).save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"float image .*big.tif has values in \[0, 1000\]; expected \[0, 1\] or \[0, 255\]"):
        read_rgb(tmp_path / "big.tif")
    Image.new("RGB", (2, 1), (7, 8, 9)).save(tmp_path / "rgb.png")
    assert read_rgb(tmp_path / "rgb.png").tolist() == [[[7, 8, 9], [7, 8, 9]]]


def test_decompression_bomb_is_one_line(trained_run, tmp_path, capsys, monkeypatch):
    image = tmp_path / "bomb.png"
    Image.new("RGB", (64, 64)).save(image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 4096 pixels > 2 x 100: PIL raises
    line = run_error(capsys, ["predict", "--checkpoint", str(trained_run / "last.pt"), str(image), "--out", str(tmp_path / "o")])
    assert f"image {image} refused: Image size (4096 pixels) exceeds limit" in line
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


# ------------------------------------------------------------------------------ CLI plumbing


def test_error_line_maps_known_outside_errors():
    assert error_line(OSError(errno.EISDIR, "Is a directory", "/x")) == "Is a directory: /x; the path is a folder; give a file path"
    assert "read-only" in error_line(OSError(errno.EROFS, "Read-only file system", "/y"))
    assert error_line(MemoryError()).startswith("out of memory")
    assert error_line(Image.DecompressionBombError("Image size (9 pixels) exceeds limit")).startswith("Image size")
    assert error_line(RuntimeError("a bug")) is None
    assert error_line(KeyError("a bug")) is None


def test_bugs_keep_their_traceback_and_esseg_debug_reraises(monkeypatch, capsys):
    import esseg.engine.commands as commands

    def bug(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(commands, "cmd_predict", bug)
    with pytest.raises(ZeroDivisionError):
        main(["predict", "--checkpoint", "x.pt", "y.png", "--out", "o"])

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "/full/f")

    monkeypatch.setattr(commands, "cmd_predict", full)
    assert main(["predict", "--checkpoint", "x.pt", "y.png", "--out", "o"]) == 2
    monkeypatch.setenv("ESSEG_DEBUG", "1")
    with pytest.raises(OSError):
        main(["predict", "--checkpoint", "x.pt", "y.png", "--out", "o"])


@pytest.mark.parametrize("argv", [
    ["eval", "--checkpoint", "x.pt", "--batch-size", "0"],
    ["eval", "--checkpoint", "x.pt", "--batch-size", "-1"],
    ["data", "inspect", "--dataset", "cityscapes", "--top", "-1"],
])
def test_counts_are_checked_when_parsing(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "must be" in err and "Traceback" not in err


# ------------------------------------------------------------------------------- data loaders


class _Sized(torch.utils.data.Dataset):
    """Images of two sizes with fixed labels; sample ``bad`` raises a DatasetError."""

    def __init__(self, bad=None):
        self.sizes, self.bad = [(32, 32), (40, 56), (32, 32), (24, 40)], bad

    def __len__(self):
        return len(self.sizes)

    def __getitem__(self, i):
        if i == self.bad:
            raise DatasetError(f"labels must be in [0, 3); found 9 in sample_{i}.png")
        h, w = self.sizes[i]
        g = torch.Generator().manual_seed(i)
        return torch.randn(3, h, w, generator=g), torch.randint(0, 3, (h, w), generator=g)


def test_evaluation_batches_of_mixed_sizes_equal_one_by_one():
    from esseg import create_model

    torch.manual_seed(0)
    model = create_model("deeplabv3plus", "mobilenet_v2", 3, embedding_dim=4).eval()
    one = evaluate(model, eval_loader(_Sized(), 1), 3, 255, "cpu")
    mixed = evaluate(model, eval_loader(_Sized(), 3), 3, 255, "cpu")
    assert one == mixed and sum(one["gt_pixels"]) == sum(h * w for h, w in _Sized().sizes)


def test_worker_dataset_error_is_the_original_line():
    loader = eval_loader(_Sized(bad=1), 1, num_workers=1)
    with pytest.raises(DatasetError) as info:
        list(loader)
    assert str(info.value) == "labels must be in [0, 3); found 9 in sample_1.png"


def test_train_on_a_full_disk_is_one_line_and_leaves_no_temp(tmp_path, capsys, monkeypatch):
    import esseg.engine.checkpoint as checkpoint_module

    def full_disk(state, path):  # what torch.save's zip writer raises when a write fails
        pathlib.Path(path).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(checkpoint_module.torch, "save", full_disk)
    out = tmp_path / "run"
    line = run_error(capsys, ["train", *tiny_args(out, "--iters", "1")])
    assert line.startswith(f"esseg: error: writing failed (is the disk full or a file size limit set?): {out / 'best.pt'};")
    assert not list(out.glob(".*.tmp")) and not (out / "best.pt").exists()
