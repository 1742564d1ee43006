"""Build the paper's 1284-class COCO+LVIS semantic masks (Sec. 4.3) from the LVIS and COCO-Stuff JSONs.

Label space (derived from the two JSONs' category lists, written to ``classes.tsv``):

- ``1..N``: the LVIS category ids (LVIS v1: N = 1203), kept as they are;
- a COCO-Stuff class whose normalised name equals an LVIS name takes that LVIS id
  (with the real lists: banner, blanket, cabinet, cupboard, curtain, napkin, pillow, salad,
  table, towel);
- the other stuff classes get ``N+1, N+2, ...`` in increasing COCO id order (``1204..1284``);
- COCO 'other' (183) and unannotated pixels are ``0`` (ignored).

Names are normalised by :func:`normalise_name` only (case, surrounding space, inner spaces ->
``_``). Suffixes are kept on purpose: COCO-Stuff names ``desk-stuff``/``mirror-stuff`` are
suffixed to stay distinct from the thing classes desk/mirror, and the paper keeps them apart
(1284 classes; stripping suffixes would give 1282).

Painting: LVIS annotations first, then COCO-Stuff fills only pixels still 0; within one source
the first annotation (in JSON order) at a pixel wins. Stuff ids go through one lookup table
(``lut[stuff_mask]``), never relabelled class by class in place (that chains mappings).

Output directory (one per LVIS split, see ``docs/datasets_coco_lvis.md``)::

    out/classes.tsv             value, name, source, source_id   (value 1..1284)
    out/index.tsv               image, mask, height, width        (image relative to coco_root)
    out/masks/000000xxxxxx.png  uint16 PNG (PIL mode "I;16"), 0 = ignore

Masks are written to ``<name>.tmp`` in the same folder and ``os.replace``d, so a rerun skips
finished masks and never sees a partial one.

Malformed JSON records (missing keys, string ids, polygons or RLE of the wrong shape) are refused
before any mask is painted, with one line naming the JSON and the record's id.
"""

from __future__ import annotations

import gc
import json
import multiprocessing
import os
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

from esseg.errors import DatasetError

CLASSES_FILE = "classes.tsv"
INDEX_FILE = "index.tsv"
MASK_DIR = "masks"
LVIS_SOURCE = "lvis"
STUFF_SOURCE = "coco_stuff"
STUFF_OTHER = "other"
FIRST_STUFF_ID = 92  # COCO-Stuff 2017 JSONs hold stuff ids 92..182 plus 183 'other'


def normalise_name(name: str) -> str:
    """The form in which LVIS and COCO-Stuff names are compared: lower case, spaces -> ``_``."""
    return "_".join(name.strip().lower().split())


def _stuff_values(lvis_categories: Sequence[dict], stuff_categories: Sequence[dict]) -> dict[int, int]:
    """COCO-Stuff id -> merged mask value (0 for 'other')."""
    lvis_ids = sorted(c["id"] for c in lvis_categories)
    if lvis_ids != list(range(1, len(lvis_ids) + 1)):
        raise DatasetError(f"LVIS category ids must be 1..{len(lvis_ids)} without gaps; is this an LVIS JSON?")
    lvis_by_name = {normalise_name(c["name"]): c["id"] for c in lvis_categories}
    values, next_value = {}, len(lvis_ids) + 1
    for cat in sorted(stuff_categories, key=lambda c: c["id"]):
        name = normalise_name(cat["name"])
        if name == STUFF_OTHER:
            values[cat["id"]] = 0
        elif name in lvis_by_name:
            values[cat["id"]] = lvis_by_name[name]
        else:
            values[cat["id"]] = next_value
            next_value += 1
    return values


def merged_label_space(lvis_categories: Sequence[dict], stuff_categories: Sequence[dict]) -> list[tuple]:
    """The merged COCO+LVIS classes as rows ``(value, name, source, source_id)``, sorted by value.

    Args:
        lvis_categories: the ``categories`` list of an LVIS JSON (dicts with ``id``, ``name``;
            ids must be ``1..N``).
        stuff_categories: the ``categories`` list of a COCO-Stuff 2017 JSON (ids 92..183).

    Mask value ``v`` is train id ``v - 1``; value 0 (unlabelled, COCO 'other') has no row.
    Stuff classes merged into an LVIS class have no row of their own (see :func:`stuff_lut`).
    """
    values = _stuff_values(lvis_categories, stuff_categories)
    rows = [(c["id"], c["name"], LVIS_SOURCE, c["id"]) for c in sorted(lvis_categories, key=lambda c: c["id"])]
    first_new = len(rows) + 1
    rows += [
        (values[c["id"]], c["name"], STUFF_SOURCE, c["id"])
        for c in sorted(stuff_categories, key=lambda c: c["id"])
        if values[c["id"]] >= first_new
    ]
    return rows


def stuff_lut(lvis_categories: Sequence[dict], stuff_categories: Sequence[dict]) -> np.ndarray:
    """Lookup table ``lut[coco_stuff_id] -> merged value`` (uint16; unknown ids and 'other' -> 0).

    Apply it once to a whole stuff mask, ``lut[stuff_mask]``.
    """
    values = _stuff_values(lvis_categories, stuff_categories)
    lut = np.zeros(max(values, default=0) + 1, dtype=np.uint16)
    for stuff_id, value in values.items():
        lut[stuff_id] = value
    return lut


def _decode(ann: dict, height: int, width: int) -> np.ndarray:
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    try:
        if isinstance(seg, list):  # polygons; fewer than 3 points would be read as a box or fail
            polygons = [p for p in seg if len(p) >= 6]
            if not polygons:
                return np.zeros((height, width), dtype=bool)
            rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
        elif isinstance(seg.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(seg, height, width)
        else:  # compressed RLE
            rle = seg
        m = mask_utils.decode(rle)
    except (TypeError, ValueError, KeyError, IndexError, AttributeError) as err:
        raise DatasetError(
            f"annotation {ann.get('id')} of image {ann.get('image_id')}: cannot decode its segmentation ({err}); "
            "check that the JSON is an unmodified LVIS / COCO-Stuff release"
        ) from None
    if m.shape != (height, width):
        raise DatasetError(
            f"annotation {ann.get('id')} of image {ann.get('image_id')} is {m.shape[0]}x{m.shape[1]} "
            f"but the image is {height}x{width}; the LVIS and COCO-Stuff JSONs must describe the same COCO 2017 images"
        )
    return m.astype(bool)


def _paint(mask: np.ndarray, annotations: Iterable[dict]) -> None:
    height, width = mask.shape
    for ann in annotations:
        mask[_decode(ann, height, width) & (mask == 0)] = ann["category_id"]


def paint_mask(
    height: int,
    width: int,
    lvis_annotations: Sequence[dict],
    stuff_annotations: Sequence[dict] = (),
    lut: np.ndarray | None = None,
) -> np.ndarray:
    """Paint one image's merged mask.

    Args:
        height, width: image size.
        lvis_annotations: LVIS annotations (``segmentation`` as polygons or RLE,
            ``category_id`` = merged value) in JSON order; the first one at a pixel wins.
        stuff_annotations: COCO-Stuff annotations (``category_id`` = COCO id); they fill only
            pixels no LVIS annotation covers, again first one wins.
        lut: :func:`stuff_lut`, required when ``stuff_annotations`` is not empty.

    Returns:
        ``(height, width)`` uint16 mask, 0 = unlabelled.
    """
    mask = np.zeros((height, width), dtype=np.uint16)
    _paint(mask, lvis_annotations)
    if stuff_annotations:
        stuff = np.zeros((height, width), dtype=np.uint16)
        _paint(stuff, stuff_annotations)
        mask = np.where(mask == 0, lut[stuff], mask)
    return mask


def save_uint16_png(path: str | os.PathLike, mask: np.ndarray) -> None:
    """Write ``mask`` as a 16-bit PNG via ``<path>.tmp`` + ``os.replace`` (never a partial file)."""
    tmp = f"{path}.tmp"
    Image.fromarray(np.ascontiguousarray(mask, dtype=np.uint16)).save(tmp, format="PNG")
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _build_one(task: tuple) -> None:
    path, height, width, lvis_anns, stuff_anns, lut = task
    save_uint16_png(path, paint_mask(height, width, lvis_anns, stuff_anns, lut))


def image_relpath(image: dict) -> str:
    """Path of an LVIS image relative to the COCO root: ``train2017/000000xxxxxx.jpg``.

    LVIS v1 records locate images through ``coco_url``; v0.5 records also have ``file_name``,
    used as given when there is no ``coco_url``.
    """
    url = image.get("coco_url")
    if url:
        return "/".join(url.rstrip("/").split("/")[-2:])
    if image.get("file_name"):
        return image["file_name"]
    raise DatasetError(f"LVIS image {image.get('id')} has neither 'coco_url' nor 'file_name'; is this an LVIS JSON?")


def _load_json(path, what: str, example: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path} not found: pass the {what} JSON, e.g. {example}")
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path} is not valid JSON ({err}); re-download {example}") from None
    for key in ("categories", "images", "annotations"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise DatasetError(f"{path} has no '{key}' list: it is not a {what} JSON like {example}")
    return data


def _check_stuff_categories(path, categories: list[dict]) -> None:
    ids = sorted(c["id"] for c in categories) or [None]
    if ids[0] is None or ids[0] < FIRST_STUFF_ID or STUFF_OTHER not in {normalise_name(c["name"]) for c in categories}:
        raise DatasetError(
            f"{path} is not a COCO-Stuff 2017 JSON (category ids {ids[0]}..{ids[-1]}, expected 92..183 "
            "with 'other'); pass stuff_train2017.json / stuff_val2017.json"
        )


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _segmentation_problem(seg) -> str | None:
    """Why ``seg`` is not polygons or RLE, or ``None`` if it is."""
    if isinstance(seg, list):
        for poly in seg:
            if not isinstance(poly, list) or len(poly) % 2 or not all(_is_number(v) for v in poly):
                return "has a polygon that is not a list of x, y numbers of even length"
        return None
    if isinstance(seg, dict):
        size, counts = seg.get("size"), seg.get("counts")
        if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and v >= 0 for v in size)):
            return "has an RLE 'size' that is not [height, width]"
        if isinstance(counts, str):
            return None
        if isinstance(counts, list) and all(_is_int(v) and v >= 0 for v in counts):
            if sum(counts) != size[0] * size[1]:
                return f"has RLE 'counts' covering {sum(counts)} pixels, not {size[0]} x {size[1]}"
            return None
        return "has RLE 'counts' that are neither a string nor a list of non-negative integers"
    return "has a 'segmentation' that is neither polygons (lists of x, y numbers) nor RLE {'size', 'counts'}"


def _check_records(path, data: dict, what: str) -> None:
    """Fields of the categories and images that the builder reads: one line naming a bad record."""
    for cat in data["categories"]:
        if not isinstance(cat, dict) or not _is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            ident = cat.get("id") if isinstance(cat, dict) else cat
            raise DatasetError(f"{path}: category {ident!r} needs an integer 'id' and a string 'name'; is this a {what} JSON?")
    for im in data["images"]:
        if not isinstance(im, dict) or not all(_is_int(im.get(k)) and im.get(k) >= 0 for k in ("id", "height", "width")):
            ident = im.get("id") if isinstance(im, dict) else im
            raise DatasetError(f"{path}: image {ident!r} needs integer 'id', 'height' and 'width'; is this a {what} JSON?")


def _annotation_problem(ann, image_ids: set, category_ids: set) -> str | None:
    if not all(_is_int(ann.get(k)) for k in ("id", "image_id", "category_id")):
        return "needs integer 'id', 'image_id' and 'category_id'"
    if ann["image_id"] not in image_ids:
        return None  # another split's image: not painted, not checked further
    if ann["category_id"] not in category_ids:
        return f"has category_id {ann['category_id']} not in its categories list"
    if "segmentation" not in ann:
        return "has no 'segmentation'"
    return _segmentation_problem(ann["segmentation"])


def _group(annotations: list[dict], image_ids: set, category_ids: set, path) -> dict[int, list]:
    by_image = defaultdict(list)
    for ann in annotations:
        problem = _annotation_problem(ann, image_ids, category_ids) if isinstance(ann, dict) else "is not an object"
        if problem:
            ident = ann.get("id") if isinstance(ann, dict) else ann
            raise DatasetError(f"{path}: annotation {ident!r} {problem}; check that the JSON is an unmodified release")
        if ann["image_id"] in image_ids:
            by_image[ann["image_id"]].append(ann)
    return by_image


def build_coco_lvis(
    lvis_json,
    coco_stuff_json,
    out_dir,
    workers: int = 0,
    coco_root=None,
    progress: bool = True,
) -> dict:
    """Write the merged COCO+LVIS masks of every image in ``lvis_json`` to ``out_dir``.

    Args:
        lvis_json: ``lvis_v1_train.json`` or ``lvis_v1_val.json`` (v0.5 also accepted).
        coco_stuff_json: one path or a list: ``stuff_train2017.json`` and/or ``stuff_val2017.json``
            (LVIS v1 val holds images of COCO train2017 and val2017, so pass both for it).
        out_dir: output directory (``classes.tsv``, ``index.tsv``, ``masks/``); reruns resume.
        workers: 0 paints in this process, N > 0 uses a pool of N processes.
        coco_root: directory holding ``train2017/`` and ``val2017/``; recorded in ``index.tsv``
            (the loader finds images through it) and used to count missing images.
        progress: show a tqdm progress bar.

    Returns:
        Summary dict: ``images``, ``written``, ``skipped`` (mask already there),
        ``no_annotations`` (no LVIS nor stuff annotation), ``not_in_stuff`` (image absent
        from every stuff JSON), ``missing_images`` (None without ``coco_root``),
        ``num_classes``, ``out_dir``.
    """
    from tqdm import tqdm

    if workers < 0:
        raise DatasetError(f"--workers must be >= 0, got {workers}")
    stuff_paths = [coco_stuff_json] if isinstance(coco_stuff_json, (str, os.PathLike)) else list(coco_stuff_json)
    if not stuff_paths:
        raise DatasetError("no COCO-Stuff JSON given: pass stuff_train2017.json and/or stuff_val2017.json")
    lvis = _load_json(lvis_json, "LVIS", "lvis_v1_train.json")
    _check_records(lvis_json, lvis, "LVIS")
    images = lvis["images"]
    image_ids = {im["id"] for im in images}
    lvis_anns = _group(lvis["annotations"], image_ids, {c["id"] for c in lvis["categories"]}, lvis_json)
    stuff_anns, stuff_image_ids, stuff_categories = {}, set(), None
    for path in stuff_paths:  # one at a time, keeping only the annotations of LVIS images
        stuff = _load_json(path, "COCO-Stuff", "stuff_train2017.json")
        _check_records(path, stuff, "COCO-Stuff")
        _check_stuff_categories(path, stuff["categories"])
        if stuff_categories is None:
            stuff_categories = stuff["categories"]
        elif sorted((c["id"], c["name"]) for c in stuff["categories"]) != sorted((c["id"], c["name"]) for c in stuff_categories):
            raise DatasetError(f"{path} has other categories than {stuff_paths[0]}; pass COCO-Stuff 2017 JSONs of one release")
        stuff_image_ids |= {im["id"] for im in stuff["images"]} & image_ids
        stuff_anns.update(_group(stuff["annotations"], image_ids, {c["id"] for c in stuff_categories}, path))
        del stuff
    rows = merged_label_space(lvis["categories"], stuff_categories)
    lut = stuff_lut(lvis["categories"], stuff_categories)
    del lvis

    out = Path(out_dir)
    (out / MASK_DIR).mkdir(parents=True, exist_ok=True)
    classes_text = "value\tname\tsource\tsource_id\n" + "".join("\t".join(map(str, r)) + "\n" for r in rows)
    classes_path = out / CLASSES_FILE
    if classes_path.is_file() and classes_path.read_text() != classes_text:
        raise DatasetError(f"{classes_path} holds another label space than these JSONs give; use a new --out directory")
    _write_text(classes_path, classes_text)
    for stale in (out / MASK_DIR).glob("*.tmp"):  # left by an interrupted run
        stale.unlink()

    entries, tasks = [], []
    for im in images:
        mask_rel = f"{MASK_DIR}/{im['id']:012d}.png"
        entries.append((image_relpath(im), mask_rel, im["height"], im["width"]))
        if not (out / mask_rel).is_file():
            anns = lvis_anns.get(im["id"], []), stuff_anns.get(im["id"], [])
            tasks.append((str(out / mask_rel), im["height"], im["width"], *anns, lut))

    bar = tqdm(total=len(tasks), desc="coco-lvis masks", unit="img", disable=not progress)
    if workers == 0 or not tasks:
        for task in tasks:
            _build_one(task)
            bar.update()
    else:
        gc.freeze()  # forked workers then share the parsed JSONs instead of copying them
        try:
            with multiprocessing.Pool(workers) as pool:
                for _ in pool.imap_unordered(_build_one, tasks, chunksize=16):
                    bar.update()
        finally:
            gc.unfreeze()
    bar.close()

    header = f"# coco_root={Path(coco_root).resolve()}\n" if coco_root else ""
    rows_text = "".join("\t".join(map(str, e)) + "\n" for e in entries)
    _write_text(out / INDEX_FILE, header + "image\tmask\theight\twidth\n" + rows_text)
    missing = None if coco_root is None else sum(not (Path(coco_root) / e[0]).is_file() for e in entries)
    return {
        "images": len(entries),
        "written": len(tasks),
        "skipped": len(entries) - len(tasks),
        "no_annotations": sum(i not in lvis_anns and i not in stuff_anns for i in image_ids),
        "not_in_stuff": len(image_ids - stuff_image_ids),
        "missing_images": missing,
        "num_classes": len(rows),
        "out_dir": str(out),
    }


def _run_cli(args) -> int:
    s = build_coco_lvis(args.lvis_json, args.coco_stuff_json, args.out, workers=args.workers, coco_root=args.coco_root)
    print(
        f"{s['images']} images ({s['num_classes']} classes): {s['written']} masks written, {s['skipped']} already there, "
        f"{s['no_annotations']} without any annotation, {s['not_in_stuff']} not in the COCO-Stuff JSON(s)"
        + ("" if s["missing_images"] is None else f", {s['missing_images']} images missing under --coco-root")
        + f" -> {Path(s['out_dir']) / INDEX_FILE}"
    )
    return 0


def register_cli(subparsers) -> None:
    """Add the ``build-coco-lvis`` subcommand to an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "build-coco-lvis",
        help="build the 1284-class COCO+LVIS masks (16-bit PNGs) for one LVIS split",
        description="Paint LVIS instance masks and COCO-Stuff masks into one 16-bit PNG per image "
        "(label space: LVIS ids 1..1203, new stuff classes 1204..1284, 0 = ignore). Reruns resume.",
    )
    p.add_argument("--lvis-json", required=True, help="lvis_v1_train.json or lvis_v1_val.json")
    p.add_argument(
        "--coco-stuff-json", required=True, nargs="+", metavar="F",
        help="stuff_train2017.json [stuff_val2017.json]; LVIS val needs both",
    )
    p.add_argument("--out", required=True, help="output directory, one per split (e.g. data/coco_lvis/train)")
    p.add_argument("--workers", type=int, default=0, help="processes painting masks (0 = this one)")
    p.add_argument("--coco-root", help="directory holding train2017/ and val2017/ (recorded in index.tsv)")
    p.set_defaults(func=_run_cli)
