"""A 3000-class `folder` dataset with label values above 255 through `esseg train -> eval -> predict`."""

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from cli_checks import run_error
from esseg.cli import main
from esseg.engine.predict import save_prediction
from esseg.metrics import frequency_groups

NUM_CLASSES = 3000
VALUES = (0, 7, 256, 1000, 2999)  # class ids; 65535 = ignore (the default above 255 classes)


def write_split(root, split, count, seed):
    rng = np.random.default_rng(seed)
    labels = []
    for i in range(count):
        label = np.full((32, 32), 65535, np.uint16)
        for k, value in enumerate(rng.choice(VALUES, size=3, replace=False)):
            label[:, 8 * k : 8 * k + 8] = value  # three class stripes, the rest ignored
        image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / "images" / split / f"{split}{i}.jpg")
        Image.fromarray(label).save(root / "labels" / split / f"{split}{i}.png")  # 16-bit PNG
        labels.append(label.astype(np.int64))
    return labels


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("folder3000")
    (root / "classes.txt").write_text("".join(f"class_{c}\n" for c in range(NUM_CLASSES)))
    train = write_split(root, "train", 4, seed=0)
    val = write_split(root, "val", 2, seed=1)
    return root, train, val


def tiny(out, *extra):
    return ["--iters", "2", "--batch-size", "2", "--crop-size", "32", "--device", "cpu", "--out", str(out),
            "--set", "model.embedding_dim=4", "loss.k=3", "train.tensorboard=false", "train.eval_batch_size=2", *extra]


@pytest.mark.slow
def test_3000_classes_train_eval_predict_keep_ids_above_255(folder_root, tmp_path, capsys):
    root, train, val = folder_root
    out = tmp_path / "run"
    assert main(["train", "--dataset", "folder", "--data-root", str(root), *tiny(out)]) == 0

    # the checkpoint records the images per class, counted from the 16-bit label files
    ckpt = torch.load(out / "last.pt", weights_only=True)
    expected = [sum(int((lab == c).any()) for lab in train) for c in range(NUM_CLASSES)]
    assert ckpt["class_frequency"] == expected and ckpt["ignore_index"] == 65535
    assert sum(expected[c] for c in (256, 1000, 2999)) > 0
    assert json.loads((out / "class_frequency.json").read_text())["class_frequency"] == expected
    during = json.loads((out / "eval_val.json").read_text())  # the evaluation at the end of training
    assert during["train_images"] == expected and during["frequency_thresholds"] == [10, 100]

    # eval: ground-truth pixel counts per class equal the val label files exactly (ids > 255 included)
    capsys.readouterr()
    metrics_path = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--json", str(metrics_path), "--device", "cpu",
                 "--freq-thresholds", "1,3"]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads(metrics_path.read_text())
    gt = np.bincount(np.concatenate([v[v != 65535] for v in val]), minlength=NUM_CLASSES)
    assert metrics["gt_pixels"] == gt.tolist() and len(metrics["IoU"]) == NUM_CLASSES
    assert any(metrics["gt_pixels"][c] > 0 for c in (256, 1000, 2999))
    groups = frequency_groups(expected, (1, 3))
    assert metrics["frequency_group"] == groups and metrics["train_images"] == expected
    assert metrics["frequency_thresholds"] == [1, 3] and metrics["unseen_classes"] == groups.count("unseen")
    for name in ("rare", "common", "frequent", "unseen"):
        ious = [iou for iou, g in zip(metrics["IoU"], groups) if g == name and iou is not None]
        assert metrics[f"{name}_mIoU"] == (pytest.approx(sum(ious) / len(ious)) if ious else None)
    shown = printed.splitlines()[0].split()
    assert shown[:4] == ["PAcc", "mAcc", "mIoU", "fIoU"]
    assert [k for k in shown[4:]] == [f"{g}_mIoU" for g in ("rare", "common", "frequent", "unseen") if metrics[f"{g}_mIoU"] is not None]
    assert "classes by training images:" in printed
    with (tmp_path / "eval_per_class.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == NUM_CLASSES and rows[1000]["class_name"] == "class_1000"
    assert int(rows[1000]["gt_pixels"]) == gt[1000] and int(rows[1000]["train_images"]) == expected[1000]
    assert rows[2999]["frequency_group"] == groups[2999]

    # predict: 16-bit label PNGs with ids in [0, 3000)
    assert main(["predict", "--checkpoint", str(out / "last.pt"), str(root / "images" / "val"), "--out", str(tmp_path / "pred"),
                 "--device", "cpu"]) == 0
    with Image.open(tmp_path / "pred" / "val0_label.png") as im:
        assert im.mode.startswith("I;16") or im.mode == "I"
        pred = np.array(im)
    assert pred.dtype == np.uint16 and pred.shape == (32, 32) and int(pred.max()) < NUM_CLASSES
    # ... and the writer keeps ids above 255 whatever this barely trained model predicts
    ids = np.array([[0, 255], [256, 2999]])
    palette = ckpt["palette"].numpy()
    label_png, color_png, _ = save_prediction(tmp_path / "ids", "x", np.zeros((2, 2, 3), np.uint8), ids, NUM_CLASSES, palette)
    np.testing.assert_array_equal(np.array(Image.open(label_png)), ids)
    np.testing.assert_array_equal(np.array(Image.open(color_png))[1, 1], palette[2999])


def test_training_stops_with_one_line_on_an_unpaired_image(folder_root, tmp_path, capsys):
    root, _, _ = folder_root
    broken = tmp_path / "broken"
    for path in root.rglob("*"):
        if path.is_file():
            target = broken / path.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (broken / "labels/train/train1.png").unlink()
    line = run_error(capsys, ["train", "--dataset", "folder", "--data-root", str(broken), *tiny(tmp_path / "run")])
    assert "train1.jpg has no label" in line


def test_class_frequency_none_skips_it_and_eval_reports_no_groups(folder_root, tmp_path, capsys):
    root, _, _ = folder_root
    out = tmp_path / "run"
    args = tiny(out, "data.class_frequency=none")
    assert main(["train", "--dataset", "folder", "--data-root", str(root), *args]) == 0
    assert torch.load(out / "last.pt", weights_only=True)["class_frequency"] is None
    assert not (out / "class_frequency.json").exists()
    line = run_error(capsys, ["eval", "--checkpoint", str(out / "last.pt"), "--device", "cpu", "--freq-thresholds", "10"])
    assert "--freq-thresholds must be two integers" in line
    metrics_path = tmp_path / "eval.json"
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--device", "cpu", "--json", str(metrics_path)]) == 0
    assert "rare_mIoU" not in json.loads(metrics_path.read_text())
    # the counts can come from an inspect report of the training split instead
    report = tmp_path / "train_report.json"
    assert main(["data", "inspect", "--dataset", "folder", "--data-root", str(root), "--json", str(report)]) == 0
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--device", "cpu", "--json", str(metrics_path),
                 "--class-frequency", str(report)]) == 0
    metrics = json.loads(metrics_path.read_text())
    assert metrics["train_images"] == [c["images"] for c in json.loads(report.read_text())["class_pixels"]]
    assert metrics["rare_classes"] + metrics["unseen_classes"] == NUM_CLASSES


def test_images_of_different_sizes_without_crop_size_say_to_set_it(tmp_path, capsys):
    root = tmp_path / "varied"
    root.mkdir()
    (root / "classes.txt").write_text("a\nb\n")
    for split in ("train", "val"):
        for i, (h, w) in enumerate([(32, 32), (40, 36)]):
            for kind, array in (("images", np.zeros((h, w, 3), np.uint8)), ("labels", np.ones((h, w), np.uint8))):
                (root / kind / split).mkdir(parents=True, exist_ok=True)
                Image.fromarray(array).save(root / kind / split / f"s{i}.png")
    argv = ["train", "--dataset", "folder", "--data-root", str(root), *tiny(tmp_path / "run", "loss.k=1")]
    argv.remove("--crop-size"), argv.remove("32")
    line = run_error(capsys, argv)
    assert "training samples differ in size (32x32 and 40x36) and data.crop_size is not set: pass --crop-size S" in line
