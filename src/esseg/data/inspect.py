"""Scan every label of a dataset split: class statistics and the files that are broken.

Used by ``esseg data inspect``. A bad file never aborts the scan; it is collected with the
reason and the scan goes on.
"""

from __future__ import annotations

import numpy as np

from esseg.data import DATASETS, build_dataset, get_dataset_class
from esseg.errors import ConfigError, DatasetError
from esseg.metrics import FREQUENCY_GROUPS, FREQUENCY_THRESHOLDS, frequency_groups


def _read_label(dataset, index: int, check_images: bool) -> np.ndarray:
    if check_images or not hasattr(dataset, "load_label"):
        return np.asarray(dataset.load(index)[1])
    return np.asarray(dataset.load_label(index))


def inspect_dataset(
    name: str, root, split: str, check_images: bool = False, progress: bool = False, **dataset_kwargs
) -> dict:
    """Read every label of ``split`` and summarise it.

    Args:
        name: registered dataset name (see ``esseg.data.DATASETS``).
        root: dataset root directory.
        split: split name.
        check_images: also decode every image (slower); by default only image headers are read
            when the dataset offers ``load_label``.
        progress: show a progress bar on stderr.
        **dataset_kwargs: passed to the dataset constructor (e.g. ``label_space="171"``), after
            the class's ``inspect_options`` (e.g. ``folder`` keeps unpaired files as invalid
            samples instead of refusing to open the split).

    Returns:
        a JSON-serialisable dict: ``num_samples``, ``num_invalid``, ``num_classes``,
        ``ignore_index``, ``pixels``, ``ignored_pixels``, ``ignored_fraction``,
        ``classes_present``, ``class_pixels`` (one ``{"id", "name", "pixels", "images"}`` per class;
        ``images``: valid samples containing the class, the training frequency of
        ``esseg.data.frequency``),
        ``missing_classes`` (names), ``invalid`` (``{"index", "sample", "reason"}`` each) and
        ``ok`` (samples found and none invalid).

    Raises:
        DatasetError: when the dataset cannot be opened at all (missing root, wrong layout).
    """
    from tqdm import tqdm

    options = dict(getattr(get_dataset_class(name), "inspect_options", {})) if name in DATASETS else {}
    try:
        dataset = build_dataset(name, root=root, split=split, **{**options, **dataset_kwargs})
    except TypeError as err:
        raise ConfigError(f"options {dataset_kwargs} not accepted by dataset {name!r}: {err}") from None
    num_classes, ignore = dataset.num_classes, dataset.ignore_index
    counts = np.zeros(num_classes, dtype=np.int64)
    images = np.zeros(num_classes, dtype=np.int64)
    ignored = 0
    invalid = []
    for index in tqdm(range(len(dataset)), desc=f"inspect {name}/{split}", disable=not progress):
        try:
            label = _read_label(dataset, index, check_images)
            kept = label[label != ignore]
            if kept.size and (kept.min() < 0 or kept.max() >= num_classes):
                bad = kept[(kept < 0) | (kept >= num_classes)][0]
                raise DatasetError(
                    f"labels must be in [0, {num_classes}) or equal ignore_index={ignore}; "
                    f"found {bad} in {dataset.sample_name(index)}"
                )
        except DatasetError as err:
            invalid.append({"index": index, "sample": dataset.sample_name(index), "reason": str(err)})
            continue
        pixels = np.bincount(kept, minlength=num_classes)  # the sample's pixels per class: present where > 0
        counts += pixels
        images += pixels > 0
        ignored += label.size - kept.size
    total = int(counts.sum()) + ignored
    names = list(dataset.classes)
    return {
        "dataset": name,
        "root": str(root),
        "split": split,
        "num_samples": len(dataset),
        "num_invalid": len(invalid),
        "num_classes": num_classes,
        "ignore_index": ignore,
        "pixels": total,
        "ignored_pixels": int(ignored),
        "ignored_fraction": ignored / total if total else 0.0,
        "classes_present": int((counts > 0).sum()),
        "class_pixels": [
            {"id": c, "name": names[c], "pixels": int(n), "images": int(m)} for c, (n, m) in enumerate(zip(counts, images))
        ],
        "missing_classes": [names[c] for c in np.flatnonzero(counts == 0)],
        "invalid": invalid,
        "ok": len(dataset) > 0 and not invalid,
    }


def frequency_line(images: list[int], thresholds=FREQUENCY_THRESHOLDS) -> str:
    """One line: how many classes fall in each frequency group (images containing the class)."""
    groups = frequency_groups(images, thresholds)
    t1, t2 = thresholds
    ranges = {"rare": f"1-{t1}", "common": f"{t1 + 1}-{t2}", "frequent": f"> {t2}", "unseen": "0"}
    parts = [f"{groups.count(g)} {g} ({ranges[g]})" for g in FREQUENCY_GROUPS]
    return f"images per class: {', '.join(parts)}"


def format_report(report: dict, top: int = 10) -> str:
    """Human-readable summary of :func:`inspect_dataset`'s report: the classes per frequency group
    (:func:`esseg.metrics.frequency_groups` of the images per class) and the ``top`` classes by pixels."""
    r = report
    labelled = max(r["pixels"] - r["ignored_pixels"], 1)
    ignored = f"{100 * r['ignored_fraction']:.1f}% ignored (ignore_index={r['ignore_index']})"
    lines = [
        f"{r['dataset']} {r['split']} ({r['root']}): {r['num_samples']} samples, {r['num_invalid']} invalid",
        f"pixels: {r['pixels']:,} total, {ignored}; {r['classes_present']}/{r['num_classes']} classes present",
    ]
    lines.append(frequency_line([c["images"] for c in r["class_pixels"]]))
    ranked = sorted((c for c in r["class_pixels"] if c["pixels"]), key=lambda c: -c["pixels"])[:top]
    if ranked:
        lines.append(f"top {len(ranked)} classes (share of labelled pixels):")
        for c in ranked:
            lines.append(f"  {c['id']:>5}  {c['name']:<24} {100 * c['pixels'] / labelled:6.2f}%  {c['pixels']:,}")
    missing = r["missing_classes"]
    if missing:
        more = f" ... (+{len(missing) - 20})" if len(missing) > 20 else ""
        lines.append(f"classes never seen ({len(missing)}): {', '.join(missing[:20])}{more}")
    if r["invalid"]:
        lines.append(f"invalid samples ({len(r['invalid'])}):")
        lines += [f"  {item['sample']}: {item['reason']}" for item in r["invalid"]]
    if r["ok"]:
        lines.append("OK")
    else:
        lines.append("NOT OK: fix or remove the samples above" if r["invalid"] else "NOT OK: no samples found")
    return "\n".join(lines)
