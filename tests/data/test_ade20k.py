import numpy as np
import pytest
from PIL import Image

from esseg.data import build_dataset
from esseg.data.ade20k import ADE20K
from esseg.errors import DatasetError

ANN = "ADEChallengeData2016/annotations"


def test_zero_is_ignored_and_values_shift_down_by_one(make_ade20k):
    root = make_ade20k({"train": [np.array([[0, 1, 2], [150, 75, 0]])]})
    ds = ADE20K(root, "train")
    image, label = ds.load(0)
    np.testing.assert_array_equal(label, [[255, 0, 1], [149, 74, 255]])
    assert image.size == (3, 2) and ds.num_classes == 150 and ds.sample_name(0) == "ADE_train_00000000"


def test_classes_and_palette():
    assert ADE20K.classes[0] == "wall" and ADE20K.classes[7] == "bed" and ADE20K.classes[149] == "flag"
    assert ADE20K.palette.shape == (150, 3) and tuple(ADE20K.palette[0]) == (120, 120, 120)


@pytest.mark.parametrize("split", ["val", "validation"])
def test_split_names_map_to_folders(make_ade20k, split):
    ds = build_dataset("ade20k", root=make_ade20k() / "ADEChallengeData2016", split=split)
    assert len(ds) == 1 and ds.samples[0][0].parent.name == "validation"


def test_unknown_split(make_ade20k):
    with pytest.raises(DatasetError, match="unknown ADE20K split 'test'; use one of train, val"):
        ADE20K(make_ade20k(), "test")


def test_missing_root(tmp_path):
    with pytest.raises(DatasetError, match=r"ADE20K: root .*absent does not exist"):
        ADE20K(tmp_path / "absent", "train")


def test_wrong_layout(tmp_path):
    (tmp_path / "ADEChallengeData2016" / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"wrong layout .*looked for .*annotations, .*ADEChallengeData2016/annotations"):
        ADE20K(tmp_path, "train")


def test_missing_split_directory(make_ade20k):
    root = make_ade20k({"train": [np.ones((2, 2), int)]})
    with pytest.raises(DatasetError, match=r"split directory .*images/validation not found"):
        ADE20K(root, "val")


def test_missing_annotation(make_ade20k):
    root = make_ade20k()
    (root / ANN / "training/ADE_train_00000000.png").unlink()
    with pytest.raises(DatasetError, match=r"missing, first .*training/ADE_train_00000000.png"):
        ADE20K(root, "train")


def test_image_label_size_mismatch(make_ade20k):
    root = make_ade20k()
    Image.fromarray(np.ones((6, 7), np.uint8)).save(root / ANN / "training/ADE_train_00000001.png")
    with pytest.raises(DatasetError, match=r"ADE_train_00000001.png is 7x6 but image .*ADE_train_00000001.jpg is 8x6"):
        ADE20K(root, "train").load(1)


def test_unreadable_image(make_ade20k):
    root = make_ade20k()
    (root / "ADEChallengeData2016/images/training/ADE_train_00000001.jpg").write_bytes(b"")
    with pytest.raises(DatasetError, match=r"cannot read image .*ADE_train_00000001.jpg"):
        ADE20K(root, "train").load(1)


def test_label_value_outside_class_range(make_ade20k):
    root = make_ade20k({"train": [np.array([[1, 151]])]})
    with pytest.raises(DatasetError, match=r"ADE_train_00000000.png: label value 151 is not a valid ADE20K value \(expected 0..150\)"):
        ADE20K(root, "train").load(0)
