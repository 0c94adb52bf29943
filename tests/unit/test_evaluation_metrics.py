"""NoC@t, NoF@t, 1-IoU, mIoU curves and IoU with ignore labels on known values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from labeling_pipeline.evaluation import mask_iou, noc, padded_curve, summarize


def test_mask_iou_counts_only_non_ignored_pixels() -> None:
    gt = np.zeros((4, 4), dtype=bool)
    gt[:2] = True  # 8 px
    pred = np.zeros((4, 4), dtype=bool)
    pred[:, :2] = True  # 8 px, 4 shared
    assert mask_iou(gt, pred) == pytest.approx(4 / 12)
    ignore = np.zeros((4, 4), dtype=bool)
    ignore[3] = True  # removes 2 predicted-only pixels from the union
    assert mask_iou(gt, pred, ignore) == pytest.approx(4 / 10)
    assert mask_iou(gt, gt) == 1.0
    empty = np.zeros((4, 4), dtype=bool)
    assert mask_iou(empty, empty) == 1.0
    assert mask_iou(gt, empty) == 0.0


def test_noc_is_the_first_click_reaching_the_target() -> None:
    ious = [0.5, 0.79, 0.8, 0.85, 0.91]
    assert noc(ious, 0.8) == 3  # >= is enough
    assert noc(ious, 0.85) == 4
    assert noc(ious, 0.9) == 5
    assert noc([0.95], 0.9) == 1


def test_noc_without_reaching_the_target_is_the_budget() -> None:
    assert noc([0.1, 0.2, 0.3], 0.9) == 20
    assert noc([0.1, 0.2, 0.3], 0.9, max_clicks=5) == 5
    assert noc([], 0.8) == 20
    # clicks beyond the budget do not count
    assert noc([0.1, 0.2, 0.95], 0.9, max_clicks=2) == 2


def test_padded_curve_carries_the_last_value_forward() -> None:
    np.testing.assert_allclose(padded_curve([0.5, 0.92], 4), [0.5, 0.92, 0.92, 0.92])
    np.testing.assert_allclose(padded_curve([], 3), [0, 0, 0])


def test_summary_of_known_sequences() -> None:
    sequences = [
        [0.85, 0.95],  # NoC80 1, NoC90 2
        [0.3, 0.6, 0.82, 0.9],  # NoC80 3, NoC90 4
        [0.1] * 20,  # fails both: 20, 20
    ]
    s = summarize(sequences)
    assert s.count == 3
    assert s.noc["NoC80"] == pytest.approx((1 + 3 + 20) / 3)
    assert s.noc["NoC90"] == pytest.approx((2 + 4 + 20) / 3)
    assert s.nof == {"NoF80": 1, "NoF90": 1}
    assert s.one_click_iou == pytest.approx((0.85 + 0.3 + 0.1) / 3)
    assert len(s.miou_curve) == 20
    assert s.miou_curve[0] == pytest.approx(s.one_click_iou)
    assert s.miou_curve[1] == pytest.approx((0.95 + 0.6 + 0.1) / 3)
    assert s.miou_curve[19] == pytest.approx((0.95 + 0.9 + 0.1) / 3)
    data = s.to_dict()
    assert data["NoC90"] == s.noc["NoC90"]
    assert data["1-IoU"] == s.one_click_iou


def test_summary_with_custom_thresholds_and_budget() -> None:
    s = summarize([[0.86, 0.9]], thresholds=(0.85, 0.9), max_clicks=5)
    assert s.noc == {"NoC85": 1.0, "NoC90": 2.0}
    assert len(s.miou_curve) == 5


def test_summary_of_nothing_is_nan() -> None:
    s = summarize([])
    assert s.count == 0
    assert math.isnan(s.noc["NoC90"]) and math.isnan(s.one_click_iou)
