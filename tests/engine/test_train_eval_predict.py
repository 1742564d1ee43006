"""train -> eval -> predict through `esseg.cli.main` on tiny glyph scenes."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from esseg.cli import main
from esseg.engine.predict import label_image

from engine_tiny import NUM_CLASSES, tiny_args


def test_train_writes_checkpoints_and_logs(trained_run):
    for name in ("last.pt", "best.pt", "metrics.jsonl", "eval_val.json", "eval_val_per_class.csv"):
        assert (trained_run / name).is_file(), name
    assert any((trained_run / "tb").iterdir())
    ckpt = torch.load(trained_run / "last.pt", weights_only=True)
    assert ckpt["iteration"] == 2 and ckpt["model_config"]["num_classes"] == NUM_CLASSES
    assert {"model", "optimizer", "scheduler", "scaler", "rng", "config", "class_names"} <= set(ckpt)
    assert set(ckpt["rng"][0]) == {"python", "numpy", "torch", "cuda"}
    assert len(ckpt["class_names"]) == NUM_CLASSES and ckpt["config"]["train"]["iters"] == 2
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["kind"] == "train"]
    assert [r["iter"] for r in train] == [1, 2]
    assert {"loss", "ce", "reg", "lr/backbone", "lr/head", "lr/class_embeddings"} <= set(train[0])
    assert train[0]["lr/backbone"] == pytest.approx(0.1 * train[0]["lr/head"])
    (final,) = [r for r in records if r["kind"] == "eval"]
    assert final["iter"] == 2 and 0 <= final["mIoU"] <= 1
    # glyph scenes' class groups: thing/stuff metrics equal group_metrics on the per-class numbers
    from esseg.metrics import group_metrics

    full = json.loads((trained_run / "eval_val.json").read_text())
    num_stuff = sum(name.startswith("stuff") for name in full["class_names"])
    expected = group_metrics(full, {"thing": range(num_stuff, NUM_CLASSES), "stuff": range(num_stuff)})
    assert expected and all(final[key] == pytest.approx(value) for key, value in expected.items())


def test_eval_prints_table_and_writes_json_and_csv(trained_run, tmp_path, capsys):
    out_json = tmp_path / "m.json"
    assert main(["eval", "--checkpoint", str(trained_run / "last.pt"), "--json", str(out_json), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    groups = ["thing_mIoU", "thing_Acc", "stuff_mIoU", "stuff_Acc"]  # glyph scenes' class groups
    assert printed.splitlines()[0].split() == ["PAcc", "mAcc", "mIoU", "fIoU", *groups]
    metrics = json.loads(out_json.read_text())
    assert metrics == json.loads((trained_run / "eval_val.json").read_text())  # same model, same data
    with (tmp_path / "m_per_class.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == NUM_CLASSES and rows[0]["class_name"].startswith("stuff:")


def test_predict_writes_label_color_overlay(trained_run, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(images / "b.jpg")  # not a multiple of 32
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(trained_run / "best.pt"), str(images), "--out", str(out), "--device", "cpu"]) == 0
    assert "wrote 2 predictions" in capsys.readouterr().out
    label = Image.open(out / "b_label.png")
    assert label.mode == "L" and label.size == (50, 40) and np.asarray(label).max() < NUM_CLASSES
    for stem in ("a", "b"):
        assert Image.open(out / f"{stem}_color.png").mode == "RGB"
        assert Image.open(out / f"{stem}_overlay.png").size == Image.open(images / f"{stem}.{'png' if stem == 'a' else 'jpg'}").size


def test_label_png_is_16_bit_above_255_classes(tmp_path):
    label = np.array([[0, 300], [1283, 7]])
    label_image(label, 1284).save(tmp_path / "l.png")
    back = Image.open(tmp_path / "l.png")
    assert back.mode.startswith("I") and np.array_equal(np.asarray(back), label)
    assert label_image(label % 200, 200).mode == "L"


@pytest.mark.parametrize("command", ["train", "eval", "predict", "demo"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: esseg " + command in capsys.readouterr().out


def test_baseline_and_data_workers_use_the_same_loop(tmp_path, capsys):
    out = tmp_path / "baseline"
    argv = ["train", *tiny_args(out), "--method", "baseline", "--iters", "1", "--set", "data.num_workers=1"]
    assert main(argv) == 0
    assert "trained to iteration 1" in capsys.readouterr().out
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert ckpt["model_config"]["embedding_dim"] is None
    assert [g["name"] for g in ckpt["optimizer"]["param_groups"]] == ["backbone", "head"]


def test_unnormalised_ablation_trains_and_reloads(tmp_path):
    from esseg.engine.checkpoint import load_checkpoint, model_from_checkpoint

    out = tmp_path / "raw"
    assert main(["train", *tiny_args(out, "--set", "model.normalize=false")]) == 0
    ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["model_config"]["normalize"] is False
    model = model_from_checkpoint(ckpt)
    assert model.normalize is False
    emb = model(torch.randn(1, 3, 32, 32))
    assert not torch.allclose(emb.norm(dim=1), torch.ones(1, 32, 32))
