import json

import numpy as np
import pytest
import torch
from PIL import Image

from esseg.data import build_dataset
from esseg.data.base import bit_palette as palette
from esseg.data.coco_lvis import COCOLVIS
from esseg.errors import DatasetError

NUM_CLASSES = 1284
MASK = np.array([[0, 1, 2, 255], [256, 1203, 1204, 1284], [0, 0, 7, 7]], np.uint16)  # (H=3, W=4)


def write_split(split_dir, coco_root, masks=(MASK,), record_root=True, num_classes=NUM_CLASSES):
    """A builder-style output dir written by hand, so these tests do not depend on the builder."""
    (split_dir / "masks").mkdir(parents=True)
    (split_dir / "classes.tsv").write_text(
        "value\tname\tsource\tsource_id\n" + "".join(f"{v}\tclass_{v}\tlvis\t{v}\n" for v in range(1, num_classes + 1))
    )
    rows = []
    for i, mask in enumerate(masks, start=1):
        h, w = mask.shape
        (coco_root / "train2017").mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (10, 20, 30)).save(coco_root / f"train2017/{i:012d}.jpg")
        Image.fromarray(mask).save(split_dir / f"masks/{i:012d}.png")
        rows.append(f"train2017/{i:012d}.jpg\tmasks/{i:012d}.png\t{h}\t{w}\n")
    header = f"# coco_root={coco_root}\n" if record_root else ""
    (split_dir / "index.tsv").write_text(header + "image\tmask\theight\twidth\n" + "".join(rows))


def test_load_maps_values_to_train_ids_and_zero_to_ignore(tmp_path):
    write_split(tmp_path / "data/train", tmp_path / "coco")
    ds = COCOLVIS(tmp_path / "data", "train")
    assert (len(ds), ds.num_classes, ds.ignore_index) == (1, 1284, 65535)
    assert ds.classes[0] == "class_1" and ds.classes[-1] == "class_1284"
    assert ds.sample_name(0) == "000000000001"
    image, label = ds.load(0)
    assert image.mode == "RGB" and image.size == (4, 3)
    assert label.dtype == np.int64
    expected = [[65535, 0, 1, 254], [255, 1202, 1203, 1283], [65535, 65535, 6, 6]]
    np.testing.assert_array_equal(label, expected)
    np.testing.assert_array_equal(ds.load_label(0), expected)


def test_inspect_reads_labels_without_images(tmp_path):
    from esseg.data.inspect import inspect_dataset

    write_split(tmp_path / "data/val", tmp_path / "coco")
    (tmp_path / "coco/train2017/000000000001.jpg").unlink()
    report = inspect_dataset("coco_lvis", tmp_path / "data", "val")
    assert report["ok"] and report["num_classes"] == 1284 and report["ignore_index"] == 65535
    assert (report["ignored_pixels"], report["classes_present"]) == (3, 8)


def test_getitem_returns_tensors_and_registry_finds_it(tmp_path):
    write_split(tmp_path / "data/val", tmp_path / "coco")
    ds = build_dataset("coco_lvis", root=tmp_path / "data", split="val")
    image, label = ds[0]
    assert image.shape == (3, 3, 4) and image.dtype == torch.float32
    assert label.dtype == torch.int64 and label[0, 0] == 65535 and label[1, 3] == 1283


def test_palette_is_deterministic_and_distinct():
    p = palette(NUM_CLASSES)
    assert p.shape == (NUM_CLASSES, 3) and p.dtype == np.uint8
    assert len({tuple(c) for c in p}) == NUM_CLASSES
    assert not (p == 0).all(axis=1).any()  # no class is black
    np.testing.assert_array_equal(p, palette(NUM_CLASSES))
    assert p[:3].tolist() == [[128, 0, 0], [0, 128, 0], [128, 128, 0]]


def test_coco_root_argument_overrides_recorded_one(tmp_path):
    write_split(tmp_path / "data/train", tmp_path / "coco")
    (tmp_path / "coco").rename(tmp_path / "moved")
    with pytest.raises(DatasetError, match="coco/train2017/000000000001.jpg not found"):
        COCOLVIS(tmp_path / "data", "train").load(0)
    image, _ = COCOLVIS(tmp_path / "data", "train", coco_root=tmp_path / "moved").load(0)
    assert image.size == (4, 3)


def test_missing_root_is_reported():
    with pytest.raises(DatasetError, match=r"no dataset root given; pass the folder holding train/ and val/ .* as --data-root DIR \(esseg train/eval\) or --root DIR"):
        COCOLVIS(None, "train")


def test_missing_coco_root_is_reported(tmp_path):
    write_split(tmp_path / "data/train", tmp_path / "coco", record_root=False)
    with pytest.raises(DatasetError, match="records no coco_root: pass coco_root="):
        COCOLVIS(tmp_path / "data", "train").load(0)


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_index", r"val/index.tsv not found: build it with `esseg build-coco-lvis"),
        ("no_image", r"train2017/000000000001.jpg not found: coco_root must hold"),
        ("image_size", r"000000000001.jpg is 2x1, index.tsv says 4x3: check coco_root"),
        ("value_too_large", r"mask values must be in \[0, 1284\]; found 1290 in .*000000000001.png"),
        ("classes_gap", r"classes.tsv: values must run 1..2 in order"),
    ],
)
def test_errors_are_one_actionable_line(tmp_path, case, match):
    mask = np.array([[1290, 0]], np.uint16) if case == "value_too_large" else MASK
    write_split(tmp_path / "data/train", tmp_path / "coco", masks=(mask,))
    split = "val" if case == "no_index" else "train"
    if case == "no_image":
        (tmp_path / "coco/train2017/000000000001.jpg").unlink()
    if case == "image_size":
        Image.new("RGB", (2, 1)).save(tmp_path / "coco/train2017/000000000001.jpg")
    if case == "classes_gap":
        (tmp_path / "data/train/classes.tsv").write_text("value\tname\tsource\tsource_id\n1\ta\tlvis\t1\n3\tb\tlvis\t3\n")
    with pytest.raises(DatasetError, match=match) as err:
        COCOLVIS(tmp_path / "data", split).load(0)
    assert "\n" not in str(err.value)


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_reads_builder_output(tmp_path):
    from pycocotools import mask as mask_utils

    from esseg.data.coco_lvis_builder import build_coco_lvis

    m = np.zeros((5, 6), np.uint8)
    m[1:4, 2:5] = 1
    seg = mask_utils.encode(np.asfortranarray(m))
    seg = {"size": [5, 6], "counts": seg["counts"].decode()}
    lvis = {
        "images": [{"id": 42, "height": 5, "width": 6, "coco_url": "http://images.cocodataset.org/train2017/000000000042.jpg"}],
        "annotations": [{"id": 1, "image_id": 42, "category_id": 300, "segmentation": seg}],
        "categories": [{"id": i, "name": f"c{i}"} for i in range(1, 301)],
    }
    stuff = {
        "images": [{"id": 42, "height": 5, "width": 6}],
        "annotations": [{"id": 2, "image_id": 42, "category_id": 94, "segmentation": {"size": [5, 6], "counts": [0, 30]}}],
        "categories": [{"id": 94, "name": "branch"}, {"id": 183, "name": "other"}],
    }
    (tmp_path / "lvis.json").write_text(json.dumps(lvis))
    (tmp_path / "stuff.json").write_text(json.dumps(stuff))
    (tmp_path / "coco/train2017").mkdir(parents=True)
    Image.new("RGB", (6, 5)).save(tmp_path / "coco/train2017/000000000042.jpg")
    build_coco_lvis(tmp_path / "lvis.json", tmp_path / "stuff.json", tmp_path / "data/train", coco_root=tmp_path / "coco", progress=False)
    ds = COCOLVIS(tmp_path / "data", "train")
    assert ds.num_classes == 301 and ds.classes[-1] == "branch"
    _, label = ds.load(0)
    expected = np.full((5, 6), 300)  # stuff 'branch' everywhere -> value 301 -> train id 300
    expected[1:4, 2:5] = 299  # LVIS 300 -> train id 299
    np.testing.assert_array_equal(label, expected)


def test_inspect_lists_corrupt_files_and_goes_on(tmp_path, capsys):
    from esseg.cli import main

    write_split(tmp_path / "data/val", tmp_path / "coco", masks=(MASK, MASK, MASK))
    (tmp_path / "data/val/masks/000000000002.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (tmp_path / "coco/train2017/000000000003.jpg").write_bytes(b"not a jpeg")
    argv = ["data", "inspect", "--dataset", "coco_lvis", "--root", str(tmp_path / "data"), "--split", "val"]
    assert main([*argv, "--json", "-", "--check-images"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["num_samples"] == 3 and [item["sample"] for item in report["invalid"]] == ["000000000002", "000000000003"]
    reasons = [item["reason"] for item in report["invalid"]]
    assert reasons[0].startswith(f"cannot read mask {tmp_path / 'data/val/masks/000000000002.png'} (")
    assert reasons[1].startswith(f"cannot read image {tmp_path / 'coco/train2017/000000000003.jpg'} (")
    assert report["pixels"] == MASK.size  # the valid sample was counted
    assert main(argv) == 2
    assert "invalid samples (1):" in capsys.readouterr().out  # labels only: the corrupt image is not read


def test_inspect_json_output_checked_first_and_written_atomically(tmp_path, capsys, monkeypatch):
    import errno
    import pathlib

    from cli_checks import run_error

    write_split(tmp_path / "data/val", tmp_path / "coco")
    argv = ["data", "inspect", "--dataset", "coco_lvis", "--root", str(tmp_path / "data"), "--split", "val"]
    assert f"--json file {tmp_path} is a folder; give a file path" in run_error(capsys, [*argv, "--json", str(tmp_path)])
    report = tmp_path / "out/report.json"

    def full(self, data, *args, **kwargs):
        pathlib.Path.write_bytes(self, data.encode()[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_text", full)
    line = run_error(capsys, [*argv, "--json", str(report)])
    assert line == f"esseg: error: No space left on device: {report}; free some disk space or write elsewhere"
    assert list(report.parent.iterdir()) == []  # no 0-byte or partial JSON
