"""``glyph_scenes``: a procedural segmentation dataset with 10 to 10,000+ classes, no download.

A scene is an S x S image: a background of 1-3 "stuff" regions, each a procedural texture
(clouds, bricks, waves, ...: they differ in pattern, not only in colour, and are all muted),
and 2-5 foreground "thing" objects painted over it, later ones occluding earlier ones. A thing
is a font glyph (``esseg.data._glyphs``) at a random scale (16-40 px at S=64), position and
rotation (+-15 degrees), filled with a two-tone pattern in a saturated colour.

A thing class is a triple (shape, fill pattern, colour), so classes share factors the way real
classes share parts. Colour (24: 12 hues x vivid/dark) and pattern (8) are local cues that a
small CNN picks up in minutes; shape is the hard, global cue. Thing classes are enumerated so
that the 192 (colour, pattern) combinations are used up before two classes share one, and
``difficulty`` sets how many combinations are in use at all: at 0 all 192 are (up to 192 thing
classes never need their shape; C=5000 puts ~26 classes on each combination), at 1 a single
one is and only the shape tells classes apart.

Labels are hard: a pixel belongs to the top-most object whose anti-aliased alpha is >= 0.5
there, else to the stuff region under it. No pixel is ignored (``ignore_index`` only matters
for padding added by transforms).

Frequencies: thing classes are drawn with probability proportional to ``rank ** -zipf`` (ranks
1, 2, ... over a fixed pseudo-random order of the thing classes, so frequency does not follow
difficulty; ``zipf=0`` is uniform); stuff classes are drawn uniformly. Every sample is a pure
function of ``(seed, split, index)``; the splits use different random streams.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image

from esseg.data import _glyphs
from esseg.data.base import SegmentationDataset, default_ignore_index
from esseg.errors import DatasetError

# Thing colours: 12 hues 30 degrees apart, each vivid and dark (about half the value).
# Stuff colours are muted (HSV saturation < 0.5, things > 0.8).
_HUES = ("red", "orange", "yellow", "lime", "green", "spring", "cyan", "azure", "blue", "violet", "magenta", "rose")
COLOURS: tuple[tuple[str, tuple[float, float, float]], ...] = tuple(
    (prefix + name, (i / len(_HUES), 0.95, value))  # (name, HSV)
    for prefix, value in (("", 0.95), ("dark ", 0.5))
    for i, name in enumerate(_HUES)
)
# Fill patterns (name, second tone). A pattern is geometry plus the tone of its marks
# ("dark": 0.3 x the colour, "white"); look-alike geometries get different tones. No pattern
# turns into another under a horizontal flip (there is one diagonal, not "/" and "\"), so
# flip augmentation keeps labels valid.
PATTERNS: tuple[tuple[str, str], ...] = (
    ("solid", ""),
    ("h-striped", "dark"),
    ("v-striped", "white"),
    ("diagonal", "dark"),
    ("zigzag", "white"),
    ("checkered", "dark"),
    ("dotted", "white"),
    ("crosshatched", "white"),
)
NUM_COMBOS = len(COLOURS) * len(PATTERNS)
SPLITS = {"train": 0, "val": 1, "test": 2}
DEFAULT_LENGTH = {"train": 10_000, "val": 500, "test": 500}
MAX_STUFF = 12
MIN_HEAD_SHAPES = 12  # small class sets still cycle through this many shapes
SCALE_RANGE = (0.25, 0.625)  # glyph's longer side / S (16-40 px at S=64)
MAX_ROTATION = 15.0  # degrees
PERIOD_FRAC = 1 / 11  # thing fill pattern period / S
_FREQ_ORDER_SEED = 20240917  # fixed: the frequency order of thing classes is not a dataset seed
_HELD_OUT_SEED = 20261129  # with the dataset seed: which thing classes held_out keeps out of training


@dataclass(frozen=True)
class ThingClass:
    shape: _glyphs.Glyph
    pattern: int
    colour: int

    @property
    def name(self) -> str:
        return f"glyph {self.shape.name}, {PATTERNS[self.pattern][0]}, {COLOURS[self.colour][0]}"

    @property
    def tokens(self) -> list[str]:
        """Attribute tokens ``shape:U+25A0``, ``pattern:h-striped``, ``colour:dark-red`` (no whitespace)."""
        tag = _glyphs.FONT_TAGS.get(self.shape.font, self.shape.font)
        shape = f"shape:U+{self.shape.codepoint:04X}" + (f"@{tag.replace(' ', '-')}" if tag else "")
        return [shape, f"pattern:{PATTERNS[self.pattern][0]}", f"colour:{COLOURS[self.colour][0].replace(' ', '-')}"]


@dataclass(frozen=True)
class PlacedObject:
    """One thing in a scene: class id, centre (x, y) px, longer side px, rotation degrees,
    and the per-instance fill parameters (RGB colour, pattern phase)."""

    class_id: int
    center: tuple[float, float]
    size: float
    angle: float
    rgb: tuple[float, float, float]
    phase: tuple[float, float]


@dataclass(frozen=True)
class Layout:
    """Everything random about one scene; rendering it is deterministic."""

    stuff: tuple[int, ...]  # stuff class ids of the background regions
    sites: tuple[tuple[float, float], ...]  # one Voronoi site (x, y) px per region
    objects: tuple[PlacedObject, ...]
    texture_seed: int


# ----------------------------------------------------------------------------- stuff textures


def _noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth value noise in [0, 1]: a cells x cells random grid upsampled bicubically."""
    grid = rng.random((cells + 1, cells + 1)).astype(np.float32)
    up = Image.fromarray(grid).resize((size, size), Image.BICUBIC)
    return np.clip(np.asarray(up), 0.0, 1.0)


def _stuff_clouds(rng, x, y, s):
    return 0.6 * _noise(rng, s, 3) + 0.4 * _noise(rng, s, 7)


def _stuff_bricks(rng, x, y, s):
    bh = s / rng.uniform(7, 9)
    bw = 2.2 * bh
    row = np.floor(y / bh)
    xs = x + (row % 2) * bw / 2
    mortar = (np.mod(y, bh) < 1.6) | (np.mod(xs, bw) < 1.6)
    return np.where(mortar, 1.0, 0.15 * rng.random()).astype(np.float32)


def _stuff_waves(rng, x, y, s):
    period = s / rng.uniform(4, 6)
    return 0.5 + 0.5 * np.sin(2 * np.pi * (y + 0.12 * s * np.sin(2 * np.pi * x / (0.5 * s))) / period)


def _stuff_gravel(rng, x, y, s):
    return rng.random((s, s)).astype(np.float32) ** 2


def _stuff_tiles(rng, x, y, s):
    cell = s / rng.uniform(3, 4.5)
    return ((np.floor(x / cell) + np.floor(y / cell)) % 2).astype(np.float32)


def _stuff_grass(rng, x, y, s):
    blades = np.repeat(rng.random((1, s)).astype(np.float32), s, axis=0)
    return 0.7 * blades + 0.3 * _noise(rng, s, 4)


def _stuff_plaid(rng, x, y, s):
    p = s / rng.uniform(2.5, 3.5)

    def bands(t):
        return (np.mod(t, p) < 0.3 * p).astype(np.float32) + 0.5 * (np.mod(t + 0.5 * p, p) < 0.1 * p)

    return np.clip(0.5 * bands(x) + 0.5 * bands(y), 0, 1)


def _stuff_wood(rng, x, y, s):
    cx, cy = rng.uniform(-s, 2 * s, size=2)
    r = np.hypot(x - cx, (y - cy) * 0.3) + 0.15 * s * _noise(rng, s, 3)
    return 0.5 + 0.5 * np.sin(2 * np.pi * r / (s / 9))


def _stuff_chevron(rng, x, y, s):
    p = s / rng.uniform(4, 6)
    tri = np.abs(np.mod(x, p) - p / 2)
    return (np.mod(y + tri, p) < p / 2).astype(np.float32)


def _stuff_honeycomb(rng, x, y, s):
    k = 2 * np.pi / (s / rng.uniform(5, 7))
    v = sum(np.cos(k * (x * math.cos(a) + y * math.sin(a))) for a in (0.0, 2 * math.pi / 3, 4 * math.pi / 3))
    return ((v + 1.5) / 4.5 > 0.55).astype(np.float32)


def _stuff_crosshatch(rng, x, y, s):
    p = s / rng.uniform(6, 8)
    return ((np.mod(x + y, p) < 1.3) | (np.mod(x - y, p) < 1.3)).astype(np.float32)


def _stuff_marble(rng, x, y, s):
    turb = _noise(rng, s, 4)
    return np.abs(np.sin(2 * np.pi * ((x + y) / (0.5 * s) + 2.0 * turb))) ** 0.5


# name, texture (rng, x, y, S) -> [0, 1], dark tone, light tone
STUFF: tuple[tuple[str, Callable, tuple[int, int, int], tuple[int, int, int]], ...] = (
    ("clouds-grey", _stuff_clouds, (95, 100, 110), (200, 205, 210)),
    ("bricks-tan", _stuff_bricks, (150, 110, 80), (215, 205, 185)),
    ("waves-sage", _stuff_waves, (105, 130, 105), (185, 205, 180)),
    ("gravel-slate", _stuff_gravel, (80, 85, 100), (170, 175, 185)),
    ("tiles-cream", _stuff_tiles, (190, 180, 150), (240, 235, 220)),
    ("grass-olive", _stuff_grass, (85, 95, 55), (160, 170, 115)),
    ("plaid-mauve", _stuff_plaid, (120, 95, 120), (200, 180, 200)),
    ("wood-umber", _stuff_wood, (110, 85, 65), (175, 145, 115)),
    ("chevron-steel", _stuff_chevron, (95, 115, 125), (175, 190, 200)),
    ("honeycomb-ochre", _stuff_honeycomb, (165, 145, 95), (220, 205, 165)),
    ("crosshatch-khaki", _stuff_crosshatch, (135, 130, 100), (215, 210, 185)),
    ("marble-white", _stuff_marble, (170, 170, 175), (245, 245, 245)),
)


# ------------------------------------------------------------------------------ thing fills


def _fill_pattern(pattern: int, u: np.ndarray, v: np.ndarray, period: float) -> np.ndarray:
    """Boolean map: True where the pattern's second tone goes, in object coordinates (u, v)."""
    half = period / 2
    name = PATTERNS[pattern][0]
    if name == "solid":
        return np.zeros(u.shape, bool)
    if name == "h-striped":
        return np.mod(v, period) < half
    if name == "v-striped":
        return np.mod(u, period) < half
    if name == "diagonal":
        return np.mod((u + v) * 0.7071, period) < half
    if name == "zigzag":
        tri = np.abs(np.mod(u, 2 * period) - period)
        return np.mod(v + tri, period) < half
    if name == "checkered":
        cell = 0.75 * period
        return (np.floor(u / cell) + np.floor(v / cell)) % 2 == 1
    if name == "dotted":
        du, dv = np.mod(u, period) - half, np.mod(v, period) - half
        return du * du + dv * dv < (0.33 * period) ** 2
    if name == "crosshatched":
        w = max(1.2, 0.3 * period)
        return (np.mod((u + v) * 0.7071, period) < w) | (np.mod((u - v) * 0.7071, period) < w)
    raise AssertionError(name)


def _second_tone(pattern: int, rgb: np.ndarray) -> np.ndarray:
    return 0.3 * rgb if PATTERNS[pattern][1] == "dark" else np.full(3, 240.0, np.float32)


def _thing_rgb(colour: int, rng: np.random.Generator) -> tuple[float, float, float]:
    h, s, v = COLOURS[colour][1]
    h = (h + rng.uniform(-0.012, 0.012)) % 1.0
    s = s * rng.uniform(0.85, 1.0)
    v = v * rng.uniform(0.85, 1.05)
    return tuple(255.0 * min(1.0, c) for c in colorsys.hsv_to_rgb(h, s, v))


def held_out_things(things: list[ThingClass], fraction: float, seed: int) -> list[int]:
    """Indices (into ``things``) of ``round(fraction * len(things))`` classes to hold out of training.

    Candidates come in a random order seeded by ``seed``; one is held out while its shape, its
    pattern and its colour each still occur in at least one other *seen* class, so every
    held-out class is a new combination of factors seen in training (zero-shot by composition).
    Raises DatasetError when fewer classes qualify.
    """
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"held_out must be a fraction in [0, 1); got {fraction}")
    want = round(fraction * len(things))
    counts: dict[tuple, int] = {}
    keys = [(("shape", t.shape), ("pattern", t.pattern), ("colour", t.colour)) for t in things]
    for k in keys:
        for f in k:
            counts[f] = counts.get(f, 0) + 1
    held = []
    for t in np.random.default_rng([_HELD_OUT_SEED, seed]).permutation(len(things)).tolist():
        if len(held) == want:
            break
        if all(counts[f] >= 2 for f in keys[t]):
            held.append(t)
            for f in keys[t]:
                counts[f] -= 1
    if len(held) < want:
        raise DatasetError(f"only {len(held)} of the {want} thing classes asked for (held_out={fraction}) can be held out "
                           "with their shape, pattern and colour each still seen in training; lower held_out")
    return sorted(held)


def thing_classes(num_things: int, difficulty: float) -> list[ThingClass]:
    """The thing classes for a class set: (shape, pattern, colour) triples, easiest first.

    Combination ``j`` (of ``NUM_COMBOS`` = 24 colours x 8 patterns) is colour ``j % 24`` with
    pattern ``(j // 24 + j % 24) % 8``, so consecutive classes differ in colour and pattern.
    Only the first ``n_combos = round(NUM_COMBOS ** (1 - difficulty))`` combinations are used.
    Thing ``t`` gets combination ``t % n_combos`` and shape ``(t // n_combos + t % n_combos) %
    n_shapes`` of the first ``n_shapes = max(ceil(num_things / n_combos), min(12, num_things))``
    shapes in ``_glyphs`` order: classes that share a combination get different shapes, and
    small class sets still show a dozen shapes (a redundant cue there).
    """
    if not 0.0 <= difficulty <= 1.0:
        raise DatasetError(f"difficulty must be in [0, 1]; got {difficulty}")
    n_combos = max(1, min(NUM_COMBOS, round(NUM_COMBOS ** (1.0 - difficulty))))
    n_shapes = max(math.ceil(num_things / n_combos), min(MIN_HEAD_SHAPES, num_things))
    try:
        shapes = _glyphs.shapes(n_shapes)
    except ValueError as err:
        raise DatasetError(f"{err}: lower difficulty={difficulty} or num_classes") from None
    out = []
    for t in range(num_things):
        j = t % n_combos
        colour, pattern = j % len(COLOURS), (j // len(COLOURS) + j % len(COLOURS)) % len(PATTERNS)
        out.append(ThingClass(shapes[(t // n_combos + j) % n_shapes], pattern, colour))
    return out


class GlyphScenes(SegmentationDataset):
    """Synthetic many-class scenes: textured stuff background, glyph-shaped patterned things.

    Args:
        root: ignored (nothing is read from disk); accepted for the registry signature.
        split: ``"train"``, ``"val"`` or ``"test"``: disjoint random streams.
        transforms: paired transform ``(pil_image, label) -> (image, label)``; ``None`` only
            converts to tensors and normalises with the ImageNet mean/std.
        num_classes: total classes C, stuff included (>= 3; up to ~14,000 thing classes at
            ``difficulty=1``, ~2.7 million at 0). The first ``num_stuff`` ids are stuff.
        size: scene side S in pixels.
        length: number of samples; default 10,000 for train, 500 for val/test.
        seed: dataset seed; sample ``i`` of split ``s`` depends only on ``(seed, s, i)``.
        zipf: Zipf exponent of thing-class frequencies (1.0 ~ LVIS-like long tail, 0 uniform).
        difficulty: in [0, 1]; how many thing classes share one (colour, pattern) combination
            and must be told apart by shape alone: ``round(192 ** (1 - difficulty))``
            combinations are in use, all 192 at 0, 14 at 0.5, one at 1.
        num_stuff: number of stuff (background texture) classes; default
            ``min(12, max(2, C // 4))``.
        num_objects: (min, max) things per scene, inclusive.
        held_out: fraction of thing classes never drawn in the ``train`` split (zero-shot
            protocol; other splits draw all classes), chosen by :func:`held_out_things` with
            ``seed`` so each one's shape, pattern and colour occur in some seen class.

    Attributes:
        classes: C names, ``"stuff: bricks-tan"`` or ``"glyph U+25A0 ■, h-striped, dark red"``.
        palette: (C, 3) uint8, each class's typical colour (jittered so entries differ).
        things: the ``ThingClass`` (shape, pattern, colour) of ids ``num_stuff ...  C - 1``.
        thing_probabilities: (C - num_stuff,) probability of each thing class per object draw.
        class_frequencies: (C,) approximate expected share of pixels per class (sums to 1).
        class_groups: ``{"thing": range(num_stuff, C), "stuff": range(num_stuff)}``; evaluation
            adds ``thing_mIoU``, ``thing_Acc``, ``stuff_mIoU``, ``stuff_Acc`` from it. With
            ``held_out > 0`` also ``seen_thing`` and ``unseen_thing`` (``seen_thing_mIoU``, ...).
        class_attributes: C token lists, a class's description for an ``attributes`` class
            encoder: things ``[shape:U+25A0, pattern:solid, colour:red]``, stuff ``[stuff:bricks-tan]``.
        unseen_classes: class ids held out of training (empty unless ``held_out > 0``).

    Shapes:
        ``__getitem__`` -> image (3, S, S) float32, label (S, S) int64 in ``[0, C)``.
    """

    def __init__(
        self,
        root=None,
        split: str = "train",
        transforms=None,
        num_classes: int = 200,
        size: int = 64,
        length: int | None = None,
        seed: int = 0,
        zipf: float = 1.0,
        difficulty: float = 0.0,
        num_stuff: int | None = None,
        num_objects: tuple[int, int] = (2, 5),
        held_out: float = 0.0,
    ):
        super().__init__(root, split, transforms)
        if split not in SPLITS:
            raise DatasetError(f"unknown glyph_scenes split {split!r}; use one of {', '.join(SPLITS)}")
        if num_stuff is None:
            num_stuff = min(MAX_STUFF, max(2, num_classes // 4))
        if not 1 <= num_stuff <= len(STUFF):
            raise DatasetError(f"num_stuff must be in [1, {len(STUFF)}]; got {num_stuff}")
        if num_classes < num_stuff + 1:
            raise DatasetError(f"num_classes={num_classes} leaves no thing classes next to num_stuff={num_stuff}")
        if size < 16:
            raise DatasetError(f"size must be >= 16 px; got {size}")
        if zipf < 0:
            raise DatasetError(f"zipf must be >= 0 (0 = uniform); got {zipf}")
        lo, hi = num_objects
        if not 0 <= lo <= hi:
            raise DatasetError(f"num_objects must be (min, max) with 0 <= min <= max; got {num_objects}")
        self.size = int(size)
        self.seed = int(seed)
        self.zipf = float(zipf)
        self.difficulty = float(difficulty)
        self.num_stuff = int(num_stuff)
        self.num_objects = (int(lo), int(hi))
        self.length = DEFAULT_LENGTH[split] if length is None else int(length)

        self.things = thing_classes(num_classes - num_stuff, self.difficulty)
        self.classes = tuple(f"stuff: {STUFF[i][0]}" for i in range(num_stuff)) + tuple(t.name for t in self.things)
        self.ignore_index = default_ignore_index(num_classes)
        self.palette = self._make_palette()
        # evaluation reports thing_mIoU/thing_Acc and stuff_* next to the usual metrics
        self.class_groups = {"thing": range(num_stuff, num_classes), "stuff": range(num_stuff)}
        self.class_attributes = [[f"stuff:{STUFF[i][0]}"] for i in range(num_stuff)] + [t.tokens for t in self.things]
        held = held_out_things(self.things, float(held_out), self.seed) if held_out else []
        self.held_out = float(held_out)
        self.unseen_classes = [num_stuff + t for t in held]
        if held:
            unseen = set(self.unseen_classes)
            self.class_groups["seen_thing"] = [c for c in range(num_stuff, num_classes) if c not in unseen]
            self.class_groups["unseen_thing"] = list(self.unseen_classes)

        n = len(self.things)
        rank = np.random.default_rng(_FREQ_ORDER_SEED).permutation(n)  # rank[t]: 0 = most frequent
        weights = (rank + 1.0) ** -self.zipf
        if held and split == "train":
            weights[held] = 0.0
        self.thing_probabilities = weights / weights.sum()
        self._thing_cdf = np.cumsum(self.thing_probabilities)
        self.class_frequencies = self._expected_pixel_shares()
        y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
        self._xy = (x, y)  # pixel centres

    # ---- class set ---------------------------------------------------------------------

    def _make_palette(self) -> np.ndarray:
        pal = [np.add(STUFF[i][2], STUFF[i][3]) / 2 for i in range(self.num_stuff)]
        for t, cls in enumerate(self.things):
            base = 255.0 * np.array(colorsys.hsv_to_rgb(*COLOURS[cls.colour][1]))
            shade = 1.0 - 0.5 * cls.pattern / (len(PATTERNS) - 1)
            jitter = np.random.default_rng(t).uniform(-30, 30, 3)
            pal.append(base * shade + jitter)
        return np.clip(np.round(pal), 0, 255).astype(np.uint8)

    def _expected_pixel_shares(self) -> np.ndarray:
        """Approximate expected share of pixels per class (Poisson coverage, no occlusion order)."""
        fills = np.array([c.shape.fill for c in self.things])
        lo, hi = SCALE_RANGE
        mean_sq_side = (hi**3 - lo**3) / (3 * (hi - lo))  # E[L^2] / S^2 for L ~ U(lo, hi) * S
        mean_objects = sum(self.num_objects) / 2
        coverage = 1.0 - math.exp(-mean_objects * mean_sq_side * float(fills @ self.thing_probabilities))
        thing = self.thing_probabilities * fills
        thing = coverage * thing / thing.sum()
        stuff = np.full(self.num_stuff, (1.0 - coverage) / self.num_stuff)
        return np.concatenate([stuff, thing])

    # ---- sampling ----------------------------------------------------------------------

    def __len__(self) -> int:
        return self.length

    def sample_name(self, index: int) -> str:
        return f"glyph_{self.split}_{index:06d}"

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLITS[self.split], int(index)])

    def layout(self, index: int) -> Layout:
        """The random content of sample ``index`` (classes, placements, colours) without pixels."""
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for glyph_scenes {self.split} of length {self.length}")
        rng = self._rng(index)
        s = self.size
        k = int(rng.choice([1, 2, 3], p=[0.3, 0.4, 0.3]))
        stuff = tuple(int(c) for c in rng.choice(self.num_stuff, size=min(k, self.num_stuff), replace=False))
        sites = tuple((float(a), float(b)) for a, b in rng.uniform(0, s, size=(len(stuff), 2)))
        objects = []
        for _ in range(int(rng.integers(self.num_objects[0], self.num_objects[1] + 1))):
            t = int(np.searchsorted(self._thing_cdf, rng.random() * self._thing_cdf[-1], side="right"))
            t = min(t, len(self.things) - 1)
            side = rng.uniform(*SCALE_RANGE) * s
            margin = 0.3 * side
            center = (float(rng.uniform(margin, s - margin)), float(rng.uniform(margin, s - margin)))
            objects.append(
                PlacedObject(
                    class_id=self.num_stuff + t,
                    center=center,
                    size=float(side),
                    angle=float(rng.uniform(-MAX_ROTATION, MAX_ROTATION)),
                    rgb=_thing_rgb(self.things[t].colour, rng),
                    phase=(float(rng.uniform(0, 64)), float(rng.uniform(0, 64))),
                )
            )
        return Layout(stuff, sites, tuple(objects), int(rng.integers(2**31)))

    # ---- rendering ---------------------------------------------------------------------

    def render(self, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
        """Pixels of a layout: (S, S, 3) uint8 image and (S, S) int64 label."""
        s = self.size
        x, y = self._xy
        rng = np.random.default_rng(layout.texture_seed)
        # background: Voronoi regions of the sites with wobbly borders, one texture each
        wobble = 0.25 * s * (_noise(rng, s, 3) - 0.5)
        sign = (-1, 1)
        dist = np.stack([np.hypot(x - sx, y - sy) + sign[i % 2] * wobble for i, (sx, sy) in enumerate(layout.sites)])
        region = np.argmin(dist, axis=0)
        image = np.empty((s, s, 3), np.float32)
        label = np.empty((s, s), np.int64)
        for i, c in enumerate(layout.stuff):
            _, texture, dark, light = STUFF[c]
            t = texture(rng, x, y, s)[..., None]
            jitter = rng.uniform(0.9, 1.1)
            rgb = (np.asarray(dark, np.float32) * (1 - t) + np.asarray(light, np.float32) * t) * jitter
            m = region == i
            image[m] = rgb[m]
            label[m] = c
        # things, back to front
        res = self._mask_res()
        period = max(5.0, s * PERIOD_FRAC)
        for obj in layout.objects:
            cls = self.things[obj.class_id - self.num_stuff]
            alpha = self._place(cls.shape, res, obj)
            theta = math.radians(obj.angle)
            dx, dy = x - obj.center[0], y - obj.center[1]
            u = math.cos(theta) * dx + math.sin(theta) * dy + obj.phase[0]
            v = -math.sin(theta) * dx + math.cos(theta) * dy + obj.phase[1]
            marks = _fill_pattern(cls.pattern, u, v, period)
            rgb = np.asarray(obj.rgb, np.float32)
            fill = np.where(marks[..., None], _second_tone(cls.pattern, rgb), rgb)
            a = alpha[..., None]
            image = image * (1 - a) + fill * a
            label[alpha >= 0.5] = obj.class_id
        return np.clip(image + 0.5, 0, 255).astype(np.uint8), label

    def _mask_res(self) -> int:
        return int(16 * math.ceil(SCALE_RANGE[1] * self.size / 16))

    def _place(self, shape: _glyphs.Glyph, res: int, obj: PlacedObject) -> np.ndarray:
        """The glyph's alpha (S, S) float32 in [0, 1], scaled, rotated and moved to the object."""
        mask = _glyphs.mask(shape, res)
        scale = obj.size / res  # output px per mask px
        theta = math.radians(obj.angle)
        c, sn = math.cos(theta) / scale, math.sin(theta) / scale
        cx, cy = obj.center
        # output (x, y) -> mask (c*(x-cx) + sn*(y-cy) + res/2, -sn*(x-cx) + c*(y-cy) + res/2)
        coeffs = (c, sn, res / 2 - c * cx - sn * cy, -sn, c, res / 2 + sn * cx - c * cy)
        out = Image.fromarray(mask).transform((self.size, self.size), Image.AFFINE, coeffs, resample=Image.BILINEAR)
        return np.asarray(out, np.float32) / 255.0

    def load(self, index: int) -> tuple[Image.Image, np.ndarray]:
        image, label = self.render(self.layout(index))
        return Image.fromarray(image), label
