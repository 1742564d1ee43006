"""Segmentation metrics from a confusion matrix: PAcc, mAcc, mIoU, fIoU and per-class IoU.

The confusion matrix ``M`` is ``(C, C)`` int64 with rows = ground truth and columns =
prediction: ``M[t, p]`` counts the pixels of class ``t`` predicted as ``p``. Pixels whose
target is ``ignore_index`` are left out before counting. Writing ``n_c = sum_p M[c, p]``
(ground-truth pixels of class c), ``s_c = sum_t M[t, c]`` (pixels predicted as c) and
``N = sum_c n_c``:

- pixel accuracy          ``PAcc = sum_c M[c, c] / N``
- class accuracy          ``Acc_c = M[c, c] / n_c``                    (defined when n_c > 0)
- mean class accuracy     ``mAcc = mean of Acc_c over classes with n_c > 0``
- intersection over union ``IoU_c = M[c, c] / (n_c + s_c - M[c, c])``  (defined when n_c + s_c > 0)
- mean IoU                ``mIoU = mean of IoU_c over classes with n_c + s_c > 0``
- frequency-weighted IoU  ``fIoU = sum_c (n_c / N) * IoU_c``

A class absent from both the ground truth and the predictions (``n_c + s_c = 0``) has no IoU
and is excluded from the mIoU mean (it would otherwise count as 0 or 1 depending on taste and
make the number depend on how many unused classes the label space has). A class that is only
predicted (``n_c = 0 < s_c``) has IoU 0 and does count in mIoU; it has no accuracy and is left
out of mAcc. All values are fractions in [0, 1]; the CLI prints percentages.

Long tail: :func:`frequency_group_metrics` averages ``IoU_c`` within the groups of
:func:`frequency_groups` (rare / common / frequent by the number of training images containing
the class, LVIS limits 10 and 100; classes with no training image form a separate ``unseen``
group).

Only ``diag(M)``, the row sums and the column sums are needed. :class:`ConfusionMatrix` keeps the
full matrix up to 2048 classes (handy to inspect; 1284 classes: 13 MB) and only those three
vectors above (:func:`class_counts`; a million classes would need 8 TB as a matrix).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist


def _valid_pairs(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int):
    """``(target, prediction)`` of the pixels whose target is not ignored, both int64 and range-checked."""
    if pred.shape != target.shape:
        raise ValueError(f"pred shape {tuple(pred.shape)} does not match target shape {tuple(target.shape)}")
    keep = target != ignore_index
    t = target[keep].long()
    p = pred[keep].long().to(t.device)
    if t.numel():
        bad_t = (t < 0) | (t >= num_classes)
        if bad_t.any():
            raise ValueError(
                f"labels must be in [0, {num_classes}) or equal ignore_index={ignore_index}; "
                f"found {int(t[bad_t][0])}"
            )
        bad_p = (p < 0) | (p >= num_classes)
        if bad_p.any():
            raise ValueError(f"predictions must be in [0, {num_classes}); found {int(p[bad_p][0])}")
    return t, p


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """Count ``(target, prediction)`` pairs with one ``bincount``.

    Args:
        pred: predicted class ids, any shape, values in ``[0, num_classes)``.
        target: ground-truth ids, same shape, values in ``[0, num_classes)`` or ``ignore_index``.
        num_classes: C.
        ignore_index: target value whose pixels are not counted.

    Returns:
        ``(C, C)`` int64 tensor on ``target``'s device, rows = ground truth, columns = prediction.
    """
    t, p = _valid_pairs(pred, target, num_classes, ignore_index)
    counts = torch.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def class_counts(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore_index: int = 255) -> torch.Tensor:
    """``diag(M)``, ``M.sum(1)`` and ``M.sum(0)`` of :func:`confusion_matrix` without the matrix.

    Returns:
        ``(3, C)`` int64: ``tp[c] = M[c, c]``, ``gt[c] = n_c`` (ground-truth pixels of c) and
        ``pred[c] = s_c`` (pixels predicted as c), counted over pixels whose target is not
        ``ignore_index``; the same range checks as :func:`confusion_matrix`.
    """
    t, p = _valid_pairs(pred, target, num_classes, ignore_index)
    return torch.stack([
        torch.bincount(t[t == p], minlength=num_classes),
        torch.bincount(t, minlength=num_classes),
        torch.bincount(p, minlength=num_classes),
    ])


FULL_MATRIX_MAX_CLASSES = 2048  # above, ConfusionMatrix keeps only diag(M) and its row/column sums


class ConfusionMatrix:
    """Accumulates a confusion matrix over batches (and, with :meth:`all_reduce`, over ranks).

    Up to :data:`FULL_MATRIX_MAX_CLASSES` classes the full ``(C, C)`` matrix ``mat`` is kept
    (2048 classes: 32 MiB). Above that (or with ``full=False``) only what the metrics need is
    kept: ``tp = diag(M)``, ``gt = M.sum(1)`` and ``pred = M.sum(0)``, three ``(C,)`` vectors, so
    evaluation at a million classes needs 24 MB instead of 8 TB; ``mat`` is then ``None``. Both
    give identical metrics.

    Example::

        cm = ConfusionMatrix(num_classes, ignore_index)
        for images, labels in loader:
            cm.update(model.predict(images), labels)
        cm.all_reduce()
        metrics = cm.compute(class_names)
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, device: torch.device | str = "cpu",
                 full: bool | None = None):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.full = num_classes <= FULL_MATRIX_MAX_CLASSES if full is None else full
        if self.full:
            self.mat = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        else:
            self.mat = None
            self.counts = torch.zeros(3, num_classes, dtype=torch.int64, device=device)  # tp, gt, pred

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add the counts of one batch (``pred`` and ``target`` of equal shape)."""
        if self.full:
            self.mat += confusion_matrix(pred, target.to(self.mat.device), self.num_classes, self.ignore_index)
        else:
            self.counts += class_counts(pred, target.to(self.counts.device), self.num_classes, self.ignore_index)

    def all_reduce(self) -> None:
        """Sum the counts over all ranks of the default process group (no-op when not distributed)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(self.mat if self.full else self.counts)

    def compute(self, class_names: Sequence[str] | None = None) -> dict:
        """:func:`compute_metrics` on the accumulated counts."""
        if self.full:
            return compute_metrics(self.mat, class_names)
        tp, gt, pred = self.counts
        return metrics_from_counts(tp, gt, pred, class_names)


def _nan_to_none(values: torch.Tensor) -> list:
    return [None if v != v else float(v) for v in values.tolist()]


def compute_metrics(cm: torch.Tensor, class_names: Sequence[str] | None = None) -> dict:
    """PAcc, mAcc, mIoU, fIoU and per-class IoU/accuracy from a ``(C, C)`` confusion matrix.

    See the module docstring for the equations and for which classes enter each mean.

    Returns:
        A JSON-serialisable dict: ``PAcc``, ``mAcc``, ``mIoU``, ``fIoU`` (floats in [0, 1]),
        ``num_pixels`` and ``num_valid_classes`` (classes with an IoU), and the per-class lists
        ``class_names``, ``IoU``, ``Acc``, ``gt_pixels``, ``pred_pixels`` (``None`` where a
        value is undefined).
    """
    cm = cm.detach().to("cpu", torch.float64)
    return metrics_from_counts(cm.diag(), cm.sum(1), cm.sum(0), class_names)


def metrics_from_counts(tp: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor,
                        class_names: Sequence[str] | None = None) -> dict:
    """:func:`compute_metrics` from ``diag(M)``, ``M.sum(1)`` and ``M.sum(0)`` (each ``(C,)``):
    the metrics need nothing else of the matrix (see :func:`class_counts`)."""
    tp, gt, pred = (v.detach().to("cpu", torch.float64) for v in (tp, gt, pred))
    num_classes = tp.shape[0]
    names = list(class_names) if class_names is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"got {len(names)} class names for a {num_classes}-class confusion matrix")
    union = gt + pred - tp
    total = gt.sum()
    nan = torch.tensor(float("nan"), dtype=torch.float64)
    acc = torch.where(gt > 0, tp / gt.clamp(min=1), nan)
    iou = torch.where(union > 0, tp / union.clamp(min=1), nan)
    has_iou = union > 0
    safe_total = max(float(total), 1.0)
    return {
        "PAcc": float(tp.sum() / safe_total),
        "mAcc": float(acc[gt > 0].mean()) if (gt > 0).any() else 0.0,
        "mIoU": float(iou[has_iou].mean()) if has_iou.any() else 0.0,
        "fIoU": float((gt[has_iou] / safe_total * iou[has_iou]).sum()),
        "num_pixels": int(total),
        "num_valid_classes": int(has_iou.sum()),
        "class_names": names,
        "IoU": _nan_to_none(iou),
        "Acc": _nan_to_none(acc),
        "gt_pixels": [int(v) for v in gt.tolist()],
        "pred_pixels": [int(v) for v in pred.tolist()],
    }


def group_metrics(metrics: dict, groups: dict[str, Sequence[int]]) -> dict[str, float]:
    """mIoU and pixel accuracy over subsets of the classes (e.g. glyph scenes' things and stuff).

    For a group ``G`` (class indices), with the notation of the module docstring:
    ``<G>_mIoU = mean of IoU_c over c in G with n_c + s_c > 0`` (0.0 when none) and
    ``<G>_Acc = sum_{c in G} M[c, c] / sum_{c in G} n_c`` (the fraction of the group's
    ground-truth pixels labelled right; 0.0 when the group has no pixels).

    Args:
        metrics: the dict of :func:`compute_metrics` (needs ``IoU``, ``Acc``, ``gt_pixels``).
        groups: ``{name: class indices}``.

    Returns:
        ``{"<name>_mIoU": float, "<name>_Acc": float}`` for every group.
    """
    out: dict[str, float] = {}
    for name, indices in groups.items():
        ious = [metrics["IoU"][c] for c in indices if metrics["IoU"][c] is not None]
        gt = sum(metrics["gt_pixels"][c] for c in indices)
        hit = sum((metrics["Acc"][c] or 0.0) * metrics["gt_pixels"][c] for c in indices)
        out[f"{name}_mIoU"] = float(sum(ious) / len(ious)) if ious else 0.0
        out[f"{name}_Acc"] = float(hit / gt) if gt else 0.0
    return out


FREQUENCY_THRESHOLDS = (10, 100)  # LVIS: rare 1-10, common 11-100, frequent > 100 training images
FREQUENCY_GROUPS = ("rare", "common", "frequent", "unseen")


def frequency_groups(train_images: Sequence[int], thresholds: Sequence[int] = FREQUENCY_THRESHOLDS) -> list[str]:
    """The frequency group of every class from ``n_c``, the number of training images containing it.

    With thresholds ``(t1, t2)`` (LVIS: ``(10, 100)``): ``rare`` if ``1 <= n_c <= t1``,
    ``common`` if ``t1 < n_c <= t2``, ``frequent`` if ``n_c > t2``, and ``unseen`` if
    ``n_c = 0`` (a class never seen in training is kept out of ``rare``).
    """
    t1, t2 = (int(t) for t in thresholds)
    if not 1 <= t1 < t2:
        raise ValueError(f"frequency thresholds must be two integers 1 <= t1 < t2, got {tuple(thresholds)}")
    names = []
    for n in train_images:
        if n < 0:
            raise ValueError(f"training image counts must be >= 0, got {n}")
        names.append("unseen" if n == 0 else "rare" if n <= t1 else "common" if n <= t2 else "frequent")
    return names


def frequency_group_metrics(metrics: dict, train_images: Sequence[int], thresholds: Sequence[int] = FREQUENCY_THRESHOLDS) -> dict:
    """mIoU over the frequency groups of :func:`frequency_groups` (long-tail evaluation, as LVIS).

    For a group ``G``: ``<G>_mIoU = mean of IoU_c over c in G with n_c + s_c > 0`` (the classes
    that enter the overall mIoU), ``None`` when no class of ``G`` has an IoU (e.g. no rare
    classes at all), so an empty group never reads as 0.

    Args:
        metrics: the dict of :func:`compute_metrics` (needs ``IoU``).
        train_images: ``(C,)`` number of training images containing each class.
        thresholds: ``(t1, t2)`` group limits in images.

    Returns:
        ``rare_mIoU``, ``common_mIoU``, ``frequent_mIoU``, ``unseen_mIoU`` (float or None),
        ``<G>_classes`` (classes of the label space in each group), ``frequency_thresholds``
        and the per-class lists ``train_images`` and ``frequency_group``.
    """
    if len(train_images) != len(metrics["IoU"]):
        raise ValueError(f"got {len(train_images)} training image counts for {len(metrics['IoU'])} classes")
    groups = frequency_groups(train_images, thresholds)
    out: dict = {}
    for name in FREQUENCY_GROUPS:
        ious = [iou for iou, g in zip(metrics["IoU"], groups) if g == name and iou is not None]
        out[f"{name}_mIoU"] = float(sum(ious) / len(ious)) if ious else None
    for name in FREQUENCY_GROUPS:
        out[f"{name}_classes"] = groups.count(name)
    out["frequency_thresholds"] = [int(t) for t in thresholds]
    out["train_images"] = [int(n) for n in train_images]
    out["frequency_group"] = groups
    return out


SUMMARY_KEYS = ("PAcc", "mAcc", "mIoU", "fIoU")


def group_keys(metrics: dict) -> list[str]:
    """The :func:`group_metrics` keys present in ``metrics`` (``thing_mIoU``, ``thing_Acc``, ...), in order."""
    return [k for k, v in metrics.items() if k.endswith(("_mIoU", "_Acc")) and isinstance(v, float)]


def format_table(metrics: dict) -> str:
    """A two-line table of the summary metrics in percent, e.g. for the terminal.

    Group metrics (``<group>_mIoU``, ``<group>_Acc`` from :func:`group_metrics`) follow as
    extra columns when present.
    """
    keys = list(SUMMARY_KEYS) + group_keys(metrics)
    width = max(7, *(len(k) for k in keys))
    head = "  ".join(f"{k:>{width}}" for k in keys)
    row = "  ".join(f"{100 * metrics[k]:{width}.2f}" for k in keys)
    return f"{head}\n{row}"


__all__ = [
    "FULL_MATRIX_MAX_CLASSES", "ConfusionMatrix", "FREQUENCY_GROUPS", "FREQUENCY_THRESHOLDS", "SUMMARY_KEYS", "class_counts",
    "compute_metrics", "confusion_matrix", "format_table", "metrics_from_counts", "frequency_group_metrics", "frequency_groups", "group_keys", "group_metrics",
]
