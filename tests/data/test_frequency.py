"""Images per class: the label scan against a brute-force count, the dataset shortcut, files and the run cache."""

import json

import numpy as np
import pytest

from esseg.data.base import SegmentationDataset
from esseg.data.frequency import class_image_counts, images_per_class, read_class_frequency, training_class_frequency
from esseg.errors import DatasetError


class Labels(SegmentationDataset):
    """Labels only (``load``), no ``load_label``: the fallback path."""

    classes = ("a", "b", "c", "d")
    ignore_index = 255

    def __init__(self, labels):
        super().__init__(None, "train")
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def load(self, index):
        return None, self.labels[index]


class WithLoadLabel(Labels):
    def load_label(self, index):
        return self.labels[index]


class WithCounts(Labels):
    def class_image_counts(self):
        return [7, 0, 1, 2]


def random_labels(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.choice([0, 1, 2, 3, 255], size=(5, 4), p=[0.05, 0.3, 0.3, 0.05, 0.3]) for _ in range(20)]


def test_scan_equals_brute_force_count():
    labels = random_labels()
    oracle = [sum(1 for lab in labels if (lab == c).any()) for c in range(4)]
    assert class_image_counts(Labels(labels)).tolist() == oracle
    assert class_image_counts(WithLoadLabel(labels)).tolist() == oracle
    assert images_per_class(np.array([[3, 255], [3, -1]]), 4).tolist() == [0, 0, 0, 1]


def test_a_dataset_that_counts_itself_is_not_scanned():
    assert class_image_counts(WithCounts([])).tolist() == [7, 0, 1, 2]


def test_read_from_inspect_report_or_cache_and_errors(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"class_pixels": [{"id": i, "pixels": 9, "images": n} for i, n in enumerate([3, 0, 1, 2])]}))
    assert read_class_frequency(report, 4).tolist() == [3, 0, 1, 2]
    with pytest.raises(DatasetError, match="counts images for 4 classes but the dataset has 5"):
        read_class_frequency(report, 5)
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"class_pixels": [{"id": 0, "pixels": 9}]}))
    with pytest.raises(DatasetError, match="holds no per-class image counts; use the JSON of `esseg data inspect"):
        read_class_frequency(old, 1)
    with pytest.raises(DatasetError, match="not found; write it with `esseg data inspect --json"):
        read_class_frequency(tmp_path / "none.json", 1)


def test_training_frequency_is_cached_per_source(tmp_path):
    labels = random_labels(1)
    cache = tmp_path / "run" / "class_frequency.json"
    source = {"dataset": "x", "root": "/r", "split": "train", "options": {}}
    first = training_class_frequency("auto", WithLoadLabel(labels), cache, source)
    assert first == class_image_counts(WithLoadLabel(labels)).tolist() and cache.is_file()
    # a resumed run reads the cache instead of scanning (the labels here would give other counts)
    assert training_class_frequency("auto", WithLoadLabel(random_labels(2)), cache, source) == first
    # another source is counted again
    other = training_class_frequency("auto", WithLoadLabel(random_labels(2)), cache, {**source, "split": "val"})
    assert other == class_image_counts(WithLoadLabel(random_labels(2))).tolist() != first
    # none skips; generated data (no load_label / class_image_counts) is skipped under auto
    assert training_class_frequency("none", WithLoadLabel(labels), tmp_path / "a.json", source) is None
    assert training_class_frequency("auto", Labels(labels), tmp_path / "b.json", source) is None
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "b.json").exists()
    # a path reads that file
    assert training_class_frequency(str(cache), Labels(labels), tmp_path / "c.json", source) == other
