"""Boxes, polygons, resizing and NMS for binary masks (numpy and OpenCV).

Boxes are (x0, y0, x1, y1) pixel edges: a mask covering columns 3..5 has x0 = 3, x1 = 6.
Polygons are (K, 2) float32 arrays of (x, y) vertices in pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

from core_model.errors import InvalidMaskError


def masks_to_boxes_xyxy(masks: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return (N, 4) float32 tight boxes of (N, H, W) masks; an empty mask gives all zeros."""
    array: npt.NDArray[np.bool_] = np.asarray(masks).astype(bool)
    if array.ndim != 3:
        raise InvalidMaskError(f"masks must be (N, H, W), got shape {array.shape}")
    rows: npt.NDArray[np.bool_] = np.any(array, axis=2)  # (N, H)
    cols: npt.NDArray[np.bool_] = np.any(array, axis=1)  # (N, W)
    out = np.zeros((array.shape[0], 4), dtype=np.float32)
    has = rows.any(axis=1)
    if has.any():
        height, width = array.shape[1:]
        out[has, 0] = cols[has].argmax(axis=1)
        out[has, 1] = rows[has].argmax(axis=1)
        out[has, 2] = width - cols[has][:, ::-1].argmax(axis=1)
        out[has, 3] = height - rows[has][:, ::-1].argmax(axis=1)
    return out


def mask_to_box_xyxy(mask: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return the (4,) float32 tight box of an (H, W) mask (zeros if empty)."""
    box: npt.NDArray[np.float32] = masks_to_boxes_xyxy(np.asarray(mask)[None])[0]
    return box


def box_xyxy_to_xywh(box: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Convert (..., 4) boxes from (x0, y0, x1, y1) to COCO (x, y, width, height)."""
    b = np.asarray(box, dtype=np.float32)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def box_iou_xyxy(a: npt.ArrayLike, b: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Return the (N, M) IoU matrix of (N, 4) and (M, 4) boxes."""
    a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
    area_a = (a[:, 2] - a[:, 0]).clip(0) * (a[:, 3] - a[:, 1]).clip(0)
    area_b = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (rb - lt).clip(0).prod(axis=2)
    union = area_a[:, None] + area_b[None, :] - inter
    iou: npt.NDArray[np.float32] = np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)
    return iou.astype(np.float32)


def nms_xyxy(
    boxes: npt.ArrayLike, scores: npt.ArrayLike, iou_threshold: float
) -> npt.NDArray[np.int64]:
    """Greedy non-maximum suppression; returns kept indices, highest score first."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    if order.size == 0:
        return order.astype(np.int64)
    iou = box_iou_xyxy(b[order], b[order])
    suppressed = np.zeros(order.size, dtype=bool)
    keep = []
    for i in range(order.size):
        if suppressed[i]:
            continue
        keep.append(order[i])
        suppressed |= iou[i] > iou_threshold
    return np.array(keep, dtype=np.int64)


def mask_to_polygons(
    mask: npt.ArrayLike, *, tolerance_px: float = 0.0, min_area_px: float = 1.0
) -> list[npt.NDArray[np.float32]]:
    """Return the outer contours of an (H, W) mask as polygons (holes are not represented).

    Args:
        mask: (H, W), non-zero = foreground.
        tolerance_px: Douglas-Peucker simplification tolerance; 0 keeps every contour vertex.
        min_area_px: Drop polygons smaller than this area.

    Returns:
        (K, 2) float32 (x, y) polygons with K >= 3, pixel-corner coordinates.
    """
    array = np.ascontiguousarray(np.asarray(mask) != 0, dtype=np.uint8)
    if array.ndim != 2:
        raise InvalidMaskError(f"mask must be 2-D, got shape {array.shape}")
    contours, _ = cv2.findContours(array, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polygons: list[npt.NDArray[np.float32]] = []
    for contour in contours:
        if tolerance_px > 0:
            contour = cv2.approxPolyDP(contour, tolerance_px, True)
        if len(contour) >= 3 and cv2.contourArea(contour) >= min_area_px:
            polygons.append(contour.reshape(-1, 2).astype(np.float32))
    return polygons


def polygons_to_mask(
    polygons: list[npt.ArrayLike], *, height: int, width: int
) -> npt.NDArray[np.bool_]:
    """Rasterise (K, 2) (x, y) polygons into an (H, W) bool mask (union, even-odd not used)."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    points = [
        np.round(np.asarray(p, dtype=np.float64)).astype(np.int32).reshape(-1, 2) for p in polygons
    ]
    if any(p.shape[0] < 3 for p in points):
        raise InvalidMaskError("every polygon needs at least 3 vertices")
    cv2.fillPoly(canvas, points, 1)
    return canvas.astype(bool)


def resize_mask(mask: npt.ArrayLike, *, height: int, width: int) -> npt.NDArray[np.bool_]:
    """Resize an (H, W) mask with nearest-neighbour sampling."""
    array = np.asarray(mask).astype(np.uint8)
    if array.ndim != 2:
        raise InvalidMaskError(f"mask must be 2-D, got shape {array.shape}")
    resized = cv2.resize(array, (width, height), interpolation=cv2.INTER_NEAREST)
    return np.asarray(resized).astype(bool)
