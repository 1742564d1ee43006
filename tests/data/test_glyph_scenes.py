"""Tests for the synthetic ``glyph_scenes`` dataset (esseg.data.glyph_scenes, esseg.data._glyphs)."""

from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
import pytest
import torch

from esseg.data import _glyphs, build_dataset
from esseg.data.glyph_scenes import COLOURS, NUM_COMBOS, PATTERNS, STUFF, GlyphScenes, thing_classes
from esseg.errors import DatasetError


@pytest.fixture(scope="module")
def ds200():
    return GlyphScenes(num_classes=200, split="train", length=400)


def _digest(image: torch.Tensor, label: torch.Tensor) -> str:
    return hashlib.sha1(image.numpy().tobytes() + label.numpy().tobytes()).hexdigest()


# ---- contract: shapes, dtypes, value ranges, attributes ----------------------------------


def test_item_shapes_and_dtypes(ds200):
    image, label = ds200[0]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert label.shape == (64, 64) and label.dtype == torch.int64
    # ImageNet-normalised: roughly zero-centred, clearly not in [0, 255] or [0, 1]
    assert image.min() < 0 < image.max() < 3


def test_load_returns_pil_rgb_and_int64_label():
    ds = GlyphScenes(num_classes=30, size=96, length=3)
    image, label = ds.load(2)
    assert image.mode == "RGB" and image.size == (96, 96)
    assert isinstance(label, np.ndarray) and label.dtype == np.int64 and label.shape == (96, 96)


def test_transforms_are_applied():
    calls = []

    def transform(image, label):
        calls.append(image.size)
        return torch.zeros(1), torch.ones(1)

    ds = GlyphScenes(num_classes=20, length=2, transforms=transform)
    assert ds[1][1].item() == 1 and calls == [(64, 64)]


def test_labels_in_range_and_never_ignored(ds200):
    seen = set()
    for i in range(40):
        _, label = ds200[i]
        assert label.min() >= 0 and label.max() < ds200.num_classes
        seen.update(label.unique().tolist())
    assert ds200.ignore_index == 255 and ds200.ignore_index not in seen
    assert any(c < ds200.num_stuff for c in seen) and any(c >= ds200.num_stuff for c in seen)


def test_labels_match_pixels():
    """Pixels labelled with a solid thing class show that class's colour; stuff pixels are muted."""
    ds = GlyphScenes(num_classes=200, length=50)
    checked = 0
    for i in range(50):
        image, label = ds.load(i)
        hsv = np.asarray(image.convert("HSV"), np.float64) / 255.0
        for cid in np.unique(label):
            region = hsv[label == cid]
            if cid < ds.num_stuff:
                assert np.median(region[:, 1]) < 0.5
                continue
            cls = ds.things[cid - ds.num_stuff]
            if PATTERNS[cls.pattern][0] != "solid" or len(region) < 30:
                continue
            hue, sat, val = COLOURS[cls.colour][1]
            dh = np.abs((np.median(region[:, 0]) - hue + 0.5) % 1.0 - 0.5)
            assert dh < 0.03 and np.median(region[:, 1]) > 0.7
            assert abs(np.median(region[:, 2]) - val) < 0.2  # vivid 0.95 vs dark 0.5
            checked += 1
    assert checked >= 5


def test_ignore_index_above_255_classes():
    assert GlyphScenes(num_classes=300, length=1).ignore_index == 65535


def test_palette_names_and_attributes(ds200):
    assert ds200.num_classes == len(ds200.classes) == 200
    assert ds200.palette.shape == (200, 3) and ds200.palette.dtype == np.uint8
    assert len(set(ds200.classes)) == 200
    assert all(n.startswith("stuff: ") for n in ds200.classes[: ds200.num_stuff])
    first = ds200.things[0]
    expected = f"glyph {first.shape.name}, {PATTERNS[first.pattern][0]}, {COLOURS[first.colour][0]}"
    assert ds200.classes[ds200.num_stuff] == expected
    assert "U+25A0 ■" in ds200.classes[ds200.num_stuff]  # the first shape is the black square
    assert ds200.class_frequencies.shape == (200,)
    assert ds200.class_frequencies.sum() == pytest.approx(1.0)


def test_registry_builds_glyph_scenes():
    ds = build_dataset("glyph_scenes", root=None, split="val", num_classes=10, length=5)
    assert isinstance(ds, GlyphScenes) and ds.split == "val" and len(ds) == 5 and ds.num_classes == 10


# ---- class sets -----------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [10, 200, 5000])
def test_class_count_exact(num_classes):
    ds = GlyphScenes(num_classes=num_classes, length=1)
    assert ds.num_classes == len(ds.classes) == num_classes
    assert ds.palette.shape == (num_classes, 3) and ds.class_frequencies.shape == (num_classes,)
    assert len(ds.things) == num_classes - ds.num_stuff
    assert len(set(ds.classes)) == num_classes


@pytest.mark.parametrize("num_classes, difficulty", [(200, 0.0), (5000, 0.0), (300, 0.5), (120, 1.0)])
def test_classes_distinct(num_classes, difficulty):
    ds = GlyphScenes(num_classes=num_classes, difficulty=difficulty, length=1)
    triples = [(c.shape, c.pattern, c.colour) for c in ds.things]
    assert len(set(triples)) == len(triples)
    descs = _glyphs.descriptors(sorted({c.shape for c in ds.things}, key=lambda g: (g.font, g.codepoint)))
    iou = _glyphs._iou(descs, descs)
    np.fill_diagonal(iou, 0.0)
    assert iou.max() < _glyphs.DEDUP_IOU  # no two shapes in use look alike, mirrored or not


def test_shape_bank_is_deduplicated_and_prefix_stable():
    first = _glyphs.shapes(300)
    assert _glyphs.shapes(40) == first[:40]
    assert len({(g.font, g.codepoint) for g in first}) == 300
    assert [chr(g.codepoint) for g in first[:3]] == list(_glyphs.HEAD[:3])
    descs = _glyphs.descriptors(first)
    iou = _glyphs._iou(descs, descs)
    np.fill_diagonal(iou, 0.0)
    assert iou.max() < _glyphs.DEDUP_IOU


def test_dedup_rejects_copies_and_mirror_images():
    descs = _glyphs.descriptors(_glyphs.shapes(300))
    mirrored = _glyphs._mirror(descs)
    plain_iou = (descs * mirrored).sum(1) / np.maximum(np.maximum(descs, mirrored).sum(1), 1)
    asym = np.flatnonzero(plain_iou < 0.5)[:3]  # shapes unlike their own mirror image
    assert len(asym) == 3
    candidates = np.concatenate([descs[asym], mirrored[asym], descs[asym[:1]]])
    kept = _glyphs._dedup(candidates, np.zeros((0, descs.shape[1]), np.float32))
    assert kept.tolist() == [0, 1, 2]
    # against an already accepted set, too
    assert _glyphs._dedup(mirrored[asym], descs[asym]).tolist() == []


@pytest.mark.slow
def test_shape_only_class_set_at_5000():
    ds = GlyphScenes(num_classes=5000, difficulty=1.0, length=1)
    assert ds.num_classes == len(set(ds.classes)) == 5000
    assert len({c.shape for c in ds.things}) == len(ds.things)  # one combination: shape is all
    assert len({(c.colour, c.pattern) for c in ds.things}) == 1


def test_small_class_sets_use_colour_and_pattern_before_shape():
    things = thing_classes(NUM_COMBOS, difficulty=0.0)
    combos = [(c.colour, c.pattern) for c in things]
    assert len(set(combos)) == NUM_COMBOS  # every class has its own (colour, pattern)
    assert {c.colour for c in things[: len(COLOURS)]} == set(range(len(COLOURS)))
    more = thing_classes(NUM_COMBOS + 1, difficulty=0.0)
    assert (more[-1].colour, more[-1].pattern) == combos[0] and more[-1].shape != more[0].shape


def test_difficulty_shares_combinations_between_more_classes():
    per_combo = {}
    for d in (0.0, 0.5, 1.0):
        things = thing_classes(500, difficulty=d)
        per_combo[d] = max(Counter((c.colour, c.pattern) for c in things).values())
    assert per_combo[0.0] < per_combo[0.5] < per_combo[1.0] == 500


def test_bad_arguments_raise_actionable_errors():
    with pytest.raises(DatasetError, match="train, val, test"):
        GlyphScenes(split="training")
    with pytest.raises(DatasetError, match="no thing classes"):
        GlyphScenes(num_classes=2)
    with pytest.raises(DatasetError, match="difficulty"):
        GlyphScenes(difficulty=1.5)
    with pytest.raises(DatasetError, match="zipf"):
        GlyphScenes(zipf=-1)
    with pytest.raises(DatasetError, match="num_stuff"):
        GlyphScenes(num_stuff=len(STUFF) + 1)
    with pytest.raises(IndexError):
        GlyphScenes(length=3).load(3)


# ---- determinism and splits ---------------------------------------------------------------


def test_deterministic_per_seed_split_index(ds200):
    again = GlyphScenes(num_classes=200, split="train", length=400)
    for i in (0, 7, 399):
        assert _digest(*ds200[i]) == _digest(*again[i])
        assert ds200.layout(i) == again.layout(i)
    assert _digest(*ds200[3]) == _digest(*ds200[3])  # repeated access
    assert _digest(*ds200[0]) != _digest(*ds200[1])
    other_seed = GlyphScenes(num_classes=200, split="train", length=400, seed=1)
    assert _digest(*ds200[0]) != _digest(*other_seed[0])


def test_train_and_val_disjoint(ds200):
    val = GlyphScenes(num_classes=200, split="val", length=60)
    test = GlyphScenes(num_classes=200, split="test", length=60)
    train_set = {_digest(*ds200[i]) for i in range(60)}
    val_set = {_digest(*val[i]) for i in range(60)}
    test_set = {_digest(*test[i]) for i in range(60)}
    assert len(train_set) == len(val_set) == len(test_set) == 60
    assert not train_set & val_set and not train_set & test_set and not val_set & test_set


def test_default_lengths():
    assert len(GlyphScenes(split="train")) == 10_000
    assert len(GlyphScenes(split="val")) == 500


# ---- frequencies ----------------------------------------------------------------------------


def _object_counts(ds: GlyphScenes, n: int) -> np.ndarray:
    counts = np.zeros(ds.num_classes)
    for i in range(n):
        for obj in ds.layout(i).objects:
            counts[obj.class_id] += 1
    return counts


def test_zipf_frequencies_follow_the_configured_order():
    ds = GlyphScenes(num_classes=60, zipf=1.0, length=3000)
    counts = _object_counts(ds, 3000)[ds.num_stuff :]
    probs = ds.thing_probabilities
    order = np.argsort(-probs)
    head, tail = order[:3], order[-20:]
    assert counts[head].min() > 3 * counts[tail].max()
    # empirical shares match the configured probabilities
    np.testing.assert_allclose(counts / counts.sum(), probs, atol=0.02)
    # rank 1 vs rank 2 follows the Zipf ratio 2:1
    assert 1.5 < counts[order[0]] / counts[order[1]] < 2.6


def test_uniform_frequencies_are_flat():
    ds = GlyphScenes(num_classes=40, zipf=0.0, length=3000)
    counts = _object_counts(ds, 3000)[ds.num_stuff :]
    assert np.allclose(ds.thing_probabilities, 1 / len(ds.things))
    expected = counts.sum() / len(counts)  # ~283 per class
    assert counts.min() > 0.7 * expected and counts.max() < 1.3 * expected


def test_class_frequencies_match_pixel_counts():
    ds = GlyphScenes(num_classes=30, zipf=1.0, length=300)
    pixels = np.zeros(ds.num_classes)
    for i in range(300):
        pixels += np.bincount(ds.load(i)[1].ravel(), minlength=ds.num_classes)
    share = pixels / pixels.sum()
    thing = slice(ds.num_stuff, None)
    assert share[thing].sum() == pytest.approx(ds.class_frequencies[thing].sum(), abs=0.05)
    head = ds.num_stuff + int(np.argmax(ds.thing_probabilities))
    tail = ds.num_stuff + int(np.argmin(ds.thing_probabilities))
    assert share[head] > 3 * share[tail]


# ---------------------------------------------------------------- class attributes, zero-shot


def test_class_attributes_are_the_shape_pattern_colour_of_each_thing(ds200):
    attrs = ds200.class_attributes
    assert len(attrs) == ds200.num_classes
    assert all(a == [f"stuff:{STUFF[c][0]}"] for c, a in enumerate(attrs[: ds200.num_stuff]))
    for thing, tokens in zip(ds200.things, attrs[ds200.num_stuff :]):
        shape, pattern, colour = tokens
        assert shape.startswith(f"shape:U+{thing.shape.codepoint:04X}")
        assert pattern == f"pattern:{PATTERNS[thing.pattern][0]}" and colour == "colour:" + COLOURS[thing.colour][0].replace(" ", "-")
    assert len({tuple(a) for a in attrs}) == ds200.num_classes  # descriptions tell every class apart
    assert all(not any(ch.isspace() for ch in t) for a in attrs for t in a)


def test_held_out_classes_never_appear_in_training_scenes_but_do_in_val():
    train = GlyphScenes(split="train", num_classes=120, size=32, held_out=0.2)
    val = GlyphScenes(split="val", num_classes=120, size=32, held_out=0.2)
    unseen = set(train.unseen_classes)
    assert unseen == set(val.unseen_classes) and len(unseen) == round(0.2 * len(train.things))
    seen_train = {o.class_id for i in range(600) for o in train.layout(i).objects}
    assert not seen_train & unseen and len(seen_train) > 50
    _, label = train[0]
    assert not set(label.unique().tolist()) & unseen
    assert {o.class_id for i in range(300) for o in val.layout(i).objects} & unseen
    assert set(val.class_groups["unseen_thing"]) == unseen
    assert set(val.class_groups["seen_thing"]) | unseen == set(val.class_groups["thing"])
    assert train.thing_probabilities[[c - train.num_stuff for c in unseen]].sum() == 0


def test_held_out_classes_are_new_combinations_of_seen_factors():
    ds = GlyphScenes(num_classes=300, held_out=0.3)
    seen = [t for i, t in enumerate(ds.things) if ds.num_stuff + i not in set(ds.unseen_classes)]
    for c in ds.unseen_classes:
        t = ds.things[c - ds.num_stuff]
        assert any(s.shape == t.shape for s in seen) and any(s.pattern == t.pattern for s in seen)
        assert any(s.colour == t.colour for s in seen)
    assert GlyphScenes(num_classes=300, held_out=0.3).unseen_classes == ds.unseen_classes  # deterministic


def test_held_out_bad_values():
    with pytest.raises(DatasetError, match="held_out must be a fraction"):
        GlyphScenes(num_classes=50, held_out=1.0)
    with pytest.raises(DatasetError, match="can be held out"):
        GlyphScenes(num_classes=8, held_out=0.9)
