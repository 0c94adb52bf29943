"""What CVAT's UI (v2.23) does with an interactor reply, restated in Python for tests.

From cvat-ui ``tools-control.tsx`` (``runInteractionRequest``) and ``opencv-wrapper.ts``
(``contours.findContours``): when the reply has a ``mask`` and no ``points`` (JavaScript's
``!response.points``: a missing or null list, an empty list does not count), the UI traces the
outline of the crop: 1-pixel zero border, dilation with a 2 x 2 kernel, external contours
without approximation, border offset removed, longest contour kept, shifted by the ``bounds``
corner. With no contour at all it reads ``polygons[0].reduce`` of undefined and throws, and the
user sees "Interaction error occurred". Outlines of more than 3 points are simplified with
``approxPolyDP``; the UI draws the result only if that leaves at least one point. The mask itself
is run-length encoded (``mask2Rle``) with ``bounds`` appended, or the full crop when absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


class UiError(TypeError):
    """Where the UI's JavaScript throws."""


@dataclass
class UiResult:
    """What the UI keeps of a reply: the outline it draws (image pixels) and the mask's RLE."""

    outline: list[list[float]]
    rle: list[int]

    @property
    def drawn(self) -> bool:
        """Whether the UI shows an intermediate shape for this reply."""
        return bool(self.outline)


def find_longest_contour(crop: np.ndarray) -> list[int]:
    """``openCVWrapper.contours.findContours(src, true)``: flat [x, y, ...] of the crop."""
    src = np.asarray(crop, dtype=np.uint8)
    expanded = cv2.copyMakeBorder(src, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    expanded = cv2.dilate(
        expanded,
        np.ones((2, 2), np.uint8),
        anchor=(-1, -1),
        iterations=1,
        borderType=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    contours, _ = cv2.findContours(expanded, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    flat = [(c.reshape(-1) - 1).tolist() for c in contours]
    if not flat:
        raise UiError("Cannot read properties of undefined (reading 'reduce')")
    return sorted(flat, key=len, reverse=True)[0]


def mask_to_rle(values: list[int]) -> list[int]:
    """``core.utils.mask2Rle``: run lengths, a (possibly empty) background run first."""
    flat = np.asarray(values).reshape(-1) > 0
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    lengths = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    return ([0] if flat.size and flat[0] else []) + lengths


def interaction_step(reply: dict[str, Any], approx_threshold: float = 1.0) -> UiResult:
    """Run the UI's handling of one interactor reply; raise `UiError` where the UI throws."""
    mask = reply.get("mask")
    bounds = reply.get("bounds")
    points = reply.get("points")
    if mask is not None and points is None:
        left, top = (bounds[0], bounds[1]) if bounds else (0, 0)
        flat = find_longest_contour(np.array(mask))
        points = [[flat[i - 1] + left, flat[i] + top] for i in range(1, len(flat), 2)]
    if points is None:
        raise UiError("Cannot read properties of undefined (reading 'length')")
    outline = [list(map(float, p)) for p in points]
    if len(outline) > 3:
        approx = cv2.approxPolyDP(np.array(outline, np.float32), approx_threshold, True)
        outline = approx.reshape(-1, 2).tolist()
    crop = np.array(mask)
    rle = mask_to_rle(crop.reshape(-1).tolist())
    rle += list(bounds) if bounds else [0, 0, crop.shape[1] - 1, crop.shape[0] - 1]
    return UiResult(outline, rle)
