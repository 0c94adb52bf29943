from __future__ import annotations

import numpy as np
import pytest

from core_model.errors import InvalidMaskError
from core_model.masks import (
    box_iou_xyxy,
    box_xyxy_to_xywh,
    mask_to_box_xyxy,
    mask_to_polygons,
    masks_to_boxes_xyxy,
    nms_xyxy,
    polygons_to_mask,
    resize_mask,
)


def test_boxes_are_pixel_edges_and_empty_masks_give_zeros() -> None:
    masks = np.zeros((3, 10, 12), bool)
    masks[0, 2:5, 3:6] = True
    masks[2, 9, 11] = True
    boxes = masks_to_boxes_xyxy(masks)
    np.testing.assert_array_equal(boxes, [[3, 2, 6, 5], [0, 0, 0, 0], [11, 9, 12, 10]])
    np.testing.assert_array_equal(mask_to_box_xyxy(masks[0]), [3, 2, 6, 5])
    np.testing.assert_array_equal(box_xyxy_to_xywh(boxes[0]), [3, 2, 3, 3])


def test_box_iou_and_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 5]], np.float32)
    iou = box_iou_xyxy(boxes, boxes)
    assert iou[0, 1] == pytest.approx(81 / 100)
    assert iou[0, 2] == 0.0
    assert iou[0, 3] == pytest.approx(0.5)
    np.testing.assert_array_equal(nms_xyxy(boxes, [0.9, 0.95, 0.5, 0.8], 0.7), [1, 3, 2])
    np.testing.assert_array_equal(nms_xyxy(boxes, [0.9, 0.95, 0.5, 0.8], 0.3), [1, 2])
    assert nms_xyxy(np.zeros((0, 4)), [], 0.5).size == 0


def test_polygon_round_trip() -> None:
    mask = np.zeros((40, 50), bool)
    mask[5:20, 10:30] = True
    mask[25:35, 35:45] = True
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2 and all(p.dtype == np.float32 and p.shape[1] == 2 for p in polygons)
    np.testing.assert_array_equal(polygons_to_mask(polygons, height=40, width=50), mask)
    assert mask_to_polygons(np.zeros((5, 5), bool)) == []
    with pytest.raises(InvalidMaskError):
        polygons_to_mask([np.array([[0, 0], [1, 1]])], height=5, width=5)


def test_resize_mask_nearest() -> None:
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    big = resize_mask(mask, height=8, width=8)
    assert big.shape == (8, 8) and big[:4, :4].all() and not big[4:, :].any()
