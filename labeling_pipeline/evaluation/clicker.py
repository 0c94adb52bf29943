"""Deterministic click simulator of the interactive-segmentation protocol (GraCo / RITM style).

Given the ground truth and the current prediction, the next click goes where the error is
largest, measured as the distance to the error region's boundary:

- false negatives FN = GT & ~pred and false positives FP = ~GT & pred, both outside the ignore
  region;
- each region is zero-padded by one pixel (so the image border counts as boundary) and gets an
  exact Euclidean distance transform (`cv2.DIST_L2` with mask size 0 = `cv2.DIST_MASK_PRECISE`:
  distance from a pixel centre to the nearest pixel centre outside the region);
- pixels clicked before get distance 0 (they can never be clicked again);
- the click is positive if max dt(FN) > max dt(FP) (ties go to the negative side), placed at the
  **first** pixel reaching that maximum in row-major order (smallest row, then smallest column).

With an empty prediction the first click is therefore the GT pixel farthest from the GT
boundary. When neither region has a clickable pixel (the prediction is perfect, or every error
pixel was already clicked) `next_click` returns None.

Clicks are integer pixel indices (column x, row y). `Click.as_point()` gives the model prompt at
the pixel centre (x + 0.5, y + 0.5), the continuous frame of `core_model.types`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from core_model.types import Point, Prompts
from labeling_pipeline.evaluation.samples import EvaluationError


@dataclass(frozen=True)
class Click:
    """One simulated click.

    Attributes:
        x: Column index of the clicked pixel (0 = left).
        y: Row index of the clicked pixel (0 = top).
        positive: True for a foreground (positive) click, False for a background click.
    """

    x: int
    y: int
    positive: bool

    def as_point(self) -> Point:
        """Return the click as a model prompt at the pixel centre, (x + 0.5, y + 0.5) pixels."""
        return Point(self.x + 0.5, self.y + 0.5, 1 if self.positive else 0)

    def to_dict(self) -> dict[str, int | bool]:
        """Return a JSON-ready dict (pixel indices and sign)."""
        return {"x": self.x, "y": self.y, "positive": self.positive}


def clicks_to_prompts(clicks: Sequence[Click]) -> Prompts:
    """Return the prompt set of all clicks so far, in click order (pixel-centre coordinates)."""
    return Prompts(points=tuple(c.as_point() for c in clicks))


def padded_distance(region: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """Return the exact L2 distance of each region pixel to the nearest non-region pixel.

    Args:
        region: (H, W) bool. The area outside the image counts as non-region (1-px zero pad).

    Returns:
        (H, W) float32 distances in pixels; 0 outside the region.
    """
    padded = np.pad(region.astype(np.uint8), 1, mode="constant", constant_values=0)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.asarray(dist[1:-1, 1:-1], dtype=np.float32)


class Clicker:
    """Stateful click simulator for one instance: call `next_click(pred)` after each prediction.

    Args:
        gt: (H, W) bool ground-truth mask (True = object).
        ignore: (H, W) bool, True where the pixel is ignored (label -1), or None.

    Raises:
        EvaluationError: shapes disagree or the ground truth has no pixel outside the ignore
            region.
    """

    def __init__(
        self, gt: npt.NDArray[np.bool_], ignore: npt.NDArray[np.bool_] | None = None
    ) -> None:
        gt = np.asarray(gt, dtype=bool)
        if gt.ndim != 2:
            raise EvaluationError(f"gt must be a 2-D (H, W) mask, got shape {gt.shape}")
        valid = np.ones_like(gt) if ignore is None else ~np.asarray(ignore, dtype=bool)
        if valid.shape != gt.shape:
            raise EvaluationError(f"ignore mask shape {valid.shape} differs from gt {gt.shape}")
        if not (gt & valid).any():
            raise EvaluationError("gt mask has no pixel outside the ignore region")
        self._gt = gt & valid
        self._background = ~gt & valid
        self._not_clicked = np.ones_like(gt)
        self.clicks: list[Click] = []

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the masks."""
        return self._gt.shape[0], self._gt.shape[1]

    def next_click(self, pred: npt.NDArray[np.bool_] | None) -> Click | None:
        """Compute, record and return the next click for the current prediction.

        Args:
            pred: (H, W) bool current prediction, or None for "nothing predicted yet".

        Returns:
            The new click, or None when no error pixel is left to click (nothing recorded).
        """
        height, width = self.shape
        if pred is None:
            pred = np.zeros((height, width), dtype=bool)
        pred = np.asarray(pred, dtype=bool)
        if pred.shape != (height, width):
            raise EvaluationError(f"prediction shape {pred.shape} differs from gt {self.shape}")
        fn_dist = padded_distance(self._gt & ~pred) * self._not_clicked
        fp_dist = padded_distance(self._background & pred) * self._not_clicked
        fn_max, fp_max = float(fn_dist.max()), float(fp_dist.max())
        if max(fn_max, fp_max) <= 0.0:
            return None
        positive = fn_max > fp_max
        dist, peak = (fn_dist, fn_max) if positive else (fp_dist, fp_max)
        # np.argmax returns the first maximum of the row-major flattening
        row, col = np.unravel_index(int(np.argmax(dist == peak)), dist.shape)
        click = Click(x=int(col), y=int(row), positive=positive)
        self._not_clicked[row, col] = False
        self.clicks.append(click)
        return click
