import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from esseg.data.coco_lvis_builder import (
    build_coco_lvis,
    merged_label_space,
    paint_mask,
    register_cli,
    save_uint16_png,
    stuff_lut,
)
from esseg.errors import DatasetError

REF = Path("/work/shared/reference")
needs_ref = pytest.mark.skipif(not REF.is_dir(), reason="/work/shared/reference not available")
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools + numpy 2
H, W = 8, 10  # not square: a transposed RLE would show

# Synthetic label space: LVIS ids 1..300; stuff 'blanket' 93 merges into LVIS 98 and stuff
# 'cabinet' 98 into LVIS 181, so relabelling in place (93 -> 98, then 98 -> 181) would chain.
SYN_LVIS = [{"id": i, "name": {98: "blanket", 181: "cabinet"}.get(i, f"class_{i}")} for i in range(1, 301)]
SYN_STUFF = [
    {"id": 93, "name": "blanket"}, {"id": 94, "name": "branch"}, {"id": 98, "name": "cabinet"},
    {"id": 182, "name": "wood"}, {"id": 183, "name": "other"},
]
SYN_VALUES = {93: 98, 94: 301, 98: 181, 182: 302, 183: 0}
REAL_VALUES = {93: 110, 94: 1204, 98: 181, 182: 1284, 183: 0}


def box(r0, r1, c0, c1, h=H, w=W):
    m = np.zeros((h, w), np.uint8)
    m[r0:r1, c0:c1] = 1
    return m


def rle(m):
    r = mask_utils.encode(np.asfortranarray(m))
    return {"size": list(r["size"]), "counts": r["counts"].decode()}  # str counts, as in the real JSONs


def rle_uncompressed(m):
    counts, value, run = [], 0, 0
    for v in m.ravel(order="F"):
        if v != value:
            counts.append(run)
            value, run = v, 0
        run += 1
    return {"size": list(m.shape), "counts": counts + [run]}


# image 1: LVIS annotations in JSON order (first wins), then stuff (first wins among stuff)
LVIS_ANNS_1 = [
    (300, [[0, 0, 6, 0, 6, 4, 0, 4]], box(0, 4, 0, 6)),  # polygon
    (7, "rle", box(2, 6, 3, 8)),  # overlaps the polygon at rows 2-3, cols 3-5
    (256, "raw", box(6, 8, 0, 2)),  # uncompressed RLE
]
STUFF_ANNS_1 = [
    (94, box(0, 4, 6, 10)),  # branch
    (98, np.maximum(box(0, 2, 6, 10), box(4, 6, 0, 2))),  # cabinet, loses rows 0-1 to branch
    (93, box(6, 8, 2, 6)),  # blanket
    (183, box(6, 8, 6, 10)),  # other
    (182, box(4, 6, 8, 10)),  # wood
]


def expected_mask_1(values):
    """Oracle: paint in reverse precedence order, so the last write is the winning annotation."""
    out = np.zeros((H, W), np.int64)
    for cat, m in reversed(STUFF_ANNS_1):
        out[m == 1] = values[cat]
    for cat, _, m in reversed(LVIS_ANNS_1):
        out[m == 1] = cat
    return out


def write_inputs(tmp_path, lvis_cats=SYN_LVIS, stuff_cats=SYN_STUFF):
    coco = tmp_path / "coco"
    images = [
        {"id": 1, "height": H, "width": W, "coco_url": "http://images.cocodataset.org/train2017/000000000001.jpg"},
        {"id": 2, "height": 6, "width": 5, "file_name": "000000000002.jpg"},  # v0.5 style, not in stuff
        {"id": 3, "height": 4, "width": 4, "coco_url": "http://images.cocodataset.org/val2017/000000000003.jpg"},
    ]
    for rel, (h, w) in [("train2017/000000000001.jpg", (H, W)), ("000000000002.jpg", (6, 5)), ("val2017/000000000003.jpg", (4, 4))]:
        (coco / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (w, h), (120, 30, 200)).save(coco / rel)
    lvis_anns = []
    for cat, seg, m in LVIS_ANNS_1:
        seg = rle(m) if seg == "rle" else rle_uncompressed(m) if seg == "raw" else seg
        lvis_anns.append({"id": len(lvis_anns) + 1, "image_id": 1, "category_id": cat, "segmentation": seg})
    lvis_anns.append({"id": 9, "image_id": 2, "category_id": 1, "segmentation": rle(box(1, 3, 1, 4, 6, 5))})
    stuff_anns = [{"id": 100 + i, "image_id": 1, "category_id": c, "segmentation": rle(m)} for i, (c, m) in enumerate(STUFF_ANNS_1)]
    stuff_anns.append({"id": 200, "image_id": 999, "category_id": 94, "segmentation": rle(box(0, 1, 0, 1))})
    lvis = {"images": images, "annotations": lvis_anns, "categories": lvis_cats}
    stuff = {
        "images": [{"id": 1, "height": H, "width": W}, {"id": 3, "height": 4, "width": 4}, {"id": 999, "height": H, "width": W}],
        "annotations": stuff_anns,
        "categories": stuff_cats,
    }
    (tmp_path / "lvis.json").write_text(json.dumps(lvis))
    (tmp_path / "stuff.json").write_text(json.dumps(stuff))
    return tmp_path / "lvis.json", tmp_path / "stuff.json", coco


def read_mask(path):
    im = Image.open(path)
    assert im.mode == "I;16"
    return np.asarray(im).astype(np.int64)


def read_categories(path):
    lines = [line.split("\t") for line in path.read_text().splitlines() if not line.startswith("#")][1:]
    return [{"id": int(r[0]), "name": r[1]} for r in lines]


@needs_ref
def test_label_space_matches_reference_tsv():
    lvis = read_categories(REF / "lvis_v1_categories.tsv")
    stuff = read_categories(REF / "coco_stuff_categories.tsv")
    rows = merged_label_space(lvis, stuff)
    ref = [line.split("\t") for line in (REF / "lvis_coco_merged_1284_classes.tsv").read_text().splitlines()[2:]]
    expected = [(int(r[0]), r[2], {"lvis_v1": "lvis"}.get(r[3], r[3]), int(r[4])) for r in ref]
    assert len(rows) == 1284
    assert rows == expected
    lut = stuff_lut(lvis, stuff)
    merged = {int(r[6]): int(r[0]) for r in ref if r[6]}  # the 10 stuff classes that are LVIS names
    assert len(merged) == 10
    assert all(lut[stuff_id] == value for stuff_id, value in merged.items())
    assert {k: int(lut[k]) for k in REAL_VALUES} == REAL_VALUES


def test_name_normalisation_merges_case_and_space_but_keeps_suffixes():
    lvis = [{"id": 1, "name": "table"}, {"id": 2, "name": "desk"}, {"id": 3, "name": "dining_table"}]
    stuff = [{"id": 92, "name": "Table "}, {"id": 93, "name": "desk-stuff"}, {"id": 94, "name": "dining table"}, {"id": 183, "name": "other"}]
    assert merged_label_space(lvis, stuff) == [
        (1, "table", "lvis", 1), (2, "desk", "lvis", 2), (3, "dining_table", "lvis", 3), (4, "desk-stuff", "coco_stuff", 93),
    ]
    assert stuff_lut(lvis, stuff)[[92, 93, 94, 183, 0, 50]].tolist() == [1, 4, 3, 0, 0, 0]


def test_paint_mask_uses_one_lookup_not_chained_relabelling():
    lut = stuff_lut(SYN_LVIS, SYN_STUFF)
    stuff = [{"category_id": 93, "segmentation": rle(box(0, 8, 0, 10))}]
    assert np.all(paint_mask(H, W, [], stuff, lut) == 98)  # blanket -> 98, not on to 181


def test_paint_mask_ignores_degenerate_polygons():
    # pycocotools reads a 4-number "polygon" as a box [x, y, w, h]; it must paint nothing
    anns = [{"category_id": 5, "segmentation": [[0, 0, 6, 4]]}, {"category_id": 6, "segmentation": [[0, 0, 6, 0, 6, 4, 0, 4], [1, 1]]}]
    np.testing.assert_array_equal(paint_mask(H, W, anns), 6 * box(0, 4, 0, 6))


def test_build_paints_lvis_first_then_stuff(tmp_path):
    lvis, stuff, coco = write_inputs(tmp_path)
    summary = build_coco_lvis(lvis, stuff, tmp_path / "out", coco_root=coco, progress=False)
    assert summary == {
        "images": 3, "written": 3, "skipped": 0, "no_annotations": 1, "not_in_stuff": 1,
        "missing_images": 0, "num_classes": 302, "out_dir": str(tmp_path / "out"),
    }
    out = tmp_path / "out"
    np.testing.assert_array_equal(read_mask(out / "masks/000000000001.png"), expected_mask_1(SYN_VALUES))
    np.testing.assert_array_equal(read_mask(out / "masks/000000000002.png"), box(1, 3, 1, 4, 6, 5))
    np.testing.assert_array_equal(read_mask(out / "masks/000000000003.png"), np.zeros((4, 4)))
    assert (out / "index.tsv").read_text().splitlines() == [
        f"# coco_root={coco.resolve()}",
        "image\tmask\theight\twidth",
        "train2017/000000000001.jpg\tmasks/000000000001.png\t8\t10",
        "000000000002.jpg\tmasks/000000000002.png\t6\t5",
        "val2017/000000000003.jpg\tmasks/000000000003.png\t4\t4",
    ]
    classes = (out / "classes.tsv").read_text().splitlines()
    assert classes[0] == "value\tname\tsource\tsource_id"
    assert classes[1:3] == ["1\tclass_1\tlvis\t1", "2\tclass_2\tlvis\t2"]
    assert classes[-2:] == ["301\tbranch\tcoco_stuff\t94", "302\twood\tcoco_stuff\t182"]
    assert not list(out.rglob("*.tmp"))


@needs_ref
def test_build_with_real_categories_gives_paper_ids(tmp_path):
    lvis, stuff, _ = write_inputs(
        tmp_path, read_categories(REF / "lvis_v1_categories.tsv"), read_categories(REF / "coco_stuff_categories.tsv")
    )
    summary = build_coco_lvis(lvis, stuff, tmp_path / "out", progress=False)
    assert summary["num_classes"] == 1284 and summary["missing_images"] is None
    mask = read_mask(tmp_path / "out/masks/000000000001.png")
    # blanket -> 110 (not chained on to desk-stuff 1217), cabinet -> 181, branch -> 1204, wood -> 1284, other -> 0
    assert (mask[7, 3], mask[4, 0], mask[0, 8], mask[5, 9], mask[7, 8]) == (110, 181, 1204, 1284, 0)
    np.testing.assert_array_equal(mask, expected_mask_1(REAL_VALUES))


def test_uint16_png_round_trips_values_above_255(tmp_path):
    values = np.array([[0, 1, 255, 256], [1203, 1204, 1284, 65535]], np.uint16)
    save_uint16_png(tmp_path / "m.png", values)
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), values)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.png"]


def test_rerun_rebuilds_only_missing_masks_and_drops_stale_temp(tmp_path):
    lvis, stuff, _ = write_inputs(tmp_path)
    out = tmp_path / "out"
    build_coco_lvis(lvis, stuff, out, progress=False)
    before = read_mask(out / "masks/000000000001.png")
    for name in ("000000000002.png", "000000000003.png"):
        os.utime(out / "masks" / name, ns=(10**9, 10**9))
    (out / "masks/000000000001.png").unlink()
    (out / "masks/000000000003.png.tmp").write_bytes(b"\x89PNG half written")
    summary = build_coco_lvis(lvis, stuff, out, progress=False)
    assert (summary["written"], summary["skipped"]) == (1, 2)
    np.testing.assert_array_equal(read_mask(out / "masks/000000000001.png"), before)
    assert [os.stat(out / "masks" / n).st_mtime_ns for n in ("000000000002.png", "000000000003.png")] == [10**9] * 2
    assert not list(out.rglob("*.tmp"))


def test_interrupted_build_leaves_no_partial_mask(tmp_path, monkeypatch):
    lvis, stuff, _ = write_inputs(tmp_path)
    out = tmp_path / "out"
    save, calls = Image.Image.save, []

    def failing_save(self, fp, *args, **kwargs):
        calls.append(fp)
        if len(calls) == 2:
            Path(fp).write_bytes(b"\x89PNG half written")
            raise OSError("disk full")
        return save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        build_coco_lvis(lvis, stuff, out, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in (out / "masks").glob("*.png")) == ["000000000001.png"]
    assert not (out / "index.tsv").exists()
    summary = build_coco_lvis(lvis, stuff, out, progress=False)
    assert (summary["written"], summary["skipped"]) == (2, 1)
    np.testing.assert_array_equal(read_mask(out / "masks/000000000002.png"), box(1, 3, 1, 4, 6, 5))
    assert not list(out.rglob("*.tmp"))


def test_workers_give_identical_output(tmp_path):
    lvis, stuff, coco = write_inputs(tmp_path)
    a = build_coco_lvis(lvis, stuff, tmp_path / "a", workers=0, coco_root=coco, progress=False)
    b = build_coco_lvis(lvis, stuff, tmp_path / "b", workers=2, coco_root=coco, progress=False)
    assert {**a, "out_dir": None} == {**b, "out_dir": None}
    for name in ("index.tsv", "classes.tsv"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    names = sorted(p.name for p in (tmp_path / "a/masks").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b/masks").iterdir()) and len(names) == 3
    for name in names:
        np.testing.assert_array_equal(read_mask(tmp_path / "a/masks" / name), read_mask(tmp_path / "b/masks" / name))


def _set(records, index, **values):
    records[index] = {k: v for k, v in {**records[index], **values}.items() if v is not _DROP}


_DROP = object()


def _broken(lvis_part=None, stuff_part=None):
    def apply(lvis, stuff):
        if lvis_part:
            lvis_part(lvis)
        if stuff_part:
            stuff_part(stuff)
        return lvis, stuff
    return apply


def _shorten_counts(lvis):
    lvis["annotations"][2]["segmentation"]["counts"][-1] -= 1


BROKEN_RECORDS = {  # one malformed record each, in the JSON named by the expected message
    "string_image_id": _broken(lambda d: _set(d["images"], 0, id="1")),
    "image_without_height": _broken(lambda d: _set(d["images"], 1, height=_DROP)),
    "string_category_id": _broken(lambda d: _set(d["annotations"], 1, category_id="7")),
    "annotation_without_id": _broken(stuff_part=lambda d: _set(d["annotations"], 0, id=_DROP)),
    "no_segmentation": _broken(lambda d: _set(d["annotations"], 0, segmentation=_DROP)),
    "odd_polygon": _broken(lambda d: _set(d["annotations"], 0, segmentation=[[0, 0, 6, 0, 6]])),
    "text_polygon": _broken(lambda d: _set(d["annotations"], 0, segmentation=["0 0 6 0 6 4"])),
    "rle_counts_sum": _broken(_shorten_counts),
    "rle_without_size": _broken(stuff_part=lambda d: _set(d["annotations"], 1, segmentation={"counts": "abc"})),
    "segmentation_number": _broken(lambda d: _set(d["annotations"], 1, segmentation=5)),
}


def _write(path, data):
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


@pytest.mark.parametrize(
    "case, match",
    [
        ("missing_lvis", "nope.json not found"),
        ("lvis_not_json", "bad.json is not valid JSON"),
        ("lvis_no_categories", "bad.json has no 'categories' list"),
        ("lvis_no_images", "bad.json has no 'images' list"),
        ("stuff_is_instances", "bad.json is not a COCO-Stuff 2017 JSON"),
        ("stuff_is_lvis", "lvis.json is not a COCO-Stuff 2017 JSON"),
        ("unknown_stuff_category", "stuff.json: annotation 100 has category_id 5"),
        ("rle_size_mismatch", "annotation 2 of image 1 is 4x4 but the image is 8x10"),
        ("other_label_space_in_out", "classes.tsv holds another label space"),
        ("string_image_id", "lvis.json: image '1' needs integer 'id', 'height' and 'width'"),
        ("image_without_height", "lvis.json: image 2 needs integer 'id', 'height' and 'width'"),
        ("string_category_id", "lvis.json: annotation 2 needs integer 'id', 'image_id' and 'category_id'"),
        ("annotation_without_id", "stuff.json: annotation None needs integer 'id'"),
        ("no_segmentation", "lvis.json: annotation 1 has no 'segmentation'"),
        ("odd_polygon", "lvis.json: annotation 1 has a polygon that is not a list of x, y numbers of even length"),
        ("text_polygon", "lvis.json: annotation 1 has a polygon that is not a list"),
        ("rle_counts_sum", "lvis.json: annotation 3 has RLE 'counts' covering 79 pixels, not 8 x 10"),
        ("rle_without_size", "stuff.json: annotation 101 has an RLE 'size' that is not \\[height, width\\]"),
        ("segmentation_number", "lvis.json: annotation 2 has a 'segmentation' that is neither polygons"),
    ],
)
def test_bad_input_raises_one_line_dataset_error(tmp_path, case, match):
    lvis, stuff, _ = write_inputs(tmp_path)
    lvis_data, stuff_data = json.loads(lvis.read_text()), json.loads(stuff.read_text())
    bad = tmp_path / "bad.json"
    args = {"lvis_json": lvis, "coco_stuff_json": stuff}
    if case == "missing_lvis":
        args["lvis_json"] = tmp_path / "nope.json"
    elif case == "lvis_not_json":
        args["lvis_json"] = _write(bad, '{"images": [')
    elif case == "lvis_no_categories":
        args["lvis_json"] = _write(bad, {"images": [], "annotations": []})
    elif case == "lvis_no_images":
        args["lvis_json"] = _write(bad, {"categories": [], "annotations": []})
    elif case == "stuff_is_instances":
        args["coco_stuff_json"] = _write(bad, {**stuff_data, "categories": [{"id": i, "name": f"t{i}"} for i in range(1, 91)]})
    elif case == "stuff_is_lvis":
        args["coco_stuff_json"] = lvis
    elif case == "unknown_stuff_category":
        stuff_data["annotations"][0]["category_id"] = 5
        _write(stuff, stuff_data)
    elif case == "rle_size_mismatch":
        lvis_data["annotations"][1]["segmentation"] = rle(box(0, 2, 0, 2, 4, 4))
        _write(lvis, lvis_data)
    elif case in BROKEN_RECORDS:
        lvis_data, stuff_data = BROKEN_RECORDS[case](lvis_data, stuff_data)
        _write(lvis, lvis_data)
        _write(stuff, stuff_data)
    elif case == "other_label_space_in_out":
        (tmp_path / "out").mkdir()
        (tmp_path / "out/classes.tsv").write_text("value\tname\tsource\tsource_id\n1\tx\tlvis\t1\n")
    with pytest.raises(DatasetError, match=match) as err:
        build_coco_lvis(**args, out_dir=tmp_path / "out", progress=False)
    assert "\n" not in str(err.value)


def test_cli_subcommand_builds_and_prints_summary(tmp_path, capsys):
    lvis, stuff, coco = write_inputs(tmp_path)
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers())
    args = parser.parse_args(
        ["build-coco-lvis", "--lvis-json", str(lvis), "--coco-stuff-json", str(stuff), str(stuff),
         "--out", str(tmp_path / "out"), "--coco-root", str(coco), "--workers", "0"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "3 images (302 classes): 3 masks written, 0 already there, 1 without any annotation" in out
    assert "1 not in the COCO-Stuff JSON(s), 0 images missing under --coco-root" in out
    assert (tmp_path / "out/masks/000000000001.png").is_file()


def test_real_sample_jsons(tmp_path):
    samples = REF / "samples"
    if not samples.is_dir():
        pytest.skip("/work/shared/reference/samples not available")
    lvis = json.loads((samples / "lvis_v0.5_val_100_example.json").read_text())
    stuff = json.loads((samples / "cocostuff_stuff_examples.json").read_text())
    lvis["images"] += stuff["images"]  # two images that only get stuff
    _write(tmp_path / "lvis.json", lvis)
    summary = build_coco_lvis(tmp_path / "lvis.json", samples / "cocostuff_stuff_examples.json", tmp_path / "out", progress=False)
    assert (summary["images"], summary["written"], summary["not_in_stuff"]) == (102, 102, 100)
    lut = stuff_lut(lvis["categories"], stuff["categories"])
    other_pixels = new_stuff_pixels = 0
    for im in lvis["images"]:
        mask = read_mask(tmp_path / f"out/masks/{im['id']:012d}.png")
        h, w = im["height"], im["width"]
        assert mask.shape == (h, w)
        anns = [a for a in lvis["annotations"] if a["image_id"] == im["id"]]
        raw = np.zeros((h, w), np.int64)
        if anns:
            for a in reversed(anns):
                raw[mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(a["segmentation"], h, w))) == 1] = a["category_id"]
            np.testing.assert_array_equal(mask, raw)
        else:
            for a in reversed([a for a in stuff["annotations"] if a["image_id"] == im["id"]]):
                raw[mask_utils.decode(a["segmentation"]) == 1] = a["category_id"]
            np.testing.assert_array_equal(mask, lut[raw])
            other_pixels += (raw == 183).sum()
            new_stuff_pixels += (mask > 1230).sum()  # v0.5 has 1230 LVIS classes
    assert other_pixels > 0 and new_stuff_pixels > 0


def test_cli_bad_record_is_one_line(tmp_path, capsys):
    from cli_checks import run_error

    lvis, stuff, _ = write_inputs(tmp_path)
    data = json.loads(lvis.read_text())
    data["annotations"][1]["id"] = "2"
    _write(lvis, data)
    line = run_error(capsys, ["build-coco-lvis", "--lvis-json", str(lvis), "--coco-stuff-json", str(stuff), "--out", str(tmp_path / "out")])
    assert line == f"esseg: error: {lvis}: annotation '2' needs integer 'id', 'image_id' and 'category_id'; check that the JSON is an unmodified release"
    assert not (tmp_path / "out").exists()
