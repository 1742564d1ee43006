import numpy as np
import pytest
import scipy.io

from esseg.data import build_dataset
from esseg.data.cocostuff10k import COCOStuff10k
from esseg.errors import DatasetError

RAW = np.array([[0, 1, 182], [12, 13, 92]])


@pytest.mark.parametrize("dtype", [np.float64, np.uint8, np.uint16])
def test_182_space_zero_ignored_ids_shift_down(make_cocostuff10k, dtype):
    ds = COCOStuff10k(make_cocostuff10k({"train": [RAW]}, dtype=dtype), "train")
    image, label = ds.load(0)
    np.testing.assert_array_equal(label, [[255, 0, 181], [11, 12, 91]])
    assert label.dtype == np.int64 and image.size == (3, 2) and ds.num_classes == 182
    assert ds.classes[0] == "person" and ds.classes[11] == "street sign" and ds.classes[181] == "wood"


def test_171_space_drops_unused_thing_ids(make_cocostuff10k):
    ds = build_dataset("cocostuff10k", root=make_cocostuff10k({"train": [RAW]}), split="train", label_space="171")
    np.testing.assert_array_equal(ds.load_label(0), [[255, 0, 170], [255, 11, 80]])
    assert ds.num_classes == 171 and ds.classes[11] == "stop sign" and ds.classes[80] == "banner"
    assert ds.palette.shape == (171, 3)


def test_val_is_an_alias_of_test(make_cocostuff10k):
    root = make_cocostuff10k()
    assert COCOStuff10k(root, "val").samples == COCOStuff10k(root, "test").samples


def test_unknown_label_space(make_cocostuff10k):
    with pytest.raises(DatasetError, match="label_space '80'; use '182' or '171'"):
        COCOStuff10k(make_cocostuff10k(), "train", label_space="80")


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"COCO-Stuff-10k: root .*gone does not exist"):
        COCOStuff10k(tmp_path / "gone", "train")


def test_wrong_layout(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(DatasetError, match=r"wrong layout .*looked for .*imageLists.*expected images/\*.jpg"):
        COCOStuff10k(tmp_path, "train")


def test_missing_split_file(make_cocostuff10k):
    root = make_cocostuff10k()
    (root / "imageLists/test.txt").unlink()
    with pytest.raises(DatasetError, match=r"split file .*imageLists/test.txt not found"):
        COCOStuff10k(root, "test")


def test_image_label_size_mismatch(make_cocostuff10k):
    root = make_cocostuff10k()
    scipy.io.savemat(root / "annotations/COCO_train2014_000000000001.mat", {"S": np.ones((4, 4))})
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000000001.mat is 4x4 but image .*000000000001.jpg is 8x6"):
        COCOStuff10k(root, "train").load(1)


def test_unreadable_mat(make_cocostuff10k):
    root = make_cocostuff10k()
    (root / "annotations/COCO_train2014_000000000001.mat").write_bytes(b"MATLAB junk")
    with pytest.raises(DatasetError, match=r"cannot read annotation .*COCO_train2014_000000000001.mat"):
        COCOStuff10k(root, "train").load_label(1)


def test_mat_without_S(make_cocostuff10k):
    root = make_cocostuff10k(key="labels")
    with pytest.raises(DatasetError, match=r"COCO_train2014_000000000000.mat has no variable 'S'"):
        COCOStuff10k(root, "train").load(0)


def test_non_integer_values(make_cocostuff10k):
    root = make_cocostuff10k({"train": [np.array([[1.5, 2.0]])]})
    with pytest.raises(DatasetError, match=r"000000000000.mat: 'S' holds non-integer values"):
        COCOStuff10k(root, "train").load(0)


def test_label_value_outside_class_range(make_cocostuff10k):
    root = make_cocostuff10k({"train": [np.array([[1, 183]])]})
    with pytest.raises(DatasetError, match=r"000000000000.mat: label value 183 is not a valid COCO-Stuff \(182 classes\) value"):
        COCOStuff10k(root, "train").load(0)
