"""Any COCO-format JSON (instances, panoptic, LVIS) rendered to semantic masks on the fly.

Default layout (the official COCO one, so ``split="val2017"`` just works)::

    ROOT/annotations/instances_<split>.json     instance JSON (polygons / RLE), tried first
    ROOT/annotations/panoptic_<split>.json      panoptic JSON, tried second
    ROOT/annotations/panoptic_<split>/*.png     its segment PNGs (id = R + 256 G + 65536 B)
    ROOT/<split>/*.jpg                          the images (``file_name`` of each image record)

``annotation_file`` and ``image_dir`` point anywhere else (relative to ``ROOT`` or absolute).
LVIS records have no usable ``file_name`` but a ``coco_url`` (``.../train2017/000000xxxxxx.jpg``):
the image is looked for at ``image_dir/<file_name>``, ``image_dir/<url name>``,
``image_dir/<url folder>/<url name>`` and (without ``image_dir``) ``ROOT/<url folder>/<url name>``.

Label space: the JSON's categories in increasing ``id`` order get train ids ``0..C-1`` (ids may
be sparse and above 255); with ``background="name"`` a background class takes train id 0 and
the categories shift by one. ``ignore_index = default_ignore_index(C)`` (65535 when C > 255).

Instance masks: annotations are painted larger-area first (pixel area of the decoded mask;
ties in JSON order, later on top), so smaller objects end on top. A crowd annotation
(``iscrowd=1``) is painted in the same order with ``ignore_index`` (its category with
``ignore_crowd=False``). Pixels no annotation covers are ``ignore_index``, or the background
class. LVIS JSONs (detected by ``neg_category_ids``/``not_exhaustive_category_ids``) are
federated: an unannotated pixel is unknown, never background, so ``background`` is refused.

Problems with the whole JSON raise at construction; problems of one image (a malformed
polygon/RLE, an unknown ``category_id``, a missing image file) raise at ``load``/``load_label``
of that sample, so ``esseg data inspect`` lists them all.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from esseg._io import atomic_write
from esseg.data._files import read_image, unreadable
from esseg.data.base import SegmentationDataset, bit_palette, default_ignore_index
from esseg.errors import ConfigError, DatasetError

REQUIRED_KEYS = ("images", "annotations", "categories")
LVIS_KEYS = ("neg_category_ids", "not_exhaustive_category_ids")
DECODE_CHUNK = 32  # annotations decoded at once: (H, W, 32) uint8 per chunk
CACHE_VERSION = 1  # bump when the rendering rules change


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _id_hint(value) -> str:
    return "; COCO ids are JSON integers, not strings" if isinstance(value, str) else ""


def _resolve(base: Path, path) -> Path:
    path = Path(path).expanduser()
    return path if path.is_absolute() else base / path


def _load_json(path: Path) -> tuple[dict, bytes]:
    if not path.is_file():
        raise DatasetError(f"coco: annotation file {path} not found; pass annotation_file=<your COCO JSON>")
    raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"coco: {path} is not valid JSON ({' '.join(str(err).split())}); re-export or re-download it") from None
    if not isinstance(data, dict):
        raise DatasetError(f"coco: {path} is not a COCO-format JSON: expected an object with {', '.join(REQUIRED_KEYS)} lists")
    for key in REQUIRED_KEYS:
        if not isinstance(data.get(key), list):
            raise DatasetError(
                f"coco: {path} is not a COCO-format JSON: no '{key}' list (it needs 'images', 'annotations' and "
                f"'categories'); pass an instances_*.json, panoptic_*.json or LVIS JSON"
            )
    return data, raw


def _check_ids(records: list, what: str, path: Path) -> list:
    """The integer ``id`` of every record; a missing, string or repeated id is an error."""
    ids = []
    for record in records:
        value = record.get("id") if isinstance(record, dict) else None
        if not _is_int(value):
            raise DatasetError(f"coco: {path}: {what} {record!r:.80} has id {value!r}, expected an integer{_id_hint(value)}")
        ids.append(int(value))
    if len(set(ids)) != len(ids):
        dup = next(i for i, n in Counter(ids).items() if n > 1)
        raise DatasetError(f"coco: {path}: {what} id {dup} occurs more than once; every {what} needs its own id")
    return ids


class COCODataset(SegmentationDataset):
    """Semantic masks rendered from a COCO instance, panoptic or LVIS JSON.

    Args:
        root: dataset root (see the module docstring for the default layout).
        split: split name; picks ``annotations/{instances,panoptic}_<split>.json`` and ``<split>/``.
        transforms: paired transforms, see :class:`~esseg.data.base.SegmentationDataset`.
        annotation_file: the JSON to read instead (relative to ``root`` or absolute).
        image_dir: the image folder instead of ``root/<split>`` (relative to ``root`` or absolute).
        cache_dir: if set, rendered masks are kept there (uint16 PNG, int32 ``.npy`` when
            C > 65535) in a subfolder keyed by the JSON's content hash and the options.
        background: name of a background class (train id 0) for unannotated pixels; ``None``
            leaves them ``ignore_index``. Refused for LVIS JSONs (federated labels).
        ignore_crowd: crowd regions are ``ignore_index`` (True) or get their category (False).

    Each sample is ``(PIL RGB image, int64 (H, W) train ids / ignore_index)`` with ``H, W`` the
    ``height``/``width`` of its image record.
    """

    def __init__(
        self,
        root,
        split: str = "train",
        transforms=None,
        annotation_file=None,
        image_dir=None,
        cache_dir=None,
        background: str | None = None,
        ignore_crowd: bool = True,
    ):
        super().__init__(root, split, transforms)
        if root is None and annotation_file is None:
            raise DatasetError(
                "coco: no dataset root given; pass --root DIR holding annotations/instances_<split>.json and <split>/ "
                "images, or annotation_file=<JSON> (see docs/datasets.md)"
            )
        self.base = Path(root).expanduser() if root is not None else Path(".")
        self.annotation_file = self._find_annotation_file(annotation_file)
        self.image_dir = _resolve(self.base, image_dir) if image_dir is not None else self.base / split
        self._default_image_dir = image_dir is None
        self.ignore_crowd = bool(ignore_crowd)
        data, raw = _load_json(self.annotation_file)
        path = self.annotation_file

        self.images = data["images"]
        if not self.images:
            raise DatasetError(f"coco: {path} lists no images (empty split {split!r}); check --split / annotation_file")
        image_ids = _check_ids(self.images, "image", path)
        self._index_of = {image_id: i for i, image_id in enumerate(image_ids)}
        categories = data["categories"]
        if not categories:
            raise DatasetError(f"coco: {path} has an empty 'categories' list; it must define the classes")
        category_ids = _check_ids(categories, "category", path)
        order = np.argsort(category_ids, kind="stable")
        names = [str(categories[i].get("name", category_ids[i])) for i in order]

        self.is_lvis = any(isinstance(im, dict) and any(k in im for k in LVIS_KEYS) for im in self.images)
        annotations = data["annotations"]
        self.is_panoptic = (
            "segments_info" in annotations[0] if annotations and isinstance(annotations[0], dict)
            else path.name.startswith("panoptic")
        )
        self.panoptic_dir = path.with_suffix("") if self.is_panoptic else None
        self.background = background
        if background is not None:
            if not isinstance(background, str) or not background:
                raise ConfigError(f"coco: background must be a class name such as 'background', got {background!r}")
            if self.is_lvis:
                raise ConfigError(
                    f"coco: {path} is an LVIS JSON: LVIS is federated (an unannotated pixel is unknown, not background), "
                    "so background= cannot be used with it; drop the background option"
                )
            if background in names:
                raise ConfigError(f"coco: {path} already has a category named {background!r}; pick another background name")
            names = [background, *names]
        offset = 1 if background is not None else 0
        self.classes = tuple(names)
        self.palette = bit_palette(len(names))
        self.ignore_index = default_ignore_index(len(names))
        self.unannotated = 0 if background is not None else self.ignore_index
        self.train_id = {category_ids[i]: t + offset for t, i in enumerate(order)}

        self._anns = defaultdict(list)  # image index -> its annotation dicts, in JSON order
        for ann in annotations:
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            if not _is_int(image_id) or image_id not in self._index_of:
                what = f"annotation {ann.get('id')!r}" if isinstance(ann, dict) else f"annotation {ann!r:.60}"
                raise DatasetError(
                    f"coco: {path}: {what} has image_id {image_id!r}, which is not the id of any entry of 'images'"
                    f"{_id_hint(image_id)}; fix or drop the annotation"
                )
            self._anns[self._index_of[image_id]].append(ann)
        self.cache_dir = self._cache_folder(cache_dir, raw) if cache_dir is not None else None

    # ------------------------------------------------------------------ construction helpers

    def _find_annotation_file(self, annotation_file) -> Path:
        if annotation_file is not None:
            return _resolve(self.base, annotation_file)
        candidates = [self.base / "annotations" / f"{kind}_{self.split}.json" for kind in ("instances", "panoptic")]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        if not self.base.is_dir():
            raise DatasetError(f"coco: root {self.base} does not exist; pass --root DIR holding annotations/ and {self.split}/")
        raise DatasetError(
            f"coco: no annotation file for split {self.split!r}: looked for {candidates[0]} and {candidates[1]}; "
            "check --split or pass annotation_file=<JSON> (see docs/datasets.md)"
        )

    def _cache_folder(self, cache_dir, raw: bytes) -> Path:
        """``cache_dir/<key>``: the key hashes the JSON's bytes and every option that changes a mask."""
        options = {
            "version": CACHE_VERSION, "background": self.background, "ignore_crowd": self.ignore_crowd,
            "panoptic_dir": str(self.panoptic_dir.resolve()) if self.panoptic_dir else None,
        }
        digest = hashlib.sha256(raw)
        digest.update(json.dumps(options, sort_keys=True).encode())
        folder = Path(cache_dir).expanduser() / f"{self.annotation_file.stem}-{digest.hexdigest()[:16]}"
        about = folder / "source.json"
        if not about.is_file():
            text = json.dumps({"annotation_file": str(self.annotation_file.resolve()), **options}, indent=2)
            atomic_write(about, lambda tmp: tmp.write_text(text + "\n", encoding="utf-8"))
        return folder

    # ------------------------------------------------------------------ samples

    def __len__(self) -> int:
        return len(self.images)

    def sample_name(self, index: int) -> str:
        record = self.images[index]
        name = record.get("file_name") or str(record.get("coco_url") or "").rsplit("/", 1)[-1]
        return Path(name).stem if name else str(record["id"])

    def _where(self, index: int) -> str:
        return f"coco: {self.annotation_file}: image {self.images[index]['id']} ({self.sample_name(index)})"

    def _size(self, index: int) -> tuple[int, int]:
        record = self.images[index]
        height, width = record.get("height"), record.get("width")
        if not (_is_int(height) and _is_int(width) and height > 0 and width > 0):
            raise DatasetError(f"{self._where(index)} has height={height!r}, width={width!r}; both must be positive integers")
        return int(height), int(width)

    def image_path(self, index: int) -> Path:
        """Where the image of sample ``index`` is (``file_name``, else the ``coco_url`` name); raises if absent."""
        record = self.images[index]
        candidates = []
        if record.get("file_name"):
            candidates.append(self.image_dir / record["file_name"])
        url = str(record.get("coco_url") or "").rstrip("/")
        if url:
            parts = url.split("/")
            candidates += [self.image_dir / parts[-1], self.image_dir / parts[-2] / parts[-1]]
            if self._default_image_dir:
                candidates.append(self.base / parts[-2] / parts[-1])
        if not candidates:
            raise DatasetError(f"{self._where(index)} has neither 'file_name' nor 'coco_url'; add one so the image can be found")
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
        raise DatasetError(f"{self._where(index)}: image file not found (looked for {looked}); set image_dir= to the image folder")

    def load(self, index: int):
        """``(PIL RGB image, int64 (H, W) train ids / ignore_index)`` of sample ``index``."""
        image = read_image(self.image_path(index))
        label = self.load_label(index)
        if image.size != (label.shape[1], label.shape[0]):
            raise DatasetError(
                f"{self._where(index)}: the image file is {image.size[0]}x{image.size[1]} but the JSON says "
                f"{label.shape[1]}x{label.shape[0]}; fix height/width in the JSON or use the matching image"
            )
        return image, label

    def load_label(self, index: int) -> np.ndarray:
        """The int64 ``(H, W)`` train ids of sample ``index``, rendered (or read from the cache); no image decode."""
        height, width = self._size(index)
        cached = self._cache_path(index)
        if cached is not None and cached.is_file():
            label = self._read_cached(cached, (height, width))
            if label is not None:
                return label
        label = self._render_panoptic(index, height, width) if self.is_panoptic else self._render(index, height, width)
        if cached is not None:
            self._write_cached(cached, label)
        return label

    # ------------------------------------------------------------------ cache

    def _cache_path(self, index: int) -> Path | None:
        if self.cache_dir is None:
            return None
        suffix = ".png" if self.num_classes <= 65535 else ".npy"
        return self.cache_dir / f"{self.images[index]['id']}{suffix}"

    def _read_cached(self, path: Path, shape: tuple[int, int]) -> np.ndarray | None:
        try:
            label = np.load(path) if path.suffix == ".npy" else np.asarray(Image.open(path))
        except Exception:  # unreadable: render again and overwrite
            return None
        return label.astype(np.int64) if label.shape == shape else None

    def _write_cached(self, path: Path, label: np.ndarray) -> None:
        if path.suffix == ".npy":
            def write(tmp: Path) -> None:
                with open(tmp, "wb") as f:
                    np.save(f, label.astype(np.int32))

            atomic_write(path, write)
        else:
            image = Image.fromarray(label.astype(np.uint16))
            atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))

    # ------------------------------------------------------------------ instance JSON

    def _value(self, index: int, ann: dict, category_id, what: str = "annotation") -> int:
        if not _is_int(category_id) or category_id not in self.train_id:
            raise DatasetError(
                f"{self._where(index)}: {what} {ann.get('id')!r} has category_id {category_id!r}, which is not in "
                f"'categories'{_id_hint(category_id)}; fix the id or add the category"
            )
        if ann.get("iscrowd") and self.ignore_crowd:
            return self.ignore_index
        return self.train_id[category_id]

    def _rle(self, index: int, ann: dict, height: int, width: int) -> dict:
        """One compressed RLE of an annotation's ``segmentation`` (validated first)."""

        def bad(problem: str) -> DatasetError:
            return DatasetError(f"{self._where(index)}: annotation {ann.get('id')!r} {problem}")

        seg = ann.get("segmentation")
        if isinstance(seg, list):
            if not seg:
                raise bad("has an empty segmentation; give at least one polygon or an RLE, or drop the annotation")
            for poly in seg:
                if not isinstance(poly, list) or not all(isinstance(v, numbers.Real) for v in poly):
                    raise bad("has a polygon that is not a flat list of numbers [x1, y1, x2, y2, ...]; fix the segmentation")
                if len(poly) % 2:
                    raise bad(f"has a polygon with an odd number of coordinates ({len(poly)}); polygons are x, y pairs")
            # A polygon of fewer than 3 points covers no area (real COCO 2017 has a few): it is dropped,
            # never handed to pycocotools, which would read a 4-number list as a box.
            polys = [[float(v) for v in p] for p in seg if len(p) >= 6]
            if not polys:
                return mask_utils.encode(np.zeros((height, width), dtype=np.uint8, order="F"))
            return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        if not isinstance(seg, dict) or "counts" not in seg or "size" not in seg:
            raise bad("has no valid 'segmentation': expected a list of polygons or an RLE {'size': [h, w], 'counts': ...}")
        size = seg["size"]
        if not isinstance(size, (list, tuple)) or list(size) != [height, width]:
            raise bad(f"has an RLE of size {size!r} but the image is [{height}, {width}] (height, width); "
                      "the RLE must be encoded at the image's resolution")
        counts = seg["counts"]
        if isinstance(counts, list):
            if not all(_is_int(c) and c >= 0 for c in counts) or sum(counts) != height * width:
                raise bad(f"has an uncompressed RLE whose counts are not non-negative integers summing to "
                          f"{height}x{width}={height * width}; re-encode it")
            return mask_utils.frPyObjects(seg, height, width)
        if isinstance(counts, (str, bytes)):
            return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
        raise bad(f"has RLE counts of type {type(counts).__name__}; expected a list of ints or a compressed string")

    def _render(self, index: int, height: int, width: int) -> np.ndarray:
        anns = self._anns.get(index, [])
        if not anns:
            return np.full((height, width), self.unannotated, dtype=np.int64)
        values = np.array([self._value(index, ann, ann.get("category_id")) for ann in anns], dtype=np.int64)
        rles = [self._rle(index, ann, height, width) for ann in anns]
        try:
            areas = mask_utils.area(rles).astype(np.int64)
        except Exception as err:
            raise DatasetError(f"{self._where(index)}: an RLE cannot be read ({err}); re-encode its annotations") from None
        paint_order = np.argsort(-areas, kind="stable")  # larger first; equal areas keep JSON order
        # painted as (W, H): pycocotools decodes column-major, so each mask is then a contiguous (W, H) block
        label_t = np.full((width, height), self.unannotated, dtype=np.int64)
        for start in range(0, len(paint_order), DECODE_CHUNK):
            chunk = paint_order[start : start + DECODE_CHUNK]
            try:
                masks = mask_utils.decode([rles[i] for i in chunk])  # (H, W, n) uint8
            except Exception as err:
                ids = [anns[i].get("id") for i in chunk]
                raise DatasetError(
                    f"{self._where(index)}: an RLE of annotations {ids} cannot be decoded ({err}); re-encode it"
                ) from None
            for mask_t, value in zip(masks.transpose(2, 1, 0), values[chunk]):  # later writes end on top
                np.putmask(label_t, mask_t.view(bool), value)
        return np.ascontiguousarray(label_t.T)

    # ------------------------------------------------------------------ panoptic JSON

    def _render_panoptic(self, index: int, height: int, width: int) -> np.ndarray:
        where = self._where(index)
        anns = self._anns.get(index, [])
        if len(anns) > 1:
            raise DatasetError(f"{where} has {len(anns)} panoptic annotations; a panoptic JSON has one per image")
        if not anns:  # an image without its PNG: nothing annotated
            return np.full((height, width), self.unannotated, dtype=np.int64)
        ann = anns[0]
        segments = ann.get("segments_info")
        if not isinstance(segments, list) or not ann.get("file_name"):
            raise DatasetError(f"{where}: its panoptic annotation needs 'file_name' (the PNG) and a 'segments_info' list")
        segment_ids, values = [], []
        for seg in segments:
            seg_id = seg.get("id") if isinstance(seg, dict) else None
            if not _is_int(seg_id):
                raise DatasetError(f"{where}: segments_info entry {seg!r:.60} has no integer 'id'; fix the JSON")
            segment_ids.append(int(seg_id))
            values.append(self._value(index, seg, seg.get("category_id"), what="segment"))
        if len(set(segment_ids)) != len(segment_ids):
            raise DatasetError(f"{where}: segments_info repeats a segment id; every segment needs its own id")
        png = self.panoptic_dir / ann["file_name"]
        if not png.is_file():
            raise DatasetError(f"{where}: panoptic PNG {png} not found; unpack the PNGs next to the JSON, in {self.panoptic_dir}")
        try:
            with Image.open(png) as im:
                if im.mode != "RGB":
                    raise DatasetError(f"{where}: panoptic PNG {png} has mode {im.mode}; expected RGB with id = R + 256 G + 65536 B")
                rgb = np.asarray(im, dtype=np.int64)
        except DatasetError:
            raise
        except Exception as err:
            raise unreadable("panoptic PNG", png, err) from err
        if rgb.shape[:2] != (height, width):
            raise DatasetError(
                f"{where}: panoptic PNG {png} is {rgb.shape[1]}x{rgb.shape[0]} but the JSON says {width}x{height}; fix the JSON"
            )
        ids = rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]
        present, inverse = np.unique(ids, return_inverse=True)
        order = np.argsort(segment_ids)
        known, known_values = np.asarray(segment_ids, dtype=np.int64)[order], np.asarray(values, dtype=np.int64)[order]
        lut = np.full(present.shape, self.unannotated, dtype=np.int64)  # id 0 (void) and unlisted ids: unannotated
        found = np.zeros(present.shape, dtype=bool)
        if known.size:
            pos = np.searchsorted(known, present).clip(max=known.size - 1)
            found = known[pos] == present
            lut[found] = known_values[pos[found]]
        stray = present[~found & (present != 0)]
        if stray.size:
            raise DatasetError(
                f"{where}: panoptic PNG {png} holds segment id {stray[0]}, which is not in its segments_info; fix the JSON or the PNG"
            )
        return lut[inverse.reshape(ids.shape)]

    # ------------------------------------------------------------------ statistics

    def class_image_counts(self) -> np.ndarray:
        """``(C,)`` int64: how many images hold an annotation of each class, counted from the JSON.

        An annotation counts for its category when it is labelled (not a crowd region under
        ``ignore_crowd``), whether or not smaller objects later cover it. Annotations with an
        unknown ``category_id`` are skipped here (``load`` reports them). The background class,
        which has no annotations, counts every image. For LVIS this equals the JSON's
        ``image_count`` of each category on a full split; it is counted, not read.
        """
        counts = np.zeros(self.num_classes, dtype=np.int64)
        for anns in self._anns.values():
            items = [s for a in anns for s in (a.get("segments_info") or [])] if self.is_panoptic else anns
            present = {
                self.train_id[item.get("category_id")]
                for item in items
                if isinstance(item, dict) and _is_int(item.get("category_id")) and item.get("category_id") in self.train_id
                and not (item.get("iscrowd") and self.ignore_crowd)
            }
            counts[list(present)] += 1
        if self.background is not None:
            counts[0] = len(self.images)
        return counts
