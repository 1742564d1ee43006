from importlib.resources import files

import numpy as np
import pytest
import scipy.io
from PIL import Image

from esseg.cli import main
from esseg.data import build_dataset
from esseg.data.inspect import inspect_dataset
from esseg.data.pascal_context import PascalContext59, PascalContext459
from esseg.errors import DatasetError

from cli_checks import run_error

VOC = "VOCdevkit/VOC2010"
# 0 unlabelled; 2 aeroplane; 300 and 459 (wool) above 255; 397 table (PC-59 'diningtable'); 458 wood; 9 bag
RAW = np.array([[0, 2, 300], [459, 397, 458], [9, 1, 256]])


def rows(name: str) -> list[list[str]]:
    text = files("esseg.data").joinpath("tables", name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")][1:]


def expected(raw: np.ndarray, num_classes: int) -> np.ndarray:
    """The train ids of LabelMap values, computed from the TSV tables with a plain loop."""
    if num_classes == 459:
        lookup, ignore = {int(value): int(train) for train, value, _ in rows("pascal_context_459_classes.tsv")}, 65535
    else:
        lookup, ignore = {int(value): int(train) for train, value, _ in rows("pascal_context_59_classes.tsv")}, 255
    return np.array([[lookup.get(int(v), ignore) for v in row] for row in raw])


def test_tables():
    assert len(rows("pascal_context_459_classes.tsv")) == 459 and len(rows("pascal_context_59_classes.tsv")) == 59
    assert PascalContext459.classes[458] == "wool" and PascalContext59.classes[49] == "diningtable"


@pytest.mark.parametrize("dtype", [np.uint16, np.float64])
def test_459_labelmap_minus_one_with_values_above_255(make_pascal_context, dtype):
    ds = PascalContext459(make_pascal_context({"train": [RAW]}, dtype=dtype), "train")
    image, label = ds.load(0)
    np.testing.assert_array_equal(label, expected(RAW, 459))
    np.testing.assert_array_equal(label, np.where(RAW == 0, 65535, RAW - 1))
    assert label[1, 0] == 458 and label[0, 2] == 299 and label.dtype == np.int64 and image.size == (3, 3)
    assert ds.num_classes == 459 and ds.ignore_index == 65535 and ds.layout == "mat"
    assert ds.sample_name(0) == "2008_tr0000" and ds.palette.shape == (459, 3)


def test_59_keeps_the_subset_and_ignores_the_rest(make_pascal_context):
    ds = build_dataset("pascal_context_59", root=make_pascal_context({"train": [RAW]}), split="train")
    label = ds.load_label(0)
    np.testing.assert_array_equal(label, expected(RAW, 59))
    assert label.tolist() == [[255, 0, 255], [255, 49, 58], [1, 255, 255]]
    assert ds.num_classes == 59 and ds.ignore_index == 255 and ds.classes[0] == "aeroplane"


@pytest.mark.parametrize("cls, classes", [(PascalContext459, 459), (PascalContext59, 59)])
def test_prepared_val_tiffs_read_like_the_mat_files(make_pascal_context, cls, classes):
    root = make_pascal_context({"val": [RAW]}, prepared=True)
    prepared = cls(root, "val")
    assert prepared.layout == "prepared" and prepared.samples[0][1].suffix == ".tif"
    np.testing.assert_array_equal(prepared.load_label(0), expected(RAW, classes))
    np.testing.assert_array_equal(cls(root, "val", layout="mat").load_label(0), expected(RAW, classes))


def test_roots_and_split_list_places(make_pascal_context):
    root = make_pascal_context({"val": [RAW]})
    voc = root / VOC
    (voc / "ImageSets/SegmentationContext/val.txt").rename(voc / "pascalcontext_val.txt")
    (voc / "trainval").rename(root / "trainval")  # where the Context tarball unpacks by default
    for where in (root, root / "VOCdevkit", voc):
        ds = PascalContext459(where, "val")
        assert len(ds) == 1 and ds.samples[0][1].parent == root / "trainval"


def test_inspect_counts_pixels_per_class_for_459_and_59(make_pascal_context, capsys):
    root = make_pascal_context({"val": [RAW, np.full((2, 2), 300)]})
    for name, classes in (("pascal_context_459", 459), ("pascal_context_59", 59)):
        report = inspect_dataset(name, root, "val")
        want = np.zeros(classes, int)
        for raw in (RAW, np.full((2, 2), 300)):
            for v in expected(raw, classes).ravel():
                if v < classes:
                    want[v] += 1
        assert report["ok"] and [c["pixels"] for c in report["class_pixels"]] == want.tolist()
        assert report["pixels"] == 13 and report["ignored_pixels"] == 13 - want.sum()
    assert main(["data", "inspect", "--dataset", "pascal_context_459", "--root", str(root), "--split", "val"]) == 0
    top = capsys.readouterr().out.split("top ")[1].splitlines()[1].split()
    assert top[:2] == ["299", rows("pascal_context_459_classes.tsv")[299][2]] and top[-1] == "5"  # LabelMap 300


def test_inspect_collects_bad_mats_and_goes_on(make_pascal_context):
    root = make_pascal_context({"train": [np.array([[1, 460]]), np.array([[2, 2]]), np.array([[3, 3]])]})
    (root / VOC / "trainval/2008_tr0002.mat").write_bytes(b"MATLAB junk")
    report = inspect_dataset("pascal_context_459", root, "train")
    reasons = {item["sample"]: item["reason"] for item in report["invalid"]}
    assert report["num_invalid"] == 2 and report["class_pixels"][1]["pixels"] == 2 and report["pixels"] == 2
    assert "label value 460 is not a valid PASCAL-Context-459 LabelMap value (expected 0..459)" in reasons["2008_tr0000"]
    assert "cannot read annotation" in reasons["2008_tr0002"]


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "test"}, "unknown PASCAL-Context-459 split 'test'; use one of train, val"),
    ({"layout": "png"}, "unknown PASCAL-Context-459 layout 'png'; use one of auto, mat, prepared"),
    ({"layout": "prepared"}, r"prepared layout \(annotations_detectron2/pc459_val\) holds only the val split"),
])
def test_bad_options(make_pascal_context, kwargs, message):
    with pytest.raises(DatasetError, match=message):
        PascalContext459(make_pascal_context(), **{"split": "train", **kwargs})


def test_missing_split_file(make_pascal_context):
    root = make_pascal_context()
    (root / VOC / "ImageSets/SegmentationContext/val.txt").unlink()
    with pytest.raises(DatasetError, match=r"split file not found: looked for .*SegmentationContext/val.txt and .*pascalcontext_val.txt"):
        PascalContext59(root, "val")


def test_missing_trainval_folder_via_cli(make_pascal_context, capsys):
    root = make_pascal_context()
    (root / VOC / "trainval").rename(root / VOC / "labels")
    line = run_error(capsys, ["data", "inspect", "--dataset", "pascal_context_459", "--root", str(root)])
    assert "no trainval/ folder of .mat labels" in line and "extract the Context release's trainval.tar.gz" in line


def test_missing_label(make_pascal_context):
    root = make_pascal_context()
    (root / VOC / "trainval/2008_tr0001.mat").unlink()
    with pytest.raises(DatasetError, match=r"1 listed file\(s\) missing, first .*trainval/2008_tr0001.mat"):
        PascalContext459(root, "train")


def test_prepared_label_without_image(make_pascal_context):
    root = make_pascal_context(prepared=True)
    (root / VOC / "JPEGImages/2008_va0000.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing, first .*JPEGImages/2008_va0000.jpg"):
        PascalContext459(root, "val")


def test_mat_without_labelmap(make_pascal_context):
    root = make_pascal_context(key="S")
    with pytest.raises(DatasetError, match=r"2008_tr0000.mat has no variable 'LabelMap'"):
        PascalContext459(root, "train").load_label(0)


def test_colour_labelmap_is_refused(make_pascal_context):
    root = make_pascal_context()
    scipy.io.savemat(root / VOC / "trainval/2008_tr0000.mat", {"LabelMap": np.ones((6, 8, 3), np.uint8)})
    with pytest.raises(DatasetError, match=r"'LabelMap' has shape \(6, 8, 3\); expected one \(H, W\) index map"):
        PascalContext459(root, "train").load_label(0)


def test_non_integer_labelmap(make_pascal_context):
    root = make_pascal_context({"train": [np.array([[1.5, 2.0]])]}, dtype=np.float64)
    with pytest.raises(DatasetError, match="'LabelMap' holds non-integer values"):
        PascalContext459(root, "train").load_label(0)


def test_image_label_size_mismatch(make_pascal_context):
    root = make_pascal_context()
    scipy.io.savemat(root / VOC / "trainval/2008_tr0001.mat", {"LabelMap": np.ones((4, 4), np.uint16)})
    with pytest.raises(DatasetError, match=r"2008_tr0001.mat is 4x4 but image .*2008_tr0001.jpg is 8x6"):
        PascalContext59(root, "train").load_label(1)


def test_prepared_values_out_of_range_and_8_bit(make_pascal_context, label_writers):
    root = make_pascal_context({"val": [RAW, RAW]}, prepared=True)
    label_writers.uint16_tif(root / VOC / "annotations_detectron2/pc459_val/2008_va0000.tif", np.full((3, 3), 459))
    Image.fromarray(np.ones((3, 3), np.uint8)).save(root / VOC / "annotations_detectron2/pc459_val/2008_va0001.tif")
    ds = PascalContext459(root, "val")
    with pytest.raises(DatasetError, match=r"2008_va0000.tif: label value 459 is not a valid .*\(expected 0..458 or 65535\)"):
        ds.load_label(0)
    with pytest.raises(DatasetError, match=r"2008_va0001.tif is 8-bit \(image mode L\)"):
        ds.load_label(1)
