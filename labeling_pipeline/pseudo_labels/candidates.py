"""Mask helpers shared by the stages of `divide_conquer`: candidates, upsampling, boxes."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from core_model.types import BoolMask


@dataclass
class Candidate:
    """A mask on its way through the stages, with its score, source and refinement band."""

    mask: BoolMask  # in the instance frame
    score: float
    source: str
    band_px: int


def grid_to_image(mask: BoolMask, height: int, width: int) -> BoolMask:
    """Upsample an (h, w) patch mask to (height, width) bool (bilinear, threshold 0.5)."""
    resized = cv2.resize(mask.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
    out: BoolMask = resized > 0.5
    return out


def box_of(mask: BoolMask, margin: int = 0) -> tuple[int, int, int, int]:
    """Return (y0, y1, x0, x1), end exclusive, of a non-empty mask grown by `margin`."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    height, width = mask.shape
    return (
        max(0, int(rows[0]) - margin),
        min(height, int(rows[-1]) + 1 + margin),
        max(0, int(cols[0]) - margin),
        min(width, int(cols[-1]) + 1 + margin),
    )
