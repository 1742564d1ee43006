import json
import sys
import types

import numpy as np
import pytest

import esseg.data.inspect as inspect_module
from esseg.cli import build_parser, main
from esseg.data.base import SegmentationDataset
from esseg.data.inspect import format_report, inspect_dataset
from esseg.errors import DatasetError

LABELS = {"train": [np.array([[0, 1, 1], [2, 2, 2]]), np.array([[1, 0, 0], [0, 0, 150]])]}


def by_name(report):
    return {c["name"]: c["pixels"] for c in report["class_pixels"]}


def test_report_counts_pixels_per_class(make_ade20k):
    report = inspect_dataset("ade20k", make_ade20k(LABELS), "train")
    assert report["ok"] and report["num_samples"] == 2 and report["num_invalid"] == 0
    assert report["pixels"] == 12 and report["ignored_pixels"] == 5 and report["ignored_fraction"] == pytest.approx(5 / 12)
    counts = by_name(report)
    assert counts["wall"] == 3 and counts["building"] == 3 and counts["flag"] == 1 and counts["sky"] == 0
    assert report["classes_present"] == 3 and len(report["class_pixels"]) == 150
    assert "sky" in report["missing_classes"] and "wall" not in report["missing_classes"]
    images = {c["name"]: c["images"] for c in report["class_pixels"]}
    assert images["wall"] == 2 and images["building"] == 1 and images["flag"] == 1 and images["sky"] == 0
    assert sum(images.values()) == 4


def test_bad_files_are_collected_and_the_scan_goes_on(make_ade20k):
    labels = {"train": [np.ones((2, 3), int), np.array([[1, 200, 1], [1, 1, 1]]), np.full((2, 3), 2)]}
    root = make_ade20k(labels)
    (root / "ADEChallengeData2016/annotations/training/ADE_train_00000000.png").write_bytes(b"broken")
    report = inspect_dataset("ade20k", root, "train")
    assert not report["ok"] and report["num_invalid"] == 2
    reasons = {item["sample"]: item["reason"] for item in report["invalid"]}
    assert "cannot read label" in reasons["ADE_train_00000000"] and "ADE_train_00000000.png" in reasons["ADE_train_00000000"]
    assert "label value 200" in reasons["ADE_train_00000001"]
    assert by_name(report)["building"] == 6 and report["pixels"] == 6  # only the valid third sample


def test_label_only_scan_does_not_decode_images_unless_asked(make_ade20k):
    root = make_ade20k({"train": [np.ones((32, 32), int)] * 2})
    image = root / "ADEChallengeData2016/images/training/ADE_train_00000001.jpg"
    data = image.read_bytes()
    image.write_bytes(data[: data.index(b"\xff\xda") + 40])  # cut just after start-of-scan: header intact
    assert inspect_dataset("ade20k", root, "train")["ok"]
    report = inspect_dataset("ade20k", root, "train", check_images=True)
    assert report["num_invalid"] == 1 and "cannot read image" in report["invalid"][0]["reason"]


class Unchecked(SegmentationDataset):
    classes = ("a", "b", "c")

    def __len__(self):
        return 2

    def load(self, index):
        return None, np.array([[0, 255], [2, 99 if index else 1]])


def test_falls_back_to_load_and_checks_the_class_range(monkeypatch):
    monkeypatch.setattr(inspect_module, "build_dataset", lambda name, root, split: Unchecked(root, split))
    report = inspect_dataset("dummy", None, "train")
    assert report["num_invalid"] == 1
    assert report["invalid"][0]["reason"] == "labels must be in [0, 3) or equal ignore_index=255; found 99 in 1"
    assert by_name(report) == {"a": 1, "b": 1, "c": 1}


def test_format_report_lists_top_classes_and_invalid_files(make_ade20k):
    text = format_report(inspect_dataset("ade20k", make_ade20k(LABELS), "train"), top=2)
    assert "2 samples, 0 invalid" in text and "41.7% ignored" in text and "3/150 classes present" in text
    assert "images per class: 3 rare (1-10), 0 common (11-100), 0 frequent (> 100), 147 unseen (0)" in text
    assert "top 2 classes" in text and "wall" in text and "flag" not in text.split("classes never seen")[0]
    assert text.endswith("OK")


def test_cli_returns_0_on_a_good_dataset_and_writes_json(make_voc, tmp_path, capsys):
    out = tmp_path / "report.json"
    assert main(["data", "inspect", "--dataset", "voc", "--root", str(make_voc()), "--split", "train", "--json", str(out)]) == 0
    assert "voc train" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["ok"] and report["num_samples"] == 2 and report["num_classes"] == 21


def test_cli_returns_2_on_a_corrupt_file_and_json_to_stdout_parses(make_cocostuff10k, capsys):
    root = make_cocostuff10k()
    (root / "annotations/COCO_train2014_000000000001.mat").write_bytes(b"junk")
    assert main(["data", "inspect", "--dataset", "cocostuff10k", "--root", str(root), "--json", "-"]) == 2
    report = json.loads(capsys.readouterr().out)
    assert report["num_invalid"] == 1 and report["invalid"][0]["sample"] == "COCO_train2014_000000000001"


def test_cli_missing_root_is_one_line_error(tmp_path, capsys):
    assert main(["data", "inspect", "--dataset", "cityscapes", "--root", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("esseg: error: Cityscapes: root ") and err.count("\n") == 1


def test_unknown_dataset_name_lists_known_ones():
    with pytest.raises(DatasetError, match="unknown dataset 'kitti'; known datasets: ade20k, .*cityscapes, .*folder"):
        inspect_dataset("kitti", None, "train")


def test_build_coco_lvis_is_wired_from_its_module(monkeypatch, capsys):
    fake = types.ModuleType("esseg.data.coco_lvis_builder")

    def register_cli(subparsers):
        subparsers.add_parser("build-coco-lvis").set_defaults(func=lambda args: print("built") or 0)

    fake.register_cli = register_cli
    monkeypatch.setitem(sys.modules, "esseg.data.coco_lvis_builder", fake)
    assert main(["build-coco-lvis"]) == 0 and capsys.readouterr().out == "built\n"


def test_cli_works_without_the_builder_module(monkeypatch):
    monkeypatch.setitem(sys.modules, "esseg.data.coco_lvis_builder", None)  # import raises ModuleNotFoundError
    subcommands = build_parser()._subparsers._group_actions[0].choices
    assert "data" in subcommands and "build-coco-lvis" not in subcommands
