"""Scores of a specialist on held-out images: mIoU, Dice, MAE and the S-measure.

All on binary foreground maps in each image's own frame (a multi-class specialist is scored per
class, then averaged). IoU and Dice use the prediction thresholded at a fixed value (an empty
prediction on an empty ground truth scores 1); MAE and the S-measure use the probabilities.
The S-measure is that of Fan et al. (ICCV 2017), alpha = 0.5, as in the SOD toolkits, but on the
probabilities as they are (the toolkits min-max stretch each map first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

FloatMap = npt.NDArray[np.float64]
_EPS = 1e-8


@dataclass(frozen=True)
class SegmentationScores:
    """Mean scores over images (higher is better except MAE)."""

    miou: float
    dice: float
    mae: float
    s_measure: float
    images: int

    def to_dict(self) -> dict[str, float | int]:
        """Return a JSON-ready dict."""
        return asdict(self)


def iou_dice(pred: npt.NDArray[np.bool_], gt: npt.NDArray[np.bool_]) -> tuple[float, float]:
    """Return (IoU, Dice) of two (H, W) bool masks; both empty counts as a perfect match."""
    inter = float(np.logical_and(pred, gt).sum())
    total = float(pred.sum() + gt.sum())
    if total == 0:
        return 1.0, 1.0
    return inter / (total - inter), 2.0 * inter / total


def _ssim(pred: FloatMap, gt: FloatMap) -> float:
    n = pred.size
    if n == 0:
        return 0.0
    x, y = pred.mean(), gt.mean()
    sx = ((pred - x) ** 2).sum() / (n - 1 + _EPS)
    sy = ((gt - y) ** 2).sum() / (n - 1 + _EPS)
    sxy = ((pred - x) * (gt - y)).sum() / (n - 1 + _EPS)
    alpha = 4 * x * y * sxy
    beta = (x**2 + y**2) * (sx + sy)
    if alpha != 0:
        return float(alpha / (beta + _EPS))
    return 1.0 if beta == 0 else 0.0


def _region(pred: FloatMap, gt: npt.NDArray[np.bool_]) -> float:
    h, w = gt.shape
    ys, xs = np.nonzero(gt)
    # the split point is the rounded centroid plus one, as in the reference toolkits
    cy = int(round(ys.mean())) + 1 if ys.size else h // 2
    cx = int(round(xs.mean())) + 1 if xs.size else w // 2
    total = 0.0
    g = gt.astype(np.float64)
    for rows in (slice(0, cy), slice(cy, h)):
        for cols in (slice(0, cx), slice(cx, w)):
            block = g[rows, cols]
            total += block.size / (h * w) * _ssim(pred[rows, cols], block)
    return total


def _object(pred: FloatMap, gt: npt.NDArray[np.bool_]) -> float:
    def score(values: FloatMap) -> float:
        if values.size == 0:
            return 0.0
        mean = values.mean()
        return float(2 * mean / (mean**2 + 1 + values.std(ddof=1 if values.size > 1 else 0) + _EPS))

    share = gt.mean()
    fg = score(pred[gt])
    bg = score(1.0 - pred[~gt])
    return float(share * fg + (1 - share) * bg)


def s_measure(
    prob: npt.NDArray[np.floating], gt: npt.NDArray[np.bool_], alpha: float = 0.5
) -> float:
    """Return the structure measure of an (H, W) probability map in [0, 1] against a bool mask."""
    pred = np.clip(prob.astype(np.float64), 0.0, 1.0)
    share = gt.mean()
    if share == 0:
        return float(1.0 - pred.mean())
    if share == 1:
        return float(pred.mean())
    value = alpha * _object(pred, gt) + (1 - alpha) * _region(pred, gt)
    return float(max(value, 0.0))


def score_maps(
    probs: Sequence[npt.NDArray[np.floating]],
    gts: Sequence[npt.NDArray[np.bool_]],
    *,
    threshold: float = 0.5,
) -> SegmentationScores:
    """Average the four scores over (H, W) probability maps and their bool ground truths."""
    rows = []
    for prob, gt in zip(probs, gts, strict=True):
        iou, dice = iou_dice(prob > threshold, gt)
        mae = float(np.abs(prob.astype(np.float64) - gt).mean())
        rows.append((iou, dice, mae, s_measure(prob, gt)))
    if not rows:
        return SegmentationScores(math.nan, math.nan, math.nan, math.nan, 0)
    mean = np.asarray(rows).mean(axis=0)
    miou, dice, mae, s_value = (float(v) for v in mean)
    return SegmentationScores(miou, dice, mae, s_value, images=len(rows))
