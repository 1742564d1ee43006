import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_checks import run_error
from PIL import Image
from pycocotools import mask as mask_utils

import esseg.data.coco as coco_module
from esseg.cli import main
from esseg.data import build_dataset
from esseg.data.coco import COCODataset
from esseg.engine.config import load_config
from esseg.errors import ConfigError, DatasetError

REF = Path("/work/shared/reference/samples")
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="/work/shared/reference not available")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2
H, W = 10, 12  # not square: a transposed mask would show
CATEGORY_IDS = [1, 7, 300, 1000]  # sparse, above 255


def box(r0, r1, c0, c1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


def polygon(r0, r1, c0, c1):
    """A rectangle polygon; pycocotools fills exactly rows r0..r1-1, cols c0..c1-1 of it."""
    return [c0, r0, c1, r0, c1, r1, c0, r1]


def rle(m):
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}  # str counts, as in the real JSONs


def rle_uncompressed(m):
    flat = m.ravel(order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    runs = np.diff(bounds).tolist()
    return {"size": list(m.shape), "counts": ([0] if flat[0] else []) + runs}


# image 1 of the oracle fixture: (category, iscrowd, segmentation kind, boxes), in JSON order
ANNS_1 = [
    (1000, 0, "polygon", [(0, 8, 0, 10)]),  # area 80, painted first
    (7, 0, "rle", [(2, 6, 3, 9)]),  # area 24, on top of 1000 and of 300
    (300, 0, "raw", [(4, 10, 6, 12)]),  # area 36
    (1, 0, "polygon", [(0, 2, 9, 12), (8, 10, 0, 2)]),  # two polygons, area 10
    (7, 1, "rle", [(5, 10, 0, 4)]),  # crowd, area 20: over 1000, under the small part of 1
    (300, 0, "polygon", [(0, 2, 0, 3)]),  # area 6 ...
    (1, 0, "rle", [(1, 3, 1, 4)]),  # ... and area 6: equal areas, the later one ends on top
]


def union(boxes, h=H, w=W):
    return np.maximum.reduce([box(*b, h=h, w=w) for b in boxes])


def segmentation(kind, boxes):
    if kind == "polygon":
        return [polygon(*b) for b in boxes]
    return rle(union(boxes)) if kind == "rle" else rle_uncompressed(union(boxes))


def oracle(anns, train_id, ignore, unannotated, ignore_crowd=True, h=H, w=W):
    """Independent painter: boxes sliced in order of decreasing area (stable), the last write wins."""
    out = np.full((h, w), unannotated, np.int64)
    masks = [union(boxes, h, w).astype(bool) for _, _, _, boxes in anns]
    for i in sorted(range(len(anns)), key=lambda i: -int(masks[i].sum())):
        cat, crowd = anns[i][:2]
        out[masks[i]] = ignore if crowd and ignore_crowd else train_id[cat]
    return out


def write_image(path, h, w, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def instances(extra_categories=(), split="train2017"):
    """The oracle fixture as a JSON dict; image 2 has no annotation, image 3 a single polygon."""
    anns = [
        {"id": 10 + i, "image_id": 1, "category_id": cat, "iscrowd": crowd, "segmentation": segmentation(kind, boxes)}
        for i, (cat, crowd, kind, boxes) in enumerate(ANNS_1)
    ]
    anns.append({"id": 50, "image_id": 3, "category_id": 300, "iscrowd": 0, "segmentation": [polygon(1, 3, 1, 5)]})
    ids = [*CATEGORY_IDS, *extra_categories]
    return {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "height": H, "width": W},
            {"id": 2, "file_name": "000000000002.jpg", "height": 4, "width": 6},
            {"id": 3, "file_name": "000000000003.jpg", "height": 5, "width": 7},
        ],
        "annotations": anns,
        "categories": [{"id": i, "name": f"class_{i}"} for i in reversed(ids)],  # not sorted on purpose
    }


def make_instances(root, data=None, split="train2017"):
    data = data or instances()
    write_json(root / "annotations" / f"instances_{split}.json", data)
    for i, im in enumerate(data["images"]):
        write_image(root / split / im["file_name"], im.get("height", H), im.get("width", W), seed=i)
    return root


@pytest.fixture(autouse=True)
def small_decode_chunk(monkeypatch):
    monkeypatch.setattr(coco_module, "DECODE_CHUNK", 2)  # several chunks per image: the chunk seams are tested


# ---------------------------------------------------------------------------- oracle


@pytest.mark.parametrize("extra", [(), tuple(range(400, 700))])  # C = 4 (ignore 255) and C = 304 (ignore 65535)
def test_instance_masks_equal_an_independent_painter(tmp_path, extra):
    root = make_instances(tmp_path / "coco", instances(extra))
    ds = build_dataset("coco", root=root, split="train2017")
    all_ids = sorted([*CATEGORY_IDS, *extra])
    train_id = {c: i for i, c in enumerate(all_ids)}
    assert ds.classes == tuple(f"class_{c}" for c in all_ids) and ds.num_classes == len(all_ids)
    assert ds.ignore_index == (255 if not extra else 65535)
    image, label = ds.load(0)
    assert image.size == (W, H) and label.dtype == np.int64
    expected = oracle(ANNS_1, train_id, ds.ignore_index, ds.ignore_index)
    np.testing.assert_array_equal(label, expected)
    assert train_id[1000] == (3 if not extra else 303) and (label == train_id[1000]).any()
    assert label[1, 1] == train_id[1] and label[0, 0] == train_id[300]  # the tie: JSON order, later on top
    assert label[6, 1] == ds.ignore_index and label[9, 1] == train_id[1]  # crowd over 1000, under the smaller 1
    np.testing.assert_array_equal(ds.load_label(1), np.full((4, 6), ds.ignore_index))  # no annotation: all unknown
    expected_3 = np.full((5, 7), ds.ignore_index)
    expected_3[1:3, 1:5] = train_id[300]
    np.testing.assert_array_equal(ds.load_label(2), expected_3)
    assert [ds.sample_name(i) for i in range(3)] == ["000000000001", "000000000002", "000000000003"]


def test_background_class_and_crowd_options(tmp_path):
    root = make_instances(tmp_path / "coco")
    ds = COCODataset(root, "train2017", background="background")
    train_id = {c: i + 1 for i, c in enumerate(CATEGORY_IDS)}
    assert ds.classes[0] == "background" and ds.num_classes == 5
    np.testing.assert_array_equal(ds.load_label(0), oracle(ANNS_1, train_id, 255, 0))
    assert (ds.load_label(0) == 255).any()  # crowd still ignored
    np.testing.assert_array_equal(ds.load_label(1), np.zeros((4, 6)))
    with_crowd = COCODataset(root, "train2017", background="background", ignore_crowd=False)
    label = with_crowd.load_label(0)
    np.testing.assert_array_equal(label, oracle(ANNS_1, train_id, 255, 0, ignore_crowd=False))
    assert label[6, 1] == train_id[7] and not (label == 255).any()


def test_class_image_counts_from_the_json(tmp_path):
    data = instances()
    data["annotations"].append({"id": 60, "image_id": 2, "category_id": 7, "iscrowd": 1, "segmentation": [polygon(0, 2, 0, 2)]})
    root = make_instances(tmp_path / "coco", data)
    # images holding each category: 1 -> {1}, 7 -> {1} (image 2 only as crowd), 300 -> {1, 3}, 1000 -> {1}
    np.testing.assert_array_equal(COCODataset(root, "train2017").class_image_counts(), [1, 1, 2, 1])
    np.testing.assert_array_equal(COCODataset(root, "train2017", ignore_crowd=False).class_image_counts(), [1, 2, 2, 1])
    counts = COCODataset(root, "train2017", background="bg").class_image_counts()
    assert counts.dtype == np.int64 and counts.tolist() == [3, 1, 1, 2, 1]


def test_paths_relative_to_root_or_absolute(tmp_path):
    data = instances()
    json_path = write_json(tmp_path / "elsewhere" / "my.json", data)
    for i, im in enumerate(data["images"]):
        write_image(tmp_path / "coco" / "pics" / im["file_name"], im["height"], im["width"], seed=i)
    ds = COCODataset(tmp_path / "coco", "whatever", annotation_file=json_path, image_dir="pics")
    assert ds.annotation_file == json_path and ds.image_path(0) == tmp_path / "coco" / "pics" / "000000000001.jpg"
    assert ds.load(2)[0].size == (7, 5)
    ds = COCODataset(None, "x", annotation_file=json_path, image_dir=tmp_path / "coco" / "pics")
    assert len(ds) == 3 and ds.load(0)[1].shape == (H, W)


# ---------------------------------------------------------------------------- panoptic


def test_panoptic_json_and_png(tmp_path):
    root = tmp_path / "coco"
    ids = np.zeros((6, 8), np.int64)  # 0 = void
    ids[0:3, 0:4] = 5  # R only
    ids[3:6, 0:4] = 256 * 3 + 5  # uses G
    ids[0:6, 4:6] = 65536 * 2 + 7  # uses B (crowd)
    ids[0:2, 6:8] = 9
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
    (root / "annotations" / "panoptic_val2017").mkdir(parents=True)
    Image.fromarray(rgb).save(root / "annotations" / "panoptic_val2017" / "000000000001.png")
    segments = [
        {"id": 5, "category_id": 1, "iscrowd": 0}, {"id": 256 * 3 + 5, "category_id": 1000, "iscrowd": 0},
        {"id": 65536 * 2 + 7, "category_id": 7, "iscrowd": 1}, {"id": 9, "category_id": 300, "iscrowd": 0},
        {"id": 11, "category_id": 300, "iscrowd": 0},  # listed but absent from the PNG: harmless
    ]
    write_json(root / "annotations" / "panoptic_val2017.json", {
        "images": [{"id": 1, "file_name": "000000000001.jpg", "height": 6, "width": 8}],
        "annotations": [{"image_id": 1, "file_name": "000000000001.png", "segments_info": segments}],
        "categories": [{"id": c, "name": f"class_{c}", "isthing": 1} for c in CATEGORY_IDS],
    })
    write_image(root / "val2017" / "000000000001.jpg", 6, 8)
    ds = COCODataset(root, "val2017")
    assert ds.is_panoptic and ds.annotation_file.name == "panoptic_val2017.json"
    expected = np.full((6, 8), 255)
    expected[0:3, 0:4], expected[3:6, 0:4], expected[0:2, 6:8] = 0, 3, 2
    np.testing.assert_array_equal(ds.load(0)[1], expected)
    np.testing.assert_array_equal(ds.class_image_counts(), [1, 0, 1, 1])
    with_bg = COCODataset(root, "val2017", background="background", ignore_crowd=False)
    expected_bg = np.where(expected == 255, 0, expected + 1)
    expected_bg[0:6, 4:6] = 2
    np.testing.assert_array_equal(with_bg.load_label(0), expected_bg)
    # a PNG id that segments_info does not list is a per-sample error
    data = json.loads((root / "annotations" / "panoptic_val2017.json").read_text())
    data["annotations"][0]["segments_info"] = segments[1:]
    write_json(root / "annotations" / "panoptic_val2017.json", data)
    with pytest.raises(DatasetError, match="holds segment id 5, which is not in its segments_info"):
        COCODataset(root, "val2017").load_label(0)
    data["annotations"][0]["segments_info"] = [*segments[:3], {"id": 9, "category_id": 301, "iscrowd": 0}]
    write_json(root / "annotations" / "panoptic_val2017.json", data)
    with pytest.raises(DatasetError, match=r"image 1 \(000000000001\): segment 9 has category_id 301, which is not in 'categories'"):
        COCODataset(root, "val2017").load_label(0)


# ---------------------------------------------------------------------------- LVIS


def lvis_fixture(tmp_path):
    root = tmp_path / "coco"
    url = "http://images.cocodataset.org/{}/{:012d}.jpg"
    images = [
        {"id": 1, "coco_url": url.format("train2017", 1), "height": H, "width": W, "neg_category_ids": [300],
         "not_exhaustive_category_ids": []},
        {"id": 2, "coco_url": url.format("val2017", 2), "height": 4, "width": 6, "neg_category_ids": [],
         "not_exhaustive_category_ids": [7]},
    ]
    for im in images:
        write_image(root / im["coco_url"].split("/")[-2] / im["coco_url"].split("/")[-1], im["height"], im["width"])
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1000, "segmentation": [polygon(0, 4, 0, 6)]},
        {"id": 2, "image_id": 1, "category_id": 7, "segmentation": [polygon(2, 6, 3, 8)]},
        {"id": 3, "image_id": 2, "category_id": 1, "segmentation": [polygon(1, 3, 1, 4)]},
    ]
    cats = [{"id": c, "name": f"class_{c}", "image_count": 99, "frequency": "r"} for c in CATEGORY_IDS]
    write_json(root / "annotations" / "lvis_v1_val.json", {"images": images, "annotations": anns, "categories": cats})
    return root


def test_lvis_json_images_through_coco_url_and_federated_meaning(tmp_path):
    root = lvis_fixture(tmp_path)
    ds = COCODataset(root, "val", annotation_file="annotations/lvis_v1_val.json")
    assert ds.is_lvis and ds.image_path(0) == root / "train2017" / "000000000001.jpg"
    assert ds.image_path(1) == root / "val2017" / "000000000002.jpg"
    expected = np.full((H, W), 255)
    expected[0:4, 0:6], expected[2:6, 3:8] = 3, 1  # larger first; unannotated stays unknown
    np.testing.assert_array_equal(ds.load(0)[1], expected)
    assert ds.load(1)[1].tolist() == [[255] * 6, [255, 0, 0, 0, 255, 255], [255, 0, 0, 0, 255, 255], [255] * 6]
    np.testing.assert_array_equal(ds.class_image_counts(), [1, 1, 0, 1])  # counted, not the JSON's image_count
    flat = COCODataset(root, "val", annotation_file="annotations/lvis_v1_val.json", image_dir="val2017")
    assert flat.image_path(1) == root / "val2017" / "000000000002.jpg"  # image_dir / url name
    with pytest.raises(ConfigError, match="LVIS JSON: LVIS is federated .* drop the background option"):
        COCODataset(root, "val", annotation_file="annotations/lvis_v1_val.json", background="background")


# ---------------------------------------------------------------------------- real samples


def reference_oracle(data, image, train_id, ignore):
    """Per-annotation pycocotools decode, painted in decreasing pixel area (stable), last write wins."""
    h, w = image["height"], image["width"]
    out = np.full((h, w), ignore, np.int64)
    painted = []
    for ann in (a for a in data["annotations"] if a["image_id"] == image["id"]):
        seg = ann["segmentation"]
        rle_ = mask_utils.merge(mask_utils.frPyObjects(seg, h, w)) if isinstance(seg, list) else seg
        painted.append((mask_utils.decode(rle_).astype(bool), ignore if ann.get("iscrowd") else train_id[ann["category_id"]]))
    for m, value in sorted(painted, key=lambda p: -int(p[0].sum())):
        out[m] = value
    return out


@needs_ref
@pytest.mark.parametrize("name", ["cocostuff_stuff_examples.json", "lvis_v0.5_val_100_example.json"])
def test_real_reference_samples(tmp_path, monkeypatch, name):
    monkeypatch.setattr(coco_module, "DECODE_CHUNK", 32)
    data = json.loads((REF / name).read_text())
    ds = COCODataset(tmp_path, "train2017", annotation_file=REF / name, image_dir=tmp_path / "images")
    train_id = {c: i for i, c in enumerate(sorted(c["id"] for c in data["categories"]))}
    assert ds.num_classes == len(data["categories"]) and ds.is_lvis == name.startswith("lvis")
    for i, image in enumerate(data["images"][:12]):
        np.testing.assert_array_equal(ds.load_label(i), reference_oracle(data, image, train_id, ds.ignore_index))
    image = data["images"][0]  # LVIS v0.5: file_name COCO_val2014_... is absent, the coco_url name is used
    write_image(tmp_path / "images" / image["coco_url"].split("/")[-1], image["height"], image["width"])
    assert ds.load(0)[0].size == (image["width"], image["height"])


# ---------------------------------------------------------------------------- cache


def test_cache_writes_uint16_pngs_keyed_by_json_and_options(tmp_path, monkeypatch):
    root = make_instances(tmp_path / "coco", instances(tuple(range(400, 700))))  # C = 304: ignore 65535
    cache = tmp_path / "cache"
    ds = COCODataset(root, "train2017", cache_dir=cache)
    label = ds.load_label(0)
    files = sorted(ds.cache_dir.glob("*.png"))
    assert [f.name for f in files] == ["1.png"] and ds.cache_dir.parent == cache
    stored = Image.open(files[0])
    assert stored.mode.startswith("I;16") and np.array_equal(np.asarray(stored), label) and (label == 65535).any()
    assert not list(ds.cache_dir.glob(".*.tmp"))
    monkeypatch.setattr(COCODataset, "_render", lambda *a: pytest.fail("rendered although cached"))
    np.testing.assert_array_equal(COCODataset(root, "train2017", cache_dir=cache).load_label(0), label)
    monkeypatch.undo()
    assert COCODataset(root, "train2017", cache_dir=cache, ignore_crowd=False).cache_dir != ds.cache_dir
    assert COCODataset(root, "train2017", cache_dir=cache, background="bg").cache_dir != ds.cache_dir
    data = instances(tuple(range(400, 700)))
    data["annotations"][0]["category_id"] = 7  # same file name, other content: other cache folder, new mask
    make_instances(root, data)
    changed = COCODataset(root, "train2017", cache_dir=cache)
    assert changed.cache_dir != ds.cache_dir and not np.array_equal(changed.load_label(0), label)


def test_cache_uses_int32_npy_above_65535_classes(tmp_path):
    data = instances(tuple(range(2000, 2000 + 65535)))  # C = 65539 classes
    data["annotations"].append({"id": 70, "image_id": 2, "category_id": 2000 + 65534, "segmentation": [polygon(0, 2, 0, 2)]})
    root = make_instances(tmp_path / "coco", data)
    ds = COCODataset(root, "train2017", cache_dir=tmp_path / "cache")
    assert ds.num_classes == 65539 and ds.ignore_index == 2**31 - 1  # 65535 is a real class id here
    label = ds.load_label(1)
    assert label[0, 0] == 65538 and label[3, 5] == 2**31 - 1
    stored = np.load(ds.cache_dir / "2.npy")
    assert stored.dtype == np.int32 and np.array_equal(stored, label)
    np.testing.assert_array_equal(COCODataset(root, "train2017", cache_dir=tmp_path / "cache").load_label(1), label)


# ---------------------------------------------------------------------------- bad input


def test_polygons_of_fewer_than_three_points_cover_nothing(tmp_path):
    """Degenerate polygons (real COCO has a few) are dropped: the mask is the one without them."""
    data = instances()
    expected = COCODataset(make_instances(tmp_path / "a", data), "train2017").load_label(0)
    data["annotations"].append(ann(segmentation=[[0, 0, 4, 0]]))  # 2 points: a 4-number list pycocotools reads as a box
    data["annotations"].append(ann(id=98, segmentation=[[0, 0, 4, 0], [0, 0, 3, 3]]))
    np.testing.assert_array_equal(COCODataset(make_instances(tmp_path / "b", data), "train2017").load_label(0), expected)


def ann(**fields):
    return {"id": 99, "image_id": 1, "category_id": 7, "iscrowd": 0, "segmentation": [polygon(0, 2, 0, 2)], **fields}


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"].append(ann(category_id=5)), "annotation 99 has category_id 5, which is not in 'categories'"),
    (lambda d: d["annotations"].append(ann(category_id="7")), "category_id '7', which is not in 'categories'; COCO ids are JSON integers"),
    (lambda d: d["annotations"].append(ann(segmentation=[[0, 0, 4, 0, 4]])), "polygon with an odd number of coordinates (5)"),
    (lambda d: d["annotations"].append(ann(segmentation=[])), "has an empty segmentation"),
    (lambda d: d["annotations"].append(ann(segmentation=rle(box(0, 2, 0, 2, h=W, w=H)))),
     f"has an RLE of size [{W}, {H}] but the image is [{H}, {W}]"),
    (lambda d: d["annotations"].append(ann(segmentation={"size": [H, W], "counts": [3, 4]})),
     f"uncompressed RLE whose counts are not non-negative integers summing to {H}x{W}"),
    (lambda d: d["annotations"].append(ann(segmentation={"size": [H, W], "counts": "0`<"})), "cannot be decoded"),
    (lambda d: d["annotations"].append(ann(segmentation={"counts": "abc"})), "has no valid 'segmentation'"),
    (lambda d: d["images"][0].pop("height"), "has height=None, width=12; both must be positive integers"),
])
def test_per_sample_problems_raise_at_load_naming_the_image(tmp_path, change, message):
    data = instances()
    change(data)
    ds = COCODataset(make_instances(tmp_path / "coco", data), "train2017")  # construction succeeds
    with pytest.raises(DatasetError) as err:
        ds.load_label(0)
    text = str(err.value)
    assert message in text and "instances_train2017.json: image 1 (000000000001)" in text and "\n" not in text
    ds.load_label(2)  # the other samples stay readable


def test_missing_image_file_names_the_places_looked(tmp_path):
    root = make_instances(tmp_path / "coco")
    (root / "train2017" / "000000000002.jpg").unlink()
    ds = COCODataset(root, "train2017")
    assert ds.load_label(1).shape == (4, 6)  # the label needs no image
    with pytest.raises(DatasetError, match=r"image 2 \(000000000002\): image file not found \(looked for .*000000000002.jpg\); set image_dir="):
        ds.load(1)
    write_image(root / "train2017" / "000000000003.jpg", 7, 5)  # transposed
    with pytest.raises(DatasetError, match=r"image 3 \(000000000003\): the image file is 5x7 but the JSON says 7x5"):
        ds.load(2)


@pytest.mark.parametrize("change, message", [
    (lambda d: [1, 2], "is not a COCO-format JSON: expected an object with images, annotations, categories lists"),
    (lambda d: {k: v for k, v in d.items() if k != "annotations"}, "is not a COCO-format JSON: no 'annotations' list"),
    (lambda d: {**d, "categories": {"1": "a"}}, "is not a COCO-format JSON: no 'categories' list"),
    (lambda d: {**d, "images": []}, "lists no images (empty split 'train2017'); check --split / annotation_file"),
    (lambda d: {**d, "categories": []}, "has an empty 'categories' list"),
    (lambda d: {**d, "annotations": [*d["annotations"], ann(image_id=42)]},
     "annotation 99 has image_id 42, which is not the id of any entry of 'images'; fix or drop the annotation"),
    (lambda d: {**d, "annotations": [*d["annotations"], ann(image_id="1")]}, "image_id '1', which is not the id of any entry of 'images'; COCO ids are JSON integers"),
    (lambda d: {**d, "images": [{**d["images"][0], "id": "1"}, *d["images"][1:]]}, "has id '1', expected an integer; COCO ids are JSON integers"),
    (lambda d: {**d, "categories": [*d["categories"], {"id": "8", "name": "x"}]}, "category {'id': '8', 'name': 'x'} has id '8', expected an integer"),
    (lambda d: {**d, "categories": [*d["categories"], {"id": 7, "name": "again"}]}, "category id 7 occurs more than once"),
])
def test_json_level_problems_raise_at_construction(tmp_path, change, message):
    path = write_json(tmp_path / "coco" / "annotations" / "instances_train2017.json", change(instances()))
    with pytest.raises(DatasetError) as err:
        COCODataset(tmp_path / "coco", "train2017")
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_missing_files_and_bad_options(tmp_path):
    root = make_instances(tmp_path / "coco")
    with pytest.raises(DatasetError, match=r"no annotation file for split 'val2017': looked for .*instances_val2017.json and .*panoptic_val2017.json"):
        COCODataset(root, "val2017")
    with pytest.raises(DatasetError, match="coco: no dataset root given"):
        COCODataset(None, "train2017")
    (root / "bad.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"bad.json is not valid JSON"):
        COCODataset(root, "train2017", annotation_file="bad.json")
    with pytest.raises(ConfigError, match="already has a category named 'class_7'"):
        COCODataset(root, "train2017", background="class_7")


def test_cli_errors_are_one_line(tmp_path, capsys):
    root = tmp_path / "coco"
    write_json(root / "annotations" / "instances_train.json", {"images": [], "annotations": []})
    line = run_error(capsys, ["data", "inspect", "--dataset", "coco", "--root", str(root), "--split", "train"])
    assert "instances_train.json is not a COCO-format JSON: no 'categories' list" in line
    line = run_error(capsys, ["data", "inspect", "--dataset", "coco", "--root", str(root), "--split", "val"])
    assert "no annotation file for split 'val'" in line


# ---------------------------------------------------------------------------- CLI: inspect and train


def test_inspect_counts_pixels_and_lists_bad_samples(tmp_path, capsys):
    data = instances()
    data["images"] += [
        {"id": 4, "file_name": "000000000004.jpg", "height": 3, "width": 3},
        {"id": 5, "file_name": "000000000005.jpg", "height": 3, "width": 3},
    ]
    data["annotations"] += [ann(id=80, image_id=4, category_id=2), ann(id=81, image_id=5, segmentation=[[0, 0, 1]])]
    root = make_instances(tmp_path / "coco", data, split="val2017")
    assert main(["data", "inspect", "--dataset", "coco", "--root", str(root), "--split", "val2017", "--json", "-"]) == 2
    report = json.loads(capsys.readouterr().out)
    train_id = {c: i for i, c in enumerate(CATEGORY_IDS)}
    label_3 = np.full((5, 7), 255)
    label_3[1:3, 1:5] = train_id[300]
    labels = [oracle(ANNS_1, train_id, 255, 255), np.full((4, 6), 255), label_3]
    counts = sum(np.bincount(lab[lab != 255].ravel(), minlength=4) for lab in labels)
    assert [c["pixels"] for c in report["class_pixels"]] == counts.tolist() and counts.min() > 0
    assert report["ignored_pixels"] == sum(int((lab == 255).sum()) for lab in labels)
    assert report["num_samples"] == 5 and report["num_invalid"] == 2
    reasons = {item["sample"]: item["reason"] for item in report["invalid"]}
    assert "annotation 80 has category_id 2, which is not in 'categories'" in reasons["000000000004"]
    assert "odd number of coordinates (3)" in reasons["000000000005"]


def test_tiny_training_run_through_the_cli(tmp_path):
    data = instances()
    data["images"] = [{**im, "height": 20, "width": 24} for im in data["images"]]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 1]  # image 1's RLEs are 10x12
    root = make_instances(tmp_path / "coco", data, split="train")
    shutil.copytree(root / "train", root / "val")
    write_json(root / "annotations" / "instances_val.json", data)
    out = tmp_path / "run"
    argv = [
        "train", "--dataset", "coco", "--data-root", str(root),
        "--set", "data.train_split=train", "data.val_split=val", "data.crop_size=16", "data.options={background: bg}",
        "model.embedding_dim=4", "loss.k=2", "train.log_every=1", "train.tensorboard=false",
        "--iters", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out),
    ]
    assert main(argv) == 0
    ckpt = torch.load(out / "last.pt", weights_only=True)
    assert list(ckpt["class_names"]) == ["bg", *(f"class_{c}" for c in CATEGORY_IDS)]
    assert ckpt["config"]["data"]["dataset"] == "coco" and ckpt["config"]["train"]["iters"] == 2


def test_template_config_validates_and_its_options_build_the_dataset(tmp_path):
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "coco_template.yaml")
    assert cfg.data.dataset == "coco" and cfg.model.method == "ess"
    root = make_instances(tmp_path / "coco", split=cfg.data.train_split)
    ds = build_dataset("coco", root=root, split=cfg.data.train_split, **cfg.data.options)
    assert len(ds) == 3 and ds.load_label(0).shape == (H, W)
