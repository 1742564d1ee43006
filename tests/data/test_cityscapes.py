import numpy as np
import pytest
import torch
from PIL import Image

from esseg.data import build_dataset
from esseg.data.cityscapes import Cityscapes
from esseg.errors import DatasetError


def test_label_ids_map_to_train_ids(make_cityscapes):
    raw = np.array([[7, 0, 33, 26], [24, 1, 9, 8]])
    root = make_cityscapes({"train": [raw]})
    ds = Cityscapes(root, "train")
    image, label = ds.load(0)
    assert ds.label_type == "labelIds" and ds.num_classes == 19 and ds.ignore_index == 255
    np.testing.assert_array_equal(label, [[0, 255, 18, 13], [11, 255, 255, 1]])
    assert label.dtype == np.int64 and image.mode == "RGB" and image.size == (4, 2)
    assert ds.sample_name(0) == "aachen_000000_000000_leftImg8bit"


def test_classes_and_palette_come_from_the_official_table():
    assert Cityscapes.classes[0] == "road" and Cityscapes.classes[18] == "bicycle" and len(Cityscapes.classes) == 19
    assert Cityscapes.palette.shape == (19, 3) and tuple(Cityscapes.palette[13]) == (0, 0, 142)


def test_train_id_files_are_detected_and_read_as_is(make_cityscapes):
    root = make_cityscapes({"val": [np.array([[0, 18, 255]])]}, label_type="labelTrainIds")
    ds = Cityscapes(root, "val")
    assert ds.label_type == "labelTrainIds"
    np.testing.assert_array_equal(ds.load_label(0), [[0, 18, 255]])


def test_getitem_returns_normalised_tensors_via_registry(make_cityscapes):
    ds = build_dataset("cityscapes", root=make_cityscapes(), split="train")
    image, label = ds[1]
    assert image.shape == (3, 6, 8) and image.dtype == torch.float32 and label.dtype == torch.int64
    assert len(ds) == 2


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"root .*nowhere does not exist"):
        Cityscapes(tmp_path / "nowhere", "train")


def test_wrong_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"wrong layout under .*looked for .*leftImg8bit"):
        Cityscapes(tmp_path, "train")


def test_missing_split_directory(make_cityscapes):
    with pytest.raises(DatasetError, match=r"split directory .*leftImg8bit/test not found"):
        Cityscapes(make_cityscapes(), "test")


def test_missing_label_file(make_cityscapes):
    root = make_cityscapes()
    (root / "gtFine/train/aachen/aachen_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(DatasetError, match=r"1 listed file\(s\) missing, first .*000001_gtFine_labelIds.png"):
        Cityscapes(root, "train", label_type="labelIds")


def test_image_label_size_mismatch(make_cityscapes):
    root = make_cityscapes()
    label = root / "gtFine/train/aachen/aachen_000000_000000_gtFine_labelIds.png"
    Image.fromarray(np.full((3, 5), 7, np.uint8)).save(label)
    ds = Cityscapes(root, "train")
    with pytest.raises(DatasetError, match=r"label .*000000_gtFine_labelIds.png is 5x3 but image .* is 8x6"):
        ds.load(0)
    with pytest.raises(DatasetError, match="is 5x3 but image"):
        ds.load_label(0)


def test_unreadable_image(make_cityscapes):
    root = make_cityscapes()
    (root / "leftImg8bit/train/aachen/aachen_000000_000001_leftImg8bit.png").write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read image .*000001_leftImg8bit.png"):
        Cityscapes(root, "train").load(1)


def test_label_value_outside_class_range(make_cityscapes):
    root = make_cityscapes({"train": [np.array([[7, 34]])]})
    with pytest.raises(DatasetError, match=r"gtFine_labelIds.png: label value 34 is not a valid Cityscapes labelIds"):
        Cityscapes(root, "train").load(0)


def test_train_id_values_in_a_label_ids_file_are_rejected_with_a_hint(make_cityscapes):
    root = make_cityscapes({"train": [np.array([[0, 255]])]})  # trainIds saved under the labelIds name
    with pytest.raises(DatasetError, match=r"label value 255 .*label_type='labelTrainIds'"):
        Cityscapes(root, "train").load_label(0)


def test_unknown_label_type_lists_the_valid_ones(make_cityscapes):
    with pytest.raises(DatasetError, match="label_type 'ids'; use one of auto, labelIds, labelTrainIds"):
        Cityscapes(make_cityscapes(), "train", label_type="ids")
