import numpy as np
import pytest
from PIL import Image

from esseg.data import build_dataset
from esseg.data.voc import VOC, VOCAug
from esseg.errors import DatasetError


def test_palette_png_values_are_train_ids_and_void_stays_255(make_voc):
    raw = np.array([[0, 1, 20], [255, 15, 0]])
    root = make_voc({"train": [raw]})
    assert Image.open(next((root / "VOCdevkit/VOC2012/SegmentationClass").glob("*.png"))).mode == "P"
    ds = VOC(root, "train")
    image, label = ds.load(0)
    np.testing.assert_array_equal(label, raw)
    assert label.dtype == np.int64 and image.size == (3, 2) and ds.num_classes == 21 and ds.ignore_index == 255


def test_classes_and_palette():
    assert VOC.classes[0] == "background" and VOC.classes[20] == "tvmonitor"
    assert tuple(VOC.palette[1]) == (128, 0, 0) and VOC.palette.shape == (21, 3)


@pytest.mark.parametrize("sub", ["", "VOCdevkit", "VOCdevkit/VOC2012"])
def test_root_may_point_at_devkit_parent_devkit_or_voc2012(make_voc, sub):
    root = make_voc()
    assert len(VOC(root / sub, "train")) == 2 and len(VOC(root / sub, "val")) == 1


def test_aug_train_uses_segmentation_class_aug_and_trainaug_list(make_voc):
    root = make_voc({"train": [np.array([[3, 255]])], "val": [np.array([[1, 2]])]}, aug=True)
    ds = build_dataset("voc_aug", root=root, split="train")
    assert isinstance(ds, VOCAug) and ds.samples[0][1].parent.name == "SegmentationClassAug"
    np.testing.assert_array_equal(ds.load_label(0), [[3, 255]])
    val = VOCAug(root, "val")
    assert val.samples[0][1].parent.name == "SegmentationClass"
    with pytest.raises(DatasetError, match=r"VOC: split file .*ImageSets/Segmentation/train.txt not found"):
        VOC(root, "train")  # plain VOC has no train.txt in this fixture


def test_aug_falls_back_to_segmentation_class_for_voc_only_ids(make_voc):
    root = make_voc({"train": [np.array([[3, 4]]), np.array([[5, 6]])]}, aug=True)
    voc = root / "VOCdevkit/VOC2012"
    (voc / "SegmentationClass").mkdir()
    (voc / "SegmentationClassAug/2007_train0001.png").rename(voc / "SegmentationClass/2007_train0001.png")
    ds = VOCAug(root, "trainaug")
    assert [p.parent.name for _, p in ds.samples] == ["SegmentationClassAug", "SegmentationClass"]
    np.testing.assert_array_equal(ds.load_label(1), [[5, 6]])
    (voc / "SegmentationClass/2007_train0001.png").unlink()
    with pytest.raises(DatasetError, match=r"VOCAug: 1 listed file\(s\) missing, first .*SegmentationClassAug/2007_train0001.png"):
        VOCAug(root, "train")


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"VOC: root .*missing does not exist"):
        VOC(tmp_path / "missing", "train")


def test_wrong_layout_says_where_it_looked(tmp_path):
    (tmp_path / "JPEG").mkdir()
    with pytest.raises(DatasetError, match=r"looked for .*JPEGImages, .*VOC2012/JPEGImages, .*VOCdevkit/VOC2012/JPEGImages"):
        VOC(tmp_path, "train")


def test_missing_split_file(make_voc):
    with pytest.raises(DatasetError, match=r"split file .*Segmentation/trainval.txt not found"):
        VOC(make_voc(), "trainval")


def test_empty_split_file(make_voc):
    root = make_voc()
    (root / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").write_text("\n")
    with pytest.raises(DatasetError, match=r"split file .*val.txt is empty"):
        VOC(root, "val")


def test_listed_image_missing(make_voc):
    root = make_voc()
    (root / "VOCdevkit/VOC2012/JPEGImages/2007_train0001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"missing, first .*JPEGImages/2007_train0001.jpg"):
        VOC(root, "train")


def test_image_label_size_mismatch(make_voc):
    root = make_voc()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(root / "VOCdevkit/VOC2012/SegmentationClass/2007_val0000.png")
    with pytest.raises(DatasetError, match=r"label .*2007_val0000.png is 2x2 but image .*2007_val0000.jpg is 8x6"):
        VOC(root, "val").load(0)


def test_unreadable_label(make_voc):
    root = make_voc()
    (root / "VOCdevkit/VOC2012/SegmentationClass/2007_val0000.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DatasetError, match=r"cannot read label .*2007_val0000.png"):
        VOC(root, "val").load(0)


def test_colour_label_png_is_rejected(make_voc):
    root = make_voc()
    Image.new("RGB", (8, 6)).save(root / "VOCdevkit/VOC2012/SegmentationClass/2007_val0000.png")
    with pytest.raises(DatasetError, match=r"2007_val0000.png has image mode RGB; expected a single-channel"):
        VOC(root, "val").load(0)


def test_label_value_outside_class_range(make_voc):
    root = make_voc({"val": [np.array([[0, 21]])]})
    with pytest.raises(DatasetError, match=r"2007_val0000.png: label value 21 is not a valid Pascal VOC value"):
        VOC(root, "val").load(0)
