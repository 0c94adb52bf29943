"""Interactive-segmentation metrics: IoU with ignore labels, NoC@t, failures, 1-IoU, mIoU curves.

Definitions (SimpleClick / GraCo protocol):

- IoU is computed over the pixels that are not ignored: |P & G| / |P | G| with G the pixels
  labelled 1 and the pixels labelled -1 removed from both sets. An empty union gives 1.0.
- NoC@t of one instance: the 1-based index of the first click whose IoU is >= t; `max_clicks`
  (20) if no click reaches t. NoC80, NoC85 and NoC90 come from the same click sequences.
- NoF@t (failures): the number of instances that never reach t within `max_clicks`.
- 1-IoU: the mean over instances of the IoU after the first click.
- mIoU@k: the mean IoU after k clicks; a sequence that stopped early (target reached) keeps its
  last IoU for the remaining clicks, as an annotator who stops keeps the mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from labeling_pipeline.evaluation.samples import EvaluationError

DEFAULT_MAX_CLICKS = 20
DEFAULT_IOU_THRESHOLDS = (0.8, 0.9)


def mask_iou(
    gt: npt.NDArray[np.bool_],
    pred: npt.NDArray[np.bool_],
    ignore: npt.NDArray[np.bool_] | None = None,
) -> float:
    """Return the IoU of a prediction with the ground truth, ignored pixels excluded.

    Args:
        gt: (H, W) bool ground truth (label 1).
        pred: (H, W) bool prediction.
        ignore: (H, W) bool, True on pixels labelled -1, or None.

    Returns:
        IoU in [0, 1]; 1.0 when both masks are empty outside the ignore region.
    """
    gt, pred = np.asarray(gt, dtype=bool), np.asarray(pred, dtype=bool)
    if gt.shape != pred.shape:
        raise EvaluationError(f"prediction shape {pred.shape} differs from gt {gt.shape}")
    inter, union = gt & pred, gt | pred
    if ignore is not None:
        valid = ~np.asarray(ignore, dtype=bool)
        inter, union = inter & valid, union & valid
    union_px = int(union.sum())
    return 1.0 if union_px == 0 else int(inter.sum()) / union_px


def noc(ious: Sequence[float], threshold: float, *, max_clicks: int = DEFAULT_MAX_CLICKS) -> int:
    """Return the number of clicks to reach `threshold`: first 1-based index with IoU >= t.

    Args:
        ious: IoU after click 1, 2, ... (at most `max_clicks` values are looked at).
        threshold: Target IoU in (0, 1].
        max_clicks: Value returned when no click reaches the target.
    """
    for index, iou in enumerate(list(ious)[:max_clicks]):
        if iou >= threshold:
            return index + 1
    return max_clicks


def noc_name(threshold: float) -> str:
    """Return the metric name of a threshold, e.g. 0.9 -> "NoC90"."""
    return f"NoC{round(threshold * 100)}"


def padded_curve(ious: Sequence[float], max_clicks: int) -> npt.NDArray[np.float64]:
    """Return (max_clicks,) float64 IoU after each click, the last value carried forward.

    An empty sequence gives zeros.
    """
    values = [float(v) for v in list(ious)[:max_clicks]]
    if not values:
        return np.zeros(max_clicks, dtype=np.float64)
    values += [values[-1]] * (max_clicks - len(values))
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class InteractiveSummary:
    """Aggregate metrics over instances.

    Attributes:
        count: Number of instances.
        max_clicks: Click budget (NoC of a failed instance).
        noc: Mean NoC per threshold name ("NoC80", "NoC90", ...).
        nof: Failures per threshold name ("NoF80", ...): instances never reaching it.
        one_click_iou: Mean IoU after the first click (the paper's "1-IoU").
        miou_curve: Mean IoU after clicks 1..max_clicks (padded sequences).
    """

    count: int
    max_clicks: int
    noc: dict[str, float]
    nof: dict[str, int]
    one_click_iou: float
    miou_curve: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "count": self.count,
            "max_clicks": self.max_clicks,
            **self.noc,
            **self.nof,
            "1-IoU": self.one_click_iou,
            "mIoU_curve": list(self.miou_curve),
        }


def summarize(
    sequences: Sequence[Sequence[float]],
    *,
    thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS,
    max_clicks: int = DEFAULT_MAX_CLICKS,
) -> InteractiveSummary:
    """Aggregate per-instance IoU sequences into NoC@t, NoF@t, 1-IoU and the mIoU curve.

    Args:
        sequences: Per instance, the IoU after each click (may stop early at the target).
        thresholds: IoU targets of the NoC metrics.
        max_clicks: Click budget.

    Returns:
        The summary; means are NaN when there is no instance.
    """
    count = len(sequences)
    nan = float("nan")
    noc_means: dict[str, float] = {}
    failures: dict[str, int] = {}
    for t in thresholds:
        values = [noc(s, t, max_clicks=max_clicks) for s in sequences]
        noc_means[noc_name(t)] = float(np.mean(values)) if values else nan
        reached = [any(v >= t for v in list(s)[:max_clicks]) for s in sequences]
        failures[noc_name(t).replace("NoC", "NoF")] = reached.count(False)
    firsts = [float(s[0]) for s in sequences if len(s) > 0]
    if count:
        curve = np.mean([padded_curve(s, max_clicks) for s in sequences], axis=0)
    else:
        curve = np.full(max_clicks, nan)
    return InteractiveSummary(
        count=count,
        max_clicks=max_clicks,
        noc=noc_means,
        nof=failures,
        one_click_iou=float(np.mean(firsts)) if firsts else nan,
        miou_curve=tuple(float(v) for v in curve),
    )
