"""Metrics against a hand-computed confusion matrix."""

import math

import pytest
import torch

from esseg.metrics import (
    ConfusionMatrix, compute_metrics, confusion_matrix, format_table, frequency_group_metrics, frequency_groups, group_metrics,
)

IGNORE = 255

# 4 classes; class 3 never appears (neither GT nor prediction).
TARGET = torch.tensor([[0, 0, 0, 1], [1, 1, 2, IGNORE]])
PRED = torch.tensor([[0, 0, 1, 1], [1, 2, 0, 3]])  # the 3 is on an ignored pixel
# rows = GT, cols = prediction, counted by hand from the 7 non-ignored pixels
EXPECTED = torch.tensor([
    [2, 1, 0, 0],  # GT 0: predicted 0, 0, 1
    [0, 2, 1, 0],  # GT 1: predicted 1, 1, 2
    [1, 0, 0, 0],  # GT 2: predicted 0
    [0, 0, 0, 0],
])


def test_confusion_matrix_by_hand():
    cm = confusion_matrix(PRED, TARGET, 4, IGNORE)
    assert cm.dtype == torch.int64
    assert torch.equal(cm, EXPECTED)


def test_metrics_by_hand():
    m = compute_metrics(EXPECTED, ["a", "b", "c", "d"])
    # PAcc = (2 + 2 + 0) / 7
    assert m["PAcc"] == pytest.approx(4 / 7)
    # Acc: a 2/3, b 2/3, c 0/1; d has no GT pixels -> excluded
    assert m["Acc"][:3] == pytest.approx([2 / 3, 2 / 3, 0.0]) and m["Acc"][3] is None
    assert m["mAcc"] == pytest.approx((2 / 3 + 2 / 3 + 0) / 3)
    # IoU: a 2/(3+3-2)=1/2, b 2/(3+3-2)=1/2, c 0/(1+1-0)=0; d absent from GT and prediction -> excluded
    assert m["IoU"][:3] == pytest.approx([0.5, 0.5, 0.0]) and m["IoU"][3] is None
    assert m["mIoU"] == pytest.approx(1 / 3)
    assert m["num_valid_classes"] == 3
    # fIoU = 3/7 * 1/2 + 3/7 * 1/2 + 1/7 * 0
    assert m["fIoU"] == pytest.approx(3 / 7)
    assert m["gt_pixels"] == [3, 3, 1, 0] and m["pred_pixels"] == [3, 3, 1, 0]
    assert m["class_names"] == ["a", "b", "c", "d"] and m["num_pixels"] == 7


def test_predicted_only_class_counts_zero_in_miou_but_not_in_macc():
    cm = torch.tensor([[3, 1], [0, 0]])  # class 1 is predicted once but never in the GT
    m = compute_metrics(cm)
    assert m["IoU"] == pytest.approx([0.75, 0.0])
    assert m["mIoU"] == pytest.approx(0.375)
    assert m["Acc"][1] is None and m["mAcc"] == pytest.approx(0.75)
    assert m["class_names"] == ["0", "1"]


def test_perfect_prediction_and_empty_matrix():
    target = torch.randint(0, 5, (2, 8, 8))
    m = compute_metrics(confusion_matrix(target, target, 5, IGNORE))
    assert m["PAcc"] == m["mIoU"] == m["fIoU"] == m["mAcc"] == 1.0
    empty = compute_metrics(torch.zeros(3, 3, dtype=torch.int64))
    assert empty["PAcc"] == empty["mIoU"] == 0.0 and not any(math.isnan(empty[k]) for k in ("mAcc", "fIoU"))


def test_accumulator_equals_one_shot_and_all_reduce_is_noop_single_process():
    acc = ConfusionMatrix(4, IGNORE)
    acc.update(PRED[:1], TARGET[:1])
    acc.update(PRED[1:], TARGET[1:])
    acc.all_reduce()
    assert torch.equal(acc.mat, EXPECTED)
    assert acc.compute()["mIoU"] == pytest.approx(1 / 3)


def test_large_ignore_index_and_out_of_range_labels():
    target = torch.tensor([0, 1, 65535])
    assert confusion_matrix(torch.tensor([0, 1, 1]), target, 300, 65535).sum() == 2
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\)"):
        confusion_matrix(torch.tensor([0, 1]), torch.tensor([0, 7]), 4, IGNORE)
    with pytest.raises(ValueError, match="predictions must be in"):
        confusion_matrix(torch.tensor([0, 9]), torch.tensor([0, 1]), 4, IGNORE)


def test_format_table_in_percent():
    table = format_table(compute_metrics(EXPECTED))
    assert table.splitlines()[0].split() == ["PAcc", "mAcc", "mIoU", "fIoU"]
    assert table.splitlines()[1].split()[0] == "57.14"
    m = compute_metrics(EXPECTED)
    m.update(group_metrics(m, {"ab": [0, 1]}))
    head, row = (line.split() for line in format_table(m).splitlines())
    assert head == ["PAcc", "mAcc", "mIoU", "fIoU", "ab_mIoU", "ab_Acc"] and row[4:] == ["50.00", "66.67"]


def test_group_metrics_by_hand():
    m = compute_metrics(EXPECTED, ["a", "b", "c", "d"])
    g = group_metrics(m, {"ab": [0, 1], "cd": [2, 3], "d": [3]})
    # ab: IoU 1/2 and 1/2; (2 + 2) of 6 GT pixels right
    assert g["ab_mIoU"] == pytest.approx(0.5) and g["ab_Acc"] == pytest.approx(4 / 6)
    # cd: c has IoU 0, d none (excluded); 0 of 1 GT pixel right
    assert g["cd_mIoU"] == 0.0 and g["cd_Acc"] == 0.0
    # a group with neither IoU nor pixels reports 0, not NaN
    assert g["d_mIoU"] == 0.0 and g["d_Acc"] == 0.0
    assert set(g) == {"ab_mIoU", "ab_Acc", "cd_mIoU", "cd_Acc", "d_mIoU", "d_Acc"}


def test_frequency_groups_lvis_limits_by_hand():
    images = [0, 1, 10, 11, 100, 101, 5000]
    assert frequency_groups(images) == ["unseen", "rare", "rare", "common", "common", "frequent", "frequent"]
    assert frequency_groups(images, (1, 11)) == ["unseen", "rare", "common", "common", "frequent", "frequent", "frequent"]
    for bad in [(10, 10), (0, 5), (100, 10)]:
        with pytest.raises(ValueError, match="thresholds must be two integers 1 <= t1 < t2"):
            frequency_groups(images, bad)


def test_frequency_group_metrics_by_hand():
    m = compute_metrics(EXPECTED, ["a", "b", "c", "d"])  # IoU 1/2, 1/2, 0, None
    g = frequency_group_metrics(m, [5, 50, 500, 0])  # a rare, b common, c frequent, d unseen
    assert g["rare_mIoU"] == pytest.approx(0.5) and g["common_mIoU"] == pytest.approx(0.5)
    assert g["frequent_mIoU"] == 0.0
    assert g["unseen_mIoU"] is None  # d has no IoU (absent from GT and prediction): undefined, not 0
    assert [g[f"{n}_classes"] for n in ("rare", "common", "frequent", "unseen")] == [1, 1, 1, 1]
    assert g["frequency_group"] == ["rare", "common", "frequent", "unseen"] and g["train_images"] == [5, 50, 500, 0]
    g = frequency_group_metrics(m, [1, 2, 200, 2], thresholds=(2, 100))  # a, b, d rare; c frequent
    assert g["rare_mIoU"] == pytest.approx(0.5) and g["rare_classes"] == 3 and g["common_mIoU"] is None
    assert g["frequency_thresholds"] == [2, 100]
    with pytest.raises(ValueError, match="got 3 training image counts for 4 classes"):
        frequency_group_metrics(m, [1, 2, 3])


def test_format_table_shows_defined_frequency_groups_only():
    m = compute_metrics(EXPECTED)
    m.update(frequency_group_metrics(m, [5, 50, 500, 0]))
    head, row = (line.split() for line in format_table(m).splitlines())
    assert head[4:] == ["rare_mIoU", "common_mIoU", "frequent_mIoU"] and row[4:] == ["50.00", "50.00", "0.00"]


@pytest.mark.parametrize("num_classes", [3, 7])
def test_count_vectors_equal_the_full_matrix(num_classes):
    """ConfusionMatrix(full=False) keeps diag/row/column sums only; metrics equal the full matrix's."""
    g = torch.Generator().manual_seed(num_classes)
    full, vectors = ConfusionMatrix(num_classes, 255, full=True), ConfusionMatrix(num_classes, 255, full=False)
    for _ in range(3):
        target = torch.randint(0, num_classes, (4, 5, 6), generator=g)
        target[0, 0] = 255
        pred = torch.where(torch.rand(target.shape, generator=g) < 0.6, target, torch.randint(0, num_classes, target.shape, generator=g))
        pred[0, 0] = 0  # ignored pixels' predictions never count
        full.update(pred, target)
        vectors.update(pred, target)
    assert vectors.mat is None
    assert torch.equal(vectors.counts, torch.stack([full.mat.diag(), full.mat.sum(1), full.mat.sum(0)]))
    assert vectors.compute() == full.compute()


def test_a_million_classes_are_counted_without_a_matrix():
    cm = ConfusionMatrix(1_000_000, ignore_index=2**31 - 1)
    assert cm.mat is None and cm.counts.numel() == 3_000_000
    target = torch.tensor([[999_999, 5, 2**31 - 1]])
    cm.update(torch.tensor([[999_999, 7, 3]]), target)
    m = cm.compute()
    assert m["IoU"][999_999] == 1.0 and m["IoU"][5] == 0.0 and m["IoU"][7] == 0.0 and m["IoU"][3] is None
    assert m["num_pixels"] == 2 and m["PAcc"] == 0.5 and m["num_valid_classes"] == 3
    with pytest.raises(ValueError, match="labels must be in"):
        cm.update(torch.tensor([1]), torch.tensor([1_000_000]))
