import os
import pickle
from importlib.resources import files

import numpy as np
import pytest
from PIL import Image

import esseg.data.ade20k_full as ade_full
from esseg.cli import main
from esseg.data import build_dataset
from esseg.data.ade20k_full import ADE20KFull, read_object_names
from esseg.data.inspect import inspect_dataset
from esseg.errors import DatasetError

from cli_checks import run_error

BASE = "ADE20K_2021_17_01"
RAW_TRAIN = f"{BASE}/images/ADE/training"
# wall 2978, building 312, car 401, "adding machine" 3148 (the last train id); 5 and 3001 are not among the 847
RAW = np.array([[0, 2978, 312], [3148, 5, 3001], [401, 401, 1831]])


def table() -> dict[int, int]:
    """raw object id -> train id, read straight from the packaged TSV."""
    text = files("esseg.data").joinpath("tables", "ade20k_full_847_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")][1:]
    return {int(raw): int(train) for train, raw, _ in rows}


def expected(raw: np.ndarray) -> np.ndarray:
    lookup = table()
    return np.array([[lookup.get(int(v), 65535) for v in row] for row in raw])


def test_table_is_the_847_classes_with_ids_above_255():
    lookup = table()
    assert len(lookup) == 847 and sorted(lookup.values()) == list(range(847))
    assert lookup[2978] == 0 and lookup[3148] == 846 and max(lookup) > 255


def test_raw_seg_png_decodes_r_g_and_maps_through_the_table(make_ade20k_full):
    ds = ADE20KFull(make_ade20k_full({"train": [RAW]}), "train")
    image, label = ds.load(0)
    np.testing.assert_array_equal(label, expected(RAW))
    assert label[1, 0] == 846 and label[0, 1] == 0 and label[2, 0] == 14  # car (401), no 8-bit wrap
    assert label[1, 1] == label[1, 2] == label[0, 0] == 65535 and label.dtype == np.int64
    assert ds.layout == "raw" and ds.num_classes == 847 and ds.ignore_index == 65535 and image.size == (3, 3)
    assert ds.classes[0] == "wall" and ds.classes[846] == "adding machine, totalizer, totaliser"
    assert ds.palette.shape == (847, 3) and ds.sample_name(0) == "ADE_train_00000001"


def test_raw_samples_are_found_in_scene_folders_sorted_by_name(make_ade20k_full):
    root = make_ade20k_full({"train": [RAW, RAW[:2], RAW[:1]]})
    ds = ADE20KFull(root / BASE, "training")
    assert [ds.sample_name(i) for i in range(3)] == ["ADE_train_00000001", "ADE_train_00000002", "ADE_train_00000003"]
    assert {p.parent.name for p, _ in ds.samples} == {"street", "apse__indoor"}
    np.testing.assert_array_equal(ds.load_label(1), expected(RAW[:2]))


def test_prepared_tiff_values_survive_exactly(make_ade20k_full):
    tif = np.array([[0, 255, 256], [300, 846, 65535]])
    ds = ADE20KFull(make_ade20k_full({"val": [tif]}, layout="prepared"), "val")
    assert ds.layout == "prepared" and ds.ignore_index == 65535
    np.testing.assert_array_equal(ds.load(0)[1], tif)
    np.testing.assert_array_equal(ds.load_label(0), tif)


def test_auto_prefers_the_prepared_layout_and_layout_forces_either(make_ade20k_full):
    root = make_ade20k_full({"train": [RAW]})
    make_ade20k_full({"train": [np.full((3, 3), 7)]}, layout="prepared", root=root)
    assert ADE20KFull(root, "train").layout == "prepared"
    np.testing.assert_array_equal(ADE20KFull(root, "train").load_label(0), np.full((3, 3), 7))
    np.testing.assert_array_equal(ADE20KFull(root, "train", layout="raw").load_label(0), expected(RAW))


def test_detectron2_datasets_folder_is_a_valid_root(make_ade20k_full, tmp_path):
    make_ade20k_full({"train": [RAW]}, root=tmp_path / "datasets" / "ade")
    assert len(build_dataset("ade20k_full", root=tmp_path / "datasets", split="train")) == 1


def test_load_label_reads_only_the_image_header(make_ade20k_full):
    root = make_ade20k_full({"train": [np.full((32, 32), 2978)]})
    image = next((root / RAW_TRAIN).rglob("*.jpg"))
    data = image.read_bytes()
    image.write_bytes(data[: data.index(b"\xff\xda") + 40])
    ds = ADE20KFull(root, "train")
    assert (ds.load_label(0) == 0).all()
    with pytest.raises(DatasetError, match="cannot read image"):
        ds.load(0)


def write_index(path, names, extra=None):
    index = {"objectnames": names, "objectPresence": np.zeros((len(names), 2), np.int32), "filename": ["a.jpg"]}
    with open(path, "wb") as f:
        pickle.dump({**index, **(extra or {})}, f)


def test_full_label_space_keeps_every_training_id_in_increasing_order(make_ade20k_full, tmp_path):
    train = [np.array([[0, 5, 3000], [312, 312, 5]]), np.array([[3000, 700, 0]])]
    val = [np.array([[5, 999, 700]])]  # 999 never occurs in training -> ignored
    root = make_ade20k_full({"train": train, "val": val})
    names = [f"object {i}" for i in range(1, 3001)]
    write_index(root / BASE / "index_ade20k.pkl", names)
    ds = ADE20KFull(root, "train", label_space="full")
    assert ds.raw_ids == (5, 312, 700, 3000) and ds.num_classes == 4 and ds.ignore_index == 65535
    assert ds.classes == ("object 5", "object 312", "object 700", "object 3000")  # objectnames[raw - 1]
    np.testing.assert_array_equal(ds.load_label(0), [[65535, 0, 3], [1, 1, 0]])
    val_ds = ADE20KFull(root, "val", label_space="full")
    assert val_ds.classes == ds.classes
    np.testing.assert_array_equal(val_ds.load_label(0), [[0, 65535, 2]])


def test_full_scan_is_cached_and_redone_when_the_masks_change(make_ade20k_full, label_writers, monkeypatch, tmp_path):
    root = make_ade20k_full({"train": [np.array([[0, 5, 3000]])]})
    cache = tmp_path / "cache"
    ds = ADE20KFull(root, "train", label_space="full", cache_dir=cache)
    assert ds.classes == ("id_5", "id_3000")  # no index_ade20k.pkl
    lines = (cache / "esseg_ade20k_full_ids.tsv").read_text().splitlines()
    assert lines[0].endswith("masks=1") and lines[2:] == ["5\t1\t1", "3000\t1\t1"]

    def no_scan(paths):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(ade_full, "scan_object_ids", no_scan)
    assert ADE20KFull(root, "train", label_space="full", cache_dir=cache).raw_ids == (5, 3000)
    monkeypatch.undo()
    scene = root / RAW_TRAIN / "urban/street"
    Image.new("RGB", (3, 1)).save(scene / "ADE_train_00000009.jpg")
    label_writers.ade_seg(scene / "ADE_train_00000009_seg.png", np.array([[7, 7, 7]]))
    assert ADE20KFull(root, "train", label_space="full", cache_dir=cache).raw_ids == (5, 7, 3000)


def test_full_scan_default_cache_sits_next_to_the_data(make_ade20k_full):
    root = make_ade20k_full({"train": [np.array([[1, 2]])]})
    ADE20KFull(root, "train", label_space="full")
    assert (root / BASE / "esseg_ade20k_full_ids.tsv").is_file()


def test_index_pickle_is_read_without_running_anything_it_names(tmp_path):
    target = tmp_path / "created_by_pickle"

    class Payload:
        def __reduce__(self):
            return (os.mkdir, (str(target),))

    path = tmp_path / "index_ade20k.pkl"
    write_index(path, ["wall", "floor"], extra={"payload": Payload()})
    assert read_object_names(path) == ["wall", "floor"] and not target.exists()
    write_index(path, np.array(["wall"]))  # an array, not a list: rebuilt only as an opaque placeholder
    with pytest.warns(UserWarning, match="no list of strings 'objectnames'"):
        assert read_object_names(path) is None


def test_inspect_counts_pixels_per_class(make_ade20k_full, capsys, tmp_path):
    root = make_ade20k_full({"val": [RAW, np.array([[2978, 2978, 0]])]})
    report = inspect_dataset("ade20k_full", root, "val")
    lookup, names = table(), ADE20KFull.classes
    want = np.zeros(847, int)
    for raw in (RAW, np.array([[2978, 2978, 0]])):
        for v in raw.ravel():
            if int(v) in lookup:
                want[lookup[int(v)]] += 1
    assert report["ok"] and report["num_classes"] == 847 and report["ignore_index"] == 65535
    assert [c["pixels"] for c in report["class_pixels"]] == want.tolist()
    assert report["ignored_pixels"] == 4 and report["class_pixels"][846]["name"] == names[846]
    out = tmp_path / "r.json"
    assert main(["data", "inspect", "--dataset", "ade20k_full", "--root", str(root), "--split", "val", "--json", str(out)]) == 0
    assert "wall" in capsys.readouterr().out and out.is_file()


def test_inspect_collects_bad_prepared_labels_and_goes_on(make_ade20k_full):
    root = make_ade20k_full({"train": [np.array([[1, 900]]), np.array([[2, 3]]), np.array([[4, 5]])]}, layout="prepared")
    labels = root / BASE / "annotations_detectron2/training"
    Image.fromarray(np.array([[4, 5]], np.uint8)).save(labels / "ADE_train_00000003.tif")
    report = inspect_dataset("ade20k_full", root, "train")
    reasons = {item["sample"]: item["reason"] for item in report["invalid"]}
    assert report["num_invalid"] == 2 and report["pixels"] == 2
    assert "label value 900 is not a valid ADE20K-Full (847 train ids) value (expected 0..846 or 65535)" in reasons["ADE_train_00000001"]
    assert "is 8-bit (image mode L)" in reasons["ADE_train_00000003"]


@pytest.mark.parametrize("kwargs, message", [
    ({"split": "test"}, "unknown ADE20K-Full split 'test'; use one of train, val"),
    ({"layout": "tiff"}, "unknown ADE20K-Full layout 'tiff'; use one of auto, raw, prepared"),
    ({"label_space": "150"}, "unknown ADE20K-Full label_space '150'; use '847' or 'full'"),
    ({"layout": "prepared", "label_space": "full"}, "label_space='full' needs the raw ADE20K_2021_17_01 release"),
])
def test_bad_options(make_ade20k_full, kwargs, message):
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ADE20KFull(make_ade20k_full(), **{"split": "train", **kwargs})


def test_wrong_layout_names_both_layouts(tmp_path):
    (tmp_path / BASE / "images").mkdir(parents=True)
    with pytest.raises(DatasetError, match=r"wrong layout .*annotations_detectron2/training.*images/ADE/training"):
        ADE20KFull(tmp_path, "train")


def test_missing_root_via_cli(tmp_path, capsys):
    line = run_error(capsys, ["data", "inspect", "--dataset", "ade20k_full", "--root", str(tmp_path / "absent")])
    assert "ADE20K-Full: root" in line and "does not exist" in line


def test_image_without_seg_png(make_ade20k_full):
    root = make_ade20k_full()
    next((root / RAW_TRAIN).rglob("ADE_train_00000002_seg.png")).unlink()
    with pytest.raises(DatasetError, match=r"1 listed file\(s\) missing, first .*apse__indoor/ADE_train_00000002_seg.png"):
        ADE20KFull(root, "train")


def test_seg_png_without_image(make_ade20k_full):
    root = make_ade20k_full()
    next((root / RAW_TRAIN).rglob("ADE_train_00000001.jpg")).unlink()
    with pytest.raises(DatasetError, match=r"1 _seg.png without an image, first .*street/ADE_train_00000001_seg.png"):
        ADE20KFull(root, "train")


def test_prepared_label_without_image(make_ade20k_full):
    root = make_ade20k_full(layout="prepared")
    (root / BASE / "images_detectron2/validation/ADE_val_00000001.jpg").unlink()
    with pytest.raises(DatasetError, match=r"1 label\(s\) without an image, first .*validation/ADE_val_00000001.tif"):
        ADE20KFull(root, "val")


def test_image_label_size_mismatch(make_ade20k_full, label_writers):
    root = make_ade20k_full()
    seg = next((root / RAW_TRAIN).rglob("ADE_train_00000001_seg.png"))
    label_writers.ade_seg(seg, np.ones((6, 7), int))
    with pytest.raises(DatasetError, match=r"ADE_train_00000001_seg.png is 7x6 but image .*ADE_train_00000001.jpg is 8x6"):
        ADE20KFull(root, "train").load_label(0)


def test_single_channel_seg_png_is_refused(make_ade20k_full):
    root = make_ade20k_full()
    seg = next((root / RAW_TRAIN).rglob("ADE_train_00000001_seg.png"))
    Image.fromarray(np.ones((6, 8), np.uint8)).save(seg)
    with pytest.raises(DatasetError, match=r"_seg.png has image mode L; expected the release's RGB _seg.png"):
        ADE20KFull(root, "train").load(0)


def test_rgb_where_the_prepared_index_map_is_expected(make_ade20k_full):
    root = make_ade20k_full(layout="prepared")
    Image.new("RGB", (8, 6)).save(root / BASE / "annotations_detectron2/validation/ADE_val_00000001.tif")
    with pytest.raises(DatasetError, match=r"ADE_val_00000001.tif has image mode RGB; expected a single-channel index map"):
        ADE20KFull(root, "val").load_label(0)


def test_unreadable_seg_png(make_ade20k_full):
    root = make_ade20k_full()
    next((root / RAW_TRAIN).rglob("ADE_train_00000001_seg.png")).write_bytes(b"not a png")
    with pytest.raises(DatasetError, match=r"cannot read label .*ADE_train_00000001_seg.png"):
        ADE20KFull(root, "train").load_label(0)


def test_prepared_value_out_of_range(make_ade20k_full):
    root = make_ade20k_full({"train": [np.array([[846, 847]])]}, layout="prepared")
    with pytest.raises(DatasetError, match=r"ADE_train_00000001.tif: label value 847 is not a valid"):
        ADE20KFull(root, "train").load_label(0)
