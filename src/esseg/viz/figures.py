"""The analysis figures as PNGs: data in (arrays, class names, a palette), one file out.

Each ``plot_*`` function draws one figure with matplotlib's object API (no pyplot, no global
state, no display needed), writes it atomically and returns a dict with at least ``path`` and
``size`` (the PNG's ``(width, height)`` in pixels, ``figsize * DPI``) plus what a caller may
want to check (the dendrogram's leaf labels, the note written on the norms plot, ...).
Getting the data from a checkpoint is :mod:`esseg.viz.analysis`'s job.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np

from esseg._io import atomic_write_bytes

DPI = 100
MAX_NAME = 32  # characters of a class name shown on a plot
NAMES_UP_TO = 40  # classes up to which every class name is written on a frequency axis
NORMS_FIGSIZE = (12.0, 5.0)
PROJECTION_FIGSIZE = (13.0, 6.0)
PANEL_INCHES = 2.6  # one image of an image grid (panels, rgb)


def _figure(figsize: tuple[float, float]):
    from matplotlib.figure import Figure  # noqa: PLC0415

    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def save_figure(fig, path: str | Path) -> dict:
    """Write ``fig`` as a PNG at ``DPI`` atomically (temporary file, then ``os.replace``).

    Returns:
        ``{"path": Path, "size": (width, height)}`` in pixels.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    path = atomic_write_bytes(path, buf.getvalue())
    w, h = fig.get_size_inches()
    return {"path": path, "size": (int(round(w * DPI)), int(round(h * DPI)))}


def short(name: str, limit: int = MAX_NAME) -> str:
    """``name`` cut to ``limit`` characters with an ellipsis."""
    name = str(name)
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def _rgb(palette: np.ndarray, c: int) -> tuple[float, float, float]:
    return tuple(float(v) / 255 for v in palette[c])


def _class_axis(ax, names: Sequence[str], order: Sequence[int], label: str) -> None:
    """x axis of classes in ``order``: their names when they fit, else the rank."""
    if len(order) <= NAMES_UP_TO:
        ax.set_xticks(range(len(order)), [short(names[c]) for c in order], rotation=90, fontsize=7)
        ax.set_xlabel(label)
    else:
        ax.set_xlabel(f"{label} (rank; {len(order)} classes)")
    ax.set_xlim(-0.6, len(order) - 0.4)


# ------------------------------------------------------------------------------- Fig. 9


def plot_norms(counts: np.ndarray, norms: np.ndarray, class_names: Sequence[str], path: str | Path,
               normalized: bool = False, num_samples: int | None = None, title: str = "") -> dict:
    """Class pixel frequency and class-embedding length, classes sorted by frequency (paper Fig. 9).

    Left: each class's share of the labelled pixels (log scale). Right: the length of its raw
    class embedding (``class_table`` row norm) in the same order, with Spearman's rank
    correlation between the two. Classes never seen in the counted samples are left out.
    With ``normalized=True`` a note on the plot says the model uses unit-length embeddings,
    so the raw lengths play no part in its predictions.

    Args:
        counts: (C,) ground-truth pixels per class. norms: (C,) class-embedding lengths.
        num_samples: how many dataset samples were counted (for the axis label).

    Returns:
        ``path``, ``size``, ``spearman`` (float or None), ``note`` (str or None), ``order``
        (the plotted class ids, most frequent first).
    """
    from scipy.stats import spearmanr  # noqa: PLC0415

    counts, norms = np.asarray(counts, dtype=np.float64), np.asarray(norms, dtype=np.float64)
    order = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    share = counts[order] / max(counts.sum(), 1.0)
    rho = None
    if len(order) >= 3 and np.ptp(norms[order]) > 0:
        rho = float(spearmanr(counts[order], norms[order]).statistic)
    fig = _figure(NORMS_FIGSIZE)
    ax_f, ax_n = fig.subplots(1, 2)
    x = np.arange(len(order))
    ax_f.bar(x, share, width=1.0 if len(order) > NAMES_UP_TO else 0.8, color="tab:blue")
    ax_f.set_yscale("log")
    ax_f.set_ylabel("share of labelled pixels")
    ax_f.set_title("class frequency" + (f" ({num_samples} samples)" if num_samples else ""))
    _class_axis(ax_f, class_names, order, "class, most frequent first")
    ax_n.bar(x, norms[order], width=1.0 if len(order) > NAMES_UP_TO else 0.8, color="tab:orange")
    ax_n.set_ylabel("embedding length ||class_table[c]||")
    ax_n.set_title("class-embedding length" + (f" (Spearman rho = {rho:+.2f})" if rho is not None else ""))
    _class_axis(ax_n, class_names, order, "class, most frequent first")
    ax_n.set_ylim(0, 1.35 * max(float(norms[order].max()) if order else 1.0, 1e-6))
    note = None
    if normalized:
        note = ("NOTE: this model normalises its embeddings. It classifies with unit-length class\n"
                "embeddings, so these raw lengths do not affect its predictions. Fig. 9 is\n"
                "meaningful for a model trained without normalisation (normalize=False).")
        ax_n.text(0.5, 0.98, note, transform=ax_n.transAxes, ha="center", va="top", fontsize=8,
                  bbox={"boxstyle": "round", "facecolor": "lightyellow", "edgecolor": "tab:red"})
    missing = len(counts) - len(order)
    if missing:
        ax_f.text(0.99, 0.97, f"{missing} classes absent from the samples are not shown", transform=ax_f.transAxes,
                  ha="right", va="top", fontsize=8)
    fig.suptitle(title or "class frequency vs class-embedding length (Fig. 9)")
    return {**save_figure(fig, path), "spearman": rho, "note": note, "order": order}


# ------------------------------------------------------------------------------ Fig. 10


def plot_projection(image: np.ndarray, gt_color: np.ndarray, pixel_xy: np.ndarray, pixel_labels: np.ndarray,
                    class_xy: np.ndarray, class_ids: Sequence[int], class_names: Sequence[str], palette: np.ndarray,
                    path: str | Path, method: str = "pca", title: str = "") -> dict:
    """Pixel embeddings (dots) and class embeddings (stars) of one image in 2-D (paper Fig. 10).

    Left: the image with its ground truth blended over it. Right: each sampled pixel's projected
    embedding coloured by its ground-truth class, and the class embeddings of the classes in
    the image as large black-edged stars in the same colours. Good embeddings form one tight
    cluster per class, around that class's star.

    Args:
        image, gt_color: (H, W, 3) uint8. pixel_xy: (N, 2). pixel_labels: (N,) class ids.
        class_xy: (K, 2) for ``class_ids`` (K,). palette: (C, 3) uint8.

    Returns:
        ``path`` and ``size``.
    """
    fig = _figure(PROJECTION_FIGSIZE)
    ax_i, ax_p = fig.subplots(1, 2, width_ratios=[1, 1.5])
    ax_i.imshow(((image.astype(np.float32) + gt_color.astype(np.float32)) / 2).astype(np.uint8), interpolation="nearest")
    ax_i.set_title("image + ground truth")
    ax_i.set_axis_off()
    for k, c in enumerate(class_ids):
        colour = _rgb(palette, c)
        pts = pixel_xy[pixel_labels == c]
        ax_p.scatter(pts[:, 0], pts[:, 1], s=12 if len(pixel_xy) <= 500 else 6, color=colour, alpha=0.6, linewidths=0)
        ax_p.scatter(class_xy[k, 0], class_xy[k, 1], s=260, marker="*", color=colour, edgecolors="black",
                     linewidths=1.0, label=f"{short(class_names[c])} ({int((pixel_labels == c).sum())} px)", zorder=3)
    axis = "PC" if method == "pca" else "t-SNE "
    ax_p.set_xlabel(f"{axis}1")
    ax_p.set_ylabel(f"{axis}2")
    name = {"pca": "PCA", "tsne": "t-SNE"}.get(method, method)
    ax_p.set_title(f"pixel embeddings (dots, {len(pixel_xy)} sampled) and class embeddings (stars), {name}")
    if len(class_ids) <= 30:
        ax_p.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7, title="ground-truth class",
                    title_fontsize=8, markerscale=0.6, frameon=False)
    fig.suptitle(title or "pixel and class embeddings in 2-D (Fig. 10)")
    return save_figure(fig, path)


# ------------------------------------------------------------------------ Fig. 6, 7, 11


def plot_image_grid(rows: list[list[np.ndarray]], column_titles: Sequence[str], path: str | Path,
                    row_titles: Sequence[str] | None = None, captions: list[list[str]] | None = None,
                    title: str = "") -> dict:
    """A grid of (H, W, 3) uint8 images with a title per column, a label per row and optional captions.

    Used for the prediction panels (image | ground truth | prediction(s), Fig. 6/7) and the
    RGB embedding figure (image | embeddings as RGB | prediction, Fig. 11). Every cell is
    ``PANEL_INCHES`` square; pixels are shown unsmoothed.

    Returns:
        ``path`` and ``size``.
    """
    nrows, ncols = len(rows), len(column_titles)
    fig = _figure((PANEL_INCHES * ncols, PANEL_INCHES * nrows + 0.6))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            ax = axes[r][c]
            ax.imshow(im, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column_titles[c], fontsize=10)
            if c == 0 and row_titles is not None:
                ax.set_ylabel(row_titles[r], fontsize=8)
            if captions is not None and captions[r][c]:
                ax.set_xlabel(captions[r][c], fontsize=8)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- Fig. 12/13


def plot_dendrogram(class_embeddings: np.ndarray, names: Sequence[str], path: str | Path, method: str = "average",
                    title: str = "") -> dict:
    """Agglomerative clustering of class embeddings drawn as a dendrogram, leaves named (Fig. 12/13).

    ``scipy.cluster.hierarchy.linkage`` with Euclidean distance (for unit embeddings, a monotone
    function of the cosine similarity) and the given ``method``; leaves run top to bottom.
    Classes that the model treats alike join low in the tree.

    Args:
        class_embeddings: (K, d) for the K classes to show. names: their K names.
        method: linkage method (``average``, ``complete``, ``single``, ``ward``, ...).

    Returns:
        ``path``, ``size``, ``leaves`` (the leaf labels top to bottom, as drawn) and
        ``linkage`` (the (K-1, 4) linkage matrix).
    """
    from scipy.cluster.hierarchy import dendrogram, linkage  # noqa: PLC0415

    x = np.asarray(class_embeddings, dtype=np.float64)
    labels = [short(n, 40) for n in names]
    z = linkage(x, method=method, metric="euclidean")
    k = len(labels)
    fig = _figure((9.0, 1.5 + 0.22 * k))
    ax = fig.subplots()
    out = dendrogram(z, labels=labels, orientation="left", ax=ax, leaf_font_size=8, color_threshold=0.7 * z[:, 2].max())
    ax.set_xlabel(f"distance between class embeddings ({method} linkage)")
    ax.set_title(title or f"agglomerative clustering of {k} class embeddings (Fig. 12/13)", fontsize=10)
    # scipy draws leaves bottom to top with orientation="left"; report them top to bottom as seen
    return {**save_figure(fig, path), "leaves": list(out["ivl"])[::-1], "linkage": z}


# ------------------------------------------------------------------------------- Fig. 5


def plot_class_iou(counts: np.ndarray, runs: list[tuple[str, Sequence[float | None]]], class_names: Sequence[str],
                   path: str | Path, title: str = "") -> dict:
    """Per-class IoU of one or two models, classes sorted by pixel frequency (paper Fig. 5).

    Bars (up to ``NAMES_UP_TO`` classes, named) or dots with a running mean (more classes) of
    each run's IoU in percent; the grey line on the right axis is each class's share of the
    ground-truth pixels. Classes with no IoU (absent from ground truth and predictions) are
    left out.

    Args:
        counts: (C,) ground-truth pixels per class (the evaluation's ``gt_pixels``).
        runs: ``(label, per-class IoU list with None for undefined)`` per model.

    Returns:
        ``path``, ``size`` and ``order`` (the plotted class ids, most frequent first).
    """
    counts = np.asarray(counts, dtype=np.float64)
    ious = [np.array([np.nan if v is None else 100 * v for v in iou], dtype=np.float64) for _, iou in runs]
    defined = np.any([~np.isnan(v) for v in ious], axis=0)
    order = [int(c) for c in np.argsort(-counts, kind="stable") if defined[c]]
    n = len(order)
    fig = _figure((min(24.0, max(9.0, 0.28 * n + 3)), 5.5))
    ax = fig.subplots()
    x = np.arange(n)
    colours = ["tab:blue", "tab:orange"]
    few = n <= NAMES_UP_TO
    for j, ((label, _), iou) in enumerate(zip(runs, ious)):
        y = iou[order]
        miou = np.nanmean(iou) if np.any(~np.isnan(iou)) else float("nan")
        name = f"{label} (mIoU {miou:.1f})"
        if few:
            width = 0.8 / len(runs)
            ax.bar(x + (j - (len(runs) - 1) / 2) * width, np.nan_to_num(y), width=width, color=colours[j], label=name)
        else:
            ax.scatter(x, y, s=14, color=colours[j], alpha=0.6, linewidths=0)
            window = max(5, n // 25)
            kernel = np.ones(window)
            valid = ~np.isnan(y)
            smooth = np.convolve(np.where(valid, y, 0), kernel, "same") / np.maximum(np.convolve(valid, kernel, "same"), 1)
            ax.plot(x, smooth, color=colours[j], label=f"{name}, running mean of {window}")
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    _class_axis(ax, class_names, order, "class, most frequent first")
    freq = ax.twinx()
    freq.plot(x, counts[order] / max(counts.sum(), 1.0), color="grey", lw=1.2, marker="." if few else None,
              label="share of pixels")
    freq.set_yscale("log")
    freq.set_ylabel("share of ground-truth pixels (grey)")
    ax.set_zorder(freq.get_zorder() + 1)
    ax.patch.set_visible(False)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "per-class IoU, classes sorted by frequency (Fig. 5)")
    return {**save_figure(fig, path), "order": order}


__all__ = ["DPI", "plot_class_iou", "plot_dendrogram", "plot_image_grid", "plot_norms", "plot_projection",
           "save_figure", "short"]
