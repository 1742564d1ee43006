"""Glyph shapes for ``glyph_scenes``: render, filter, deduplicate and order font glyphs.

Shapes come from the fonts that ship with matplotlib (DejaVu, STIX), rendered with FreeType
through ``matplotlib.ft2font``; no figure is ever created. A shape is one (font, code point)
whose bitmap, cropped to its ink and fitted into a square preserving aspect, is

* big enough and not a thin line (aspect <= 2.5, ink covers >= 15 % of the fitted square),
* not alike any shape accepted before it: alike means IoU >= ``DEDUP_IOU`` between the
  16x16 binarised bitmaps, also after a horizontal flip (so flip augmentation cannot turn one
  class into another; "b"/"d", "<"/">" count as one shape).

The order is fixed and prefix-stable: the hand-picked blocky symbols of ``HEAD`` first, then
greedy farthest-point picks (most distinct x most solid next) among the most solid glyphs of
the first font, then the rest of the first font by solidity (thick strokes first), then each
further font's new shapes by solidity. Fonts are rendered lazily, only as far as the shapes
asked for need, once per process, and kept in memory (as are the masks of :func:`mask`).
"""

from __future__ import annotations

import functools
import os
import unicodedata
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

# Bold fonts first: thick strokes keep a fill pattern visible inside a small glyph.
FONTS = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif-Bold.ttf",
    "STIXGeneralBol.ttf",
    "DejaVuSans.ttf",
    "DejaVuSerif.ttf",
    "STIXGeneral.ttf",
    "DejaVuSansMono-Bold.ttf",
)
FONT_TAGS = {
    "DejaVuSans-Bold.ttf": "",
    "DejaVuSerif-Bold.ttf": "serif bold",
    "STIXGeneralBol.ttf": "STIX bold",
    "DejaVuSans.ttf": "sans",
    "DejaVuSerif.ttf": "serif",
    "STIXGeneral.ttf": "STIX",
    "DejaVuSansMono-Bold.ttf": "mono bold",
}
# Filled, large, mutually distinct symbols: the first shapes every class set uses.
HEAD = "■●▲★♥✚◆♣▼♠✖☁"
DESC = 16  # descriptor side (pixels) used for deduplication and ordering
DEDUP_IOU = 0.88
NUM_FARTHEST = 128  # shapes after HEAD picked farthest-point first ...
FARTHEST_POOL = 512  # ... among this many most solid shapes
MIN_FILL = 0.15
MAX_ASPECT = 2.5
_SKIP_CATEGORIES = {"Mn", "Me", "Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"}
_RENDER_PT = 24
_SQUARE3 = np.ones((3, 3), bool)


@dataclass(frozen=True)
class Glyph:
    font: str
    codepoint: int
    fill: float  # fraction of the fitted square that is ink (16x16 descriptor)
    solidity: float  # fraction of the 16x16 descriptor that is ink and survives a 3x3 erosion

    @property
    def name(self) -> str:
        ch = chr(self.codepoint)
        tag = FONT_TAGS.get(self.font, self.font)
        return f"U+{self.codepoint:04X} {ch}" + (f" ({tag})" if tag else "")


def _font_path(font: str) -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf", font)


@functools.lru_cache(maxsize=None)
def _font(font: str, pt: int):
    from matplotlib.ft2font import FT2Font

    ft = FT2Font(_font_path(font))
    ft.set_size(pt, 72)
    return ft


def _ink(font: str, codepoint: int, pt: int) -> np.ndarray | None:
    """The glyph's anti-aliased bitmap cropped to its ink (uint8), or None if blank."""
    ft = _font(font, pt)
    ft.set_text(chr(codepoint), 0.0)
    ft.draw_glyphs_to_bitmap(antialiased=True)
    img = np.asarray(ft.get_image())
    rows = np.flatnonzero(img.max(axis=1) >= 128)
    cols = np.flatnonzero(img.max(axis=0) >= 128)
    if rows.size == 0 or cols.size == 0:
        return None
    return img[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _fit(ink: np.ndarray, size: int) -> np.ndarray:
    """Scale ``ink`` so its longer side is ``size`` and centre it in a size x size square."""
    h, w = ink.shape
    s = size / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    small = np.asarray(Image.fromarray(ink).resize((nw, nh), Image.BILINEAR))
    out = np.zeros((size, size), np.uint8)
    y0, x0 = (size - nh) // 2, (size - nw) // 2
    out[y0 : y0 + nh, x0 : x0 + nw] = small
    return out


def _candidates(font: str) -> tuple[list[Glyph], np.ndarray]:
    """Glyphs of ``font`` that pass the filters, and their binarised descriptors (N, DESC*DESC)."""
    ft = _font(font, _RENDER_PT)
    glyphs, descs = [], []
    for cp in sorted(ft.get_charmap()):
        if cp < 0x21 or cp > 0x10FFFF or unicodedata.category(chr(cp)) in _SKIP_CATEGORIES:
            continue
        ink = _ink(font, cp, _RENDER_PT)
        if ink is None or min(ink.shape) < 3:
            continue
        h, w = ink.shape
        if max(h, w) / min(h, w) > MAX_ASPECT or max(h, w) < 8:
            continue
        d = _fit(ink, DESC) >= 128
        fill = float(d.mean())
        if fill < MIN_FILL:
            continue
        glyphs.append(Glyph(font, cp, fill, float(ndimage.binary_erosion(d, _SQUARE3).mean())))
        descs.append(d.reshape(-1))
    if not descs:
        return [], np.zeros((0, DESC * DESC), np.float32)
    return glyphs, np.asarray(descs, np.float32)


def _mirror(descs: np.ndarray) -> np.ndarray:
    return descs.reshape(-1, DESC, DESC)[:, :, ::-1].reshape(len(descs), -1)


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU (len(a), len(b)) of binary descriptors, max over b and b mirrored."""
    area_a = a.sum(1)[:, None]
    area_b = b.sum(1)[None, :]
    inter = np.maximum(a @ b.T, a @ _mirror(b).T)
    return inter / np.maximum(area_a + area_b - inter, 1.0)


def _dedup(descs: np.ndarray, kept: np.ndarray, block: int = 512) -> np.ndarray:
    """Greedy dedup in the given order: indices of rows of ``descs`` not alike ``kept`` or an earlier row."""
    accepted: list[int] = []
    acc_descs = kept
    for start in range(0, len(descs), block):
        chunk = descs[start : start + block]
        alive = np.ones(len(chunk), bool)
        if len(acc_descs):
            alive &= _iou(chunk, acc_descs).max(1) < DEDUP_IOU
        inner = _iou(chunk, chunk) >= DEDUP_IOU
        new = []
        for i in np.flatnonzero(alive):
            if not any(inner[i, j] for j in new):
                new.append(i)
        accepted.extend(start + i for i in new)
        acc_descs = np.concatenate([acc_descs, chunk[new]]) if new else acc_descs
    return np.asarray(accepted, np.int64)


def _farthest_first(descs: np.ndarray, weight: np.ndarray, fixed: int, picks: int, pool: int) -> np.ndarray:
    """Order: the first ``fixed`` rows as given, then ``picks`` greedy picks among the first
    ``pool`` rows maximising (IoU distance to the nearest picked row) x ``weight``, then the
    remaining rows in their given order."""
    n = len(descs)
    pool = min(pool, n)
    order = list(range(min(fixed, pool)))
    if not order:
        return np.arange(n)
    min_dist = (1.0 - _iou(descs[:pool], descs[order])).min(1)
    min_dist[order] = -1.0
    while len(order) < min(fixed + picks, pool):
        i = int(np.argmax(min_dist * weight[:pool]))
        order.append(i)
        min_dist = np.minimum(min_dist, 1.0 - _iou(descs[:pool], descs[i : i + 1])[:, 0])
        min_dist[i] = -1.0
    rest = np.setdiff1d(np.arange(n), order, assume_unique=True)
    return np.concatenate([np.asarray(order, np.int64), rest])


class _ShapeBank:
    """The ordered, deduplicated shape list, extended font by font on demand."""

    def __init__(self) -> None:
        self.glyphs: list[Glyph] = []
        self.descs = np.zeros((0, DESC * DESC), np.float32)
        self._next_font = 0

    def _add_font(self) -> None:
        font = FONTS[self._next_font]
        self._next_font += 1
        glyphs, descs = _candidates(font)
        if not glyphs:
            return
        order = np.argsort([-g.solidity for g in glyphs], kind="stable")
        if not self.glyphs:  # first font: hand-picked head, then the most solid first
            head = [i for ch in HEAD for i, g in enumerate(glyphs) if g.codepoint == ord(ch)]
            head_set = set(head)
            order = np.asarray(head + [i for i in order if i not in head_set], np.int64)
        keep = order[_dedup(descs[order], self.descs)]
        if not self.glyphs:
            num_head = sum(1 for i in keep[: len(HEAD)] if chr(glyphs[i].codepoint) in HEAD)
            solidity = np.array([glyphs[i].solidity for i in keep])
            keep = keep[_farthest_first(descs[keep], solidity, num_head, NUM_FARTHEST, FARTHEST_POOL)]
        self.glyphs.extend(glyphs[i] for i in keep)
        self.descs = np.concatenate([self.descs, descs[keep]])

    def take(self, n: int) -> list[Glyph]:
        while len(self.glyphs) < n and self._next_font < len(FONTS):
            self._add_font()
        if len(self.glyphs) < n:
            raise ValueError(f"only {len(self.glyphs)} distinct glyph shapes are available, {n} were asked for")
        return self.glyphs[:n]


_BANK = _ShapeBank()


def shapes(n: int) -> list[Glyph]:
    """The first ``n`` shapes of the fixed, deduplicated shape order (cached per process)."""
    return _BANK.take(n)


def available_shapes() -> int:
    """How many distinct shapes all fonts yield (renders every font once; slow the first time)."""
    while _BANK._next_font < len(FONTS):
        _BANK._add_font()
    return len(_BANK.glyphs)


def descriptors(glyphs: Sequence[Glyph]) -> np.ndarray:
    """Binarised DESC x DESC descriptors (len(glyphs), DESC*DESC) of shapes from :func:`shapes`."""
    index = {g: i for i, g in enumerate(_BANK.glyphs)}
    return _BANK.descs[[index[g] for g in glyphs]]


@functools.lru_cache(maxsize=None)
def mask(glyph: Glyph, size: int) -> np.ndarray:
    """The glyph's alpha mask, longer side ``size`` px, centred in a size x size uint8 square."""
    pt = max(_RENDER_PT, int(size * 1.3))
    ink = _ink(glyph.font, glyph.codepoint, pt)
    return _fit(ink, size)
