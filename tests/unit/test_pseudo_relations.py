"""Instance/part relations, exact mask IoU, protected NMS and the granularity formula."""

from __future__ import annotations

import numpy as np
import pytest

from labeling_pipeline.pseudo_labels.granularity import granularity_from_areas
from labeling_pipeline.pseudo_labels.mask_ops import (
    iou_matrix,
    pairwise_intersections,
    protected_nms,
)
from labeling_pipeline.pseudo_labels.relations import find_hierarchies


def box(y0: int, y1: int, x0: int, x1: int, size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_instances_parts_and_dropped_masks() -> None:
    whole = box(10, 50, 10, 50)  # 16 % of the image
    part = box(12, 30, 12, 30)  # inside the whole
    tiny_alone = box(80, 85, 80, 85)  # 0.25 %: neither instance nor part
    other = box(55, 95, 55, 75)  # 8 %: a second instance
    straddling = box(40, 65, 40, 65)  # 6 %, 16 % inside the whole: its own instance
    result = find_hierarchies([whole, part, tiny_alone, other, straddling], [0.9] * 5)
    assert [(h.instance, h.parts) for h in result] == [(0, (1,)), (3, ()), (4, ())]


def test_near_duplicates_larger_is_the_instance_and_the_smaller_its_part() -> None:
    big, slightly_smaller = box(10, 60, 10, 60), box(11, 60, 10, 60)
    result = find_hierarchies([slightly_smaller, big], [0.9, 0.5])
    assert [(h.instance, h.parts) for h in result] == [(1, (0,))]


def test_equal_masks_tie_break_by_score() -> None:
    a = box(10, 60, 10, 60)
    result = find_hierarchies([a, a.copy()], [0.4, 0.8])
    assert [(h.instance, h.parts) for h in result] == [(1, (0,))]


def test_part_shared_by_two_overlapping_instances() -> None:
    a, b = box(0, 60, 0, 60), box(0, 60, 20, 80)  # each 36 %, 66 % overlap: both instances
    part = box(10, 30, 25, 55)  # inside both
    result = find_hierarchies([a, b, part], [1.0, 1.0, 1.0])
    assert sorted((h.instance, h.parts) for h in result) == [(0, (2,)), (1, (2,))]


def test_area_threshold_is_configurable() -> None:
    small = box(0, 10, 0, 10)  # 1 %
    assert find_hierarchies([small], [1.0]) == []
    assert len(find_hierarchies([small], [1.0], min_instance_area_fraction=0.005)) == 1


def test_pairwise_statistics_are_exact() -> None:
    rng = np.random.default_rng(0)
    masks = rng.random((5, 30, 40)) > 0.6
    masks[3] = False
    inter = pairwise_intersections(masks)
    for i in range(5):
        for j in range(5):
            assert inter[i, j] == (masks[i] & masks[j]).sum()
    iou = iou_matrix(masks)
    assert iou[0, 1] == pytest.approx((masks[0] & masks[1]).sum() / (masks[0] | masks[1]).sum())
    assert iou[3, 3] == 0.0


def test_protected_nms_keeps_instance_and_drops_duplicates_in_order() -> None:
    instance = box(0, 50, 0, 50)
    near_instance = box(0, 50, 0, 46)  # IoU 0.92 with the instance: dropped
    part = box(0, 20, 0, 20)
    part_duplicate = box(0, 20, 0, 19)  # IoU 0.95 with part: dropped (later in order)
    other = box(30, 50, 30, 50)
    empty = np.zeros_like(instance)
    kept = protected_nms(instance, [near_instance, part, part_duplicate, other, empty])
    assert kept == [1, 3]
    assert protected_nms(instance, []) == []


def test_granularity_formula() -> None:
    g = granularity_from_areas([900, 100, 400])
    assert g.tolist() == pytest.approx([1.0, 0.1, 0.55])
    assert g[0] == 1.0 and g[1] == 0.1  # exact end points
    assert granularity_from_areas([50, 50]).tolist() == [1.0, 1.0]
    assert granularity_from_areas([7]).tolist() == [1.0]
    with pytest.raises(ValueError, match="non-empty"):
        granularity_from_areas([])
    with pytest.raises(ValueError, match="non-negative"):
        granularity_from_areas([1, -2])


def test_human_mask_wins_over_a_larger_near_duplicate() -> None:
    sloppy_ncut, human = box(8, 62, 8, 62), box(10, 60, 10, 60)  # IoU 0.86
    result = find_hierarchies([sloppy_ncut, human], [0.9, 1.0], priorities=[0, 2])
    assert [(h.instance, h.parts) for h in result] == [(1, (0,))]
    part = box(10, 40, 10, 40)  # a human part (9 %) inside an N-cut whole stays a part
    result = find_hierarchies([sloppy_ncut, part], [0.9, 1.0], priorities=[0, 2])
    assert [(h.instance, h.parts) for h in result] == [(0, (1,))]
