"""The `folder` dataset: pairing by stem, class files, 16-bit labels, mappings and every bad-input case."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cli_checks import run_error
from esseg.cli import main
from esseg.data import build_dataset
from esseg.data.folder import FolderDataset, read_class_file
from esseg.data.frequency import class_image_counts, read_class_frequency
from esseg.data.inspect import inspect_dataset
from esseg.data.transforms import build_transforms
from esseg.viz.images import colorize
from esseg.errors import DatasetError


def write_image(path, height, width, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)


def write_label(path, label):
    """8-bit PNG when the values fit, else 16-bit (PNG or TIFF by the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    label = np.asarray(label)
    Image.fromarray(label.astype(np.uint8 if label.max() <= 255 else np.uint16)).save(path)


def make_folder(root, labels, classes=("a", "b", "c"), image_ext="jpg", label_ext="png", suffix=""):
    """``root/{classes.txt, images/<split>/<stem>.<ext>, labels/<split>/<stem><suffix>.<ext>}``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for split, arrays in labels.items():
        for i, label in enumerate(arrays):
            write_image(root / "images" / split / f"s{i}.{image_ext}", *np.shape(label), seed=i)
            write_label(root / "labels" / split / f"s{i}{suffix}.{label_ext}", label)
    return root


LABELS = {"train": [np.array([[0, 1, 1], [2, 2, 255]]), np.array([[1, 1, 1], [1, 255, 255]])], "val": [np.zeros((2, 3), int)]}


def test_values_are_class_ids_and_255_is_ignored(tmp_path):
    ds = build_dataset("folder", root=make_folder(tmp_path / "f", LABELS), split="train")
    assert isinstance(ds, FolderDataset) and len(ds) == 2 and ds.classes == ("a", "b", "c")
    assert ds.ignore_index == 255 and ds.palette.shape == (3, 3) and ds.sample_name(1) == "s1"
    image, label = ds.load(0)
    assert image.size == (3, 2) and label.dtype == np.int64
    np.testing.assert_array_equal(label, LABELS["train"][0])
    np.testing.assert_array_equal(ds.load_label(1), LABELS["train"][1])
    assert class_image_counts(ds).tolist() == [1, 2, 1]  # images containing a, b, c


@pytest.mark.parametrize("label_ext", ["png", "tif"])
def test_16_bit_labels_keep_their_values(tmp_path, label_ext):
    classes = [f"class{i}" for i in range(3000)]
    raw = np.array([[0, 255, 256], [1000, 2999, 65535]])
    root = make_folder(tmp_path / "f", {"train": [raw]}, classes=classes, label_ext=label_ext)
    ds = FolderDataset(root, "train")
    assert ds.ignore_index == 65535  # default_ignore_index(3000); 255 is a class here
    label = ds.load_label(0)
    np.testing.assert_array_equal(label, raw)
    # through the training transforms (pad with 65535, nearest resize in 32 bits) ids stay exact
    ds.transforms = build_transforms(True, (8, 8), ds.ignore_index, scale_range=(2.0, 2.0), flip=False)
    _, out = ds[0]
    color = colorize(label, ds.palette, ds.ignore_index)  # the viz panels: ids > 255 keep their own colours
    assert len({tuple(c) for c in ds.palette.tolist()}) == 3000
    assert color[1, 1].tolist() == ds.palette[2999].tolist() and color[1, 2].tolist() == [0, 0, 0]
    values, counts = out.unique(return_counts=True)
    assert out.dtype == torch.int64 and out.shape == (8, 8)  # 2x3 scaled x2 to 4x6, padded to 8x8
    assert dict(zip(values.tolist(), counts.tolist())) == {0: 4, 255: 4, 256: 4, 1000: 4, 2999: 4, 65535: 44}


def test_classes_tsv_with_header_any_order(tmp_path):
    root = make_folder(tmp_path / "f", LABELS)
    (root / "classes.txt").unlink()
    (root / "classes.tsv").write_text("id\tname\n2\tsky\n0\troad\n1\tcar\n")
    assert FolderDataset(root, "val").classes == ("road", "car", "sky")


def test_suffix_ext_mapping_and_ignore_index_options(tmp_path):
    root = make_folder(tmp_path / "f", {"train": [np.array([[10, 20], [30, 99]])]}, image_ext="png", suffix="_gt")
    (root / "map.tsv").write_text("value\ttrain_id\n10\t0\n20\t2\n30\t1\n")
    ds = FolderDataset(root, "train", label_suffix="_gt", label_ext="png", mapping="map.tsv", ignore_index=7)
    np.testing.assert_array_equal(ds.load_label(0), [[0, 2], [1, 7]])  # 99 is not mapped -> ignore


@pytest.mark.parametrize("ignore_index", [2, -1])
def test_ignore_index_must_be_above_the_class_ids(tmp_path, ignore_index):
    with pytest.raises(DatasetError, match=rf"ignore_index={ignore_index} is not above the class ids \(classes.txt lists 3 "
                                           r"classes\); use a value >= 3, e.g. 255"):
        FolderDataset(make_folder(tmp_path / "f", LABELS), "train", ignore_index=ignore_index)


def test_image_without_label_and_label_without_image(tmp_path):
    root = make_folder(tmp_path / "f", LABELS)
    (root / "labels/train/s0.png").unlink()
    with pytest.raises(DatasetError, match=r"image .*images/train/s0.jpg has no label: expected .*labels/train/s0.png"):
        FolderDataset(root, "train")
    write_label(root / "labels/train/s0.png", LABELS["train"][0])
    write_label(root / "labels/train/extra.png", LABELS["train"][0])
    with pytest.raises(DatasetError, match=r"label .*labels/train/extra.png has no image .*images/train/extra"):
        FolderDataset(root, "train")


def test_a_wrong_suffix_says_how_to_fix_it(tmp_path):
    root = make_folder(tmp_path / "f", LABELS, suffix="_gt")
    with pytest.raises(DatasetError, match=r"has no label: .*set data.options.label_suffix/label_ext .*\(and 3 more"):
        FolderDataset(root, "train")


def test_size_mismatch_rgb_label_and_value_out_of_range(tmp_path):
    root = make_folder(tmp_path / "f", {"train": [np.ones((2, 3), int)] * 3})
    write_label(root / "labels/train/s0.png", np.ones((3, 3), int))
    Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(root / "labels/train/s1.png")
    write_label(root / "labels/train/s2.png", np.array([[0, 1, 2], [3, 1, 1]]))
    ds = FolderDataset(root, "train")
    with pytest.raises(DatasetError, match=r"label .*s0.png is 3x3 but image .*s0.jpg is 3x2"):
        ds.load(0)
    with pytest.raises(DatasetError, match=r"s1.png has image mode RGB; expected a single-channel index map"):
        ds.load_label(1)
    with pytest.raises(DatasetError, match=r"s2.png: label value 3 is not a valid folder value \(expected 0..2 or 255 "
                                           r"\(ignore\)\); classes.txt lists 3 classes; add the missing class names"):
        ds.load_label(2)


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda r: (r / "classes.txt").unlink(), r"no class list in .*: write classes.txt"),
        (lambda r: (r / "classes.txt").write_text("a\n\nc\n"), r"classes.txt line 2 is empty"),
        (lambda r: (r / "classes.txt").write_text(""), r"class file .*classes.txt is empty"),
        (lambda r: [p.unlink() for p in (r / "images/train").iterdir()], r"no images .* in .*images/train; the split is empty"),
        (lambda r: None, r"split folder .*images/test not found; splits present: train, val"),
    ],
)
def test_bad_layouts_are_one_line_errors(tmp_path, setup, message):
    root = make_folder(tmp_path / "f", LABELS)
    setup(root)
    split = "test" if "test" in message else "train"
    with pytest.raises(DatasetError, match=message) as err:
        FolderDataset(root, split)
    assert "\n" not in str(err.value)


def test_bad_classes_tsv(tmp_path):
    path = tmp_path / "classes.tsv"
    path.write_text("0\troad\n2\tsky\n")
    with pytest.raises(DatasetError, match=r"ids in .*classes.tsv must be 0..1 \(one per class\); id 1 is missing"):
        read_class_file(path)
    path.write_text("0\troad\nx\n")
    with pytest.raises(DatasetError, match=r"classes.tsv line 2 must be id<TAB>name"):
        read_class_file(path)


def test_inspect_collects_every_problem_and_counts_images_per_class(tmp_path, capsys):
    root = make_folder(tmp_path / "f", {"train": [np.array([[0, 1], [1, 1]]), np.array([[1, 2], [2, 2]]),
                                                  np.array([[5, 0], [0, 0]]), np.ones((2, 2), int)]})
    (root / "labels/train/s3.png").unlink()  # image without label
    write_label(root / "labels/train/orphan.png", np.ones((2, 2), int))  # label without image
    report = inspect_dataset("folder", root, "train")
    assert report["num_samples"] == 5 and report["num_invalid"] == 3 and not report["ok"]
    reasons = {item["sample"]: item["reason"] for item in report["invalid"]}
    assert set(reasons) == {"s2", "s3", "orphan"}
    assert "label value 5" in reasons["s2"] and "has no label" in reasons["s3"] and "has no image" in reasons["orphan"]
    rows = {c["name"]: (c["pixels"], c["images"]) for c in report["class_pixels"]}
    assert rows == {"a": (1, 1), "b": (4, 2), "c": (3, 1)}  # from the two valid samples only
    # the CLI: --data-root is an alias of --root; the JSON feeds read_class_frequency
    out = tmp_path / "report.json"
    assert main(["data", "inspect", "--dataset", "folder", "--data-root", str(root), "--json", str(out)]) == 2
    text = capsys.readouterr().out
    assert "images per class: 3 rare (1-10), 0 common (11-100), 0 frequent (> 100), 0 unseen (0)" in text
    assert read_class_frequency(out, 3).tolist() == [1, 2, 1]
    assert json.loads(out.read_text())["num_invalid"] == 3


def test_inspect_cli_passes_options_and_rejects_unknown_ones(tmp_path, capsys):
    root = make_folder(tmp_path / "f", LABELS, suffix="_gt")
    argv = ["data", "inspect", "--dataset", "folder", "--data-root", str(root)]
    assert main([*argv, "--options", "{label_suffix: _gt}"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")
    assert "not accepted by dataset 'folder'" in run_error(capsys, [*argv, "--options", "{label_sufix: _gt}"])
    assert "--options must be a YAML mapping" in run_error(capsys, [*argv, "--options", "_gt"])


def test_missing_root_is_a_cli_error(tmp_path, capsys):
    line = run_error(capsys, ["data", "inspect", "--dataset", "folder", "--data-root", str(tmp_path / "none")])
    assert "folder: root" in line and "does not exist" in line


def test_two_files_with_one_stem(tmp_path):
    root = make_folder(tmp_path / "f", LABELS)
    write_image(root / "images/train/s0.png", 2, 3)
    with pytest.raises(DatasetError, match=r"sample 's0' has several files \(images/train/s0.jpg, images/train/s0.png, labels/train/s0.png\); keep one"):
        FolderDataset(root, "train")
    assert FolderDataset(root, "train", unpaired="keep").problems.keys() == {0}


def test_template_config_builds_the_folder_dataset(tmp_path):
    from pathlib import Path

    from esseg.engine.config import load_config
    from esseg.engine.data import build_split

    template = Path(__file__).resolve().parents[2] / "configs" / "folder_template.yaml"
    root = make_folder(tmp_path / "f", LABELS)
    cfg = load_config(template, [f"data.root={root}", "data.crop_size=8"])
    assert cfg.data.dataset == "folder" and cfg.data.class_frequency == "auto"
    image, label = build_split(cfg, "train", train=True)[0]
    assert image.shape == (3, 8, 8) and label.shape == (8, 8)
    assert set(label.unique().tolist()) <= {0, 1, 2, 255}


def test_32_bit_tiff_labels_above_65535_classes(tmp_path):
    # More than 65535 classes: 65535 is a real class id, the ignore value is 2**31 - 1 and the
    # label maps are 32-bit TIFFs (PIL mode I), read back exactly.
    root = tmp_path / "f"
    (root).mkdir()
    (root / "classes.txt").write_text("".join(f"c{i}\n" for i in range(70_000)))
    raw = np.array([[0, 65535, 65536], [69_999, 2**31 - 1, 300]], dtype=np.int32)
    write_image(root / "images" / "train" / "s0.png", 2, 3)
    (root / "labels" / "train").mkdir(parents=True)
    Image.fromarray(raw).save(root / "labels" / "train" / "s0.tif")
    ds = FolderDataset(root, "train")
    assert ds.num_classes == 70_000 and ds.ignore_index == 2**31 - 1
    label = ds.load_label(0)
    assert label.dtype == np.int64
    np.testing.assert_array_equal(label, raw)
    bad = raw.copy()
    bad[0, 0] = 70_000  # neither a class id nor the ignore value
    Image.fromarray(bad).save(root / "labels" / "train" / "s0.tif")
    with pytest.raises(DatasetError, match="70000"):
        FolderDataset(root, "train").load_label(0)
