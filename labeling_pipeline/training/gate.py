"""The held-out gate: score a candidate and the served version on held-out masks, then decide.

Both models are scored by the evaluation harness (`labeling_pipeline.evaluation`, the code of
`unsamv2 evaluate`) on every accepted mask of the held-out images:

- NoC85, NoC90 and 1-IoU of simulated click sequences with the per-instance granularity search
  (method "granularity");
- annotator IoU: the IoU of the first-click mask at the granularity recorded for the mask
  (`HumanMask.granularity`), i.e. what an annotator who clicks once at that setting sees. It is
  the same harness with a one-click budget and a one-value grid. Masks without a recorded
  granularity do not count for it.

`decide` publishes when the candidate is not worse than the current version by more than the
tolerance on the gate metric; with fewer than `min_masks` held-out masks it declines to decide.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core_model.errors import UnSAMv2Error
from core_model.imageio import load_image_rgb
from core_model.masks import decode_coco_rle
from core_model.types import granularity_or_none
from labeling_pipeline.evaluation import (
    GRANULARITY_GRID,
    EvalSample,
    InteractiveConfig,
    evaluate_instance,
    evaluate_interactive,
)

if TYPE_CHECKING:
    from core_model.predictor import GranularityPredictor
    from labeling_pipeline.store.models import HumanMask, Image

#: Gate metrics and whether a higher value is better.
GATE_METRICS: dict[str, bool] = {
    "annotator_iou": True,
    "1-IoU": True,
    "NoC85": False,
    "NoC90": False,
}
NOC_THRESHOLDS = (0.85, 0.9)


class GateError(UnSAMv2Error, ValueError):
    """Gate settings are invalid."""


@dataclass(frozen=True)
class GateConfig:
    """Settings of the held-out split and the gate.

    Attributes:
        metric: Metric that decides (one of `GATE_METRICS`).
        tolerance: How much worse than the current version the candidate may be on `metric`
            (IoU points for IoU metrics, clicks for NoC).
        min_masks: Fewer held-out masks than this: no decision (nothing auto-published).
        holdout_fraction: Share of the images with accepted masks held out.
        min_holdout_images: Images held out at least.
        max_clicks: Click budget of the NoC sequences.
        granularities: Grid of the per-instance granularity search.
    """

    metric: str = "annotator_iou"
    tolerance: float = 0.02
    min_masks: int = 10
    holdout_fraction: float = 0.2
    min_holdout_images: int = 1
    max_clicks: int = 20
    granularities: tuple[float, ...] = GRANULARITY_GRID

    def __post_init__(self) -> None:
        if self.metric not in GATE_METRICS:
            raise GateError(f"gate metric must be one of {sorted(GATE_METRICS)}: {self.metric!r}")
        if not (math.isfinite(self.tolerance) and self.tolerance >= 0):
            raise GateError(f"gate tolerance must be >= 0, got {self.tolerance}")
        if self.min_masks < 1 or self.max_clicks < 1 or self.min_holdout_images < 0:
            raise GateError("gate min_masks and max_clicks must be >= 1, min_holdout_images >= 0")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise GateError(f"held-out fraction must lie in [0, 1), got {self.holdout_fraction}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> GateConfig:
        """Build from a JSON mapping (unknown keys refused)."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise GateError(f"unknown gate settings {unknown}; known: {sorted(known)}")
        if "granularities" in values:
            values["granularities"] = tuple(float(g) for g in values["granularities"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        data = asdict(self)
        data["granularities"] = list(self.granularities)
        return data


@dataclass(frozen=True, eq=False)
class HeldOutMask:
    """One accepted mask of a held-out image.

    Attributes:
        sample: Image (H, W, 3) uint8 RGB and the mask (H, W) bool as an evaluation sample.
        granularity: The granularity recorded when the annotator accepted it, or None.
    """

    sample: EvalSample
    granularity: float | None


def load_held_out(
    images: Sequence[Image], humans: Mapping[int, Sequence[HumanMask]], held_out: frozenset[int]
) -> list[HeldOutMask]:
    """Read the held-out images and decode their accepted masks (wrong-sized masks skipped)."""
    out: list[HeldOutMask] = []
    for image in images:
        if image.id not in held_out:
            continue
        pixels = load_image_rgb(Path(image.local_path))
        for mask in humans.get(image.id, []):
            if (mask.height, mask.width) != pixels.shape[:2]:
                continue
            gt = decode_coco_rle(mask.rle).astype(bool)
            if not gt.any():
                continue
            sample = EvalSample(
                pixels,
                gt,
                image_id=str(image.id),
                instance_id=str(mask.id),
                image_key=f"file:{image.sha256}",
            )
            out.append(HeldOutMask(sample, granularity_or_none(mask.granularity)))
    return out


def _nan_mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if values else float("nan")


@dataclass(frozen=True)
class Scores:
    """Held-out metrics of one model.

    Attributes:
        count: Held-out masks scored.
        metrics: "NoC85", "NoC90", "1-IoU", "annotator_iou" (NaN without recorded
            granularities), "annotator_count".
        miou_curve: Mean IoU after clicks 1..max_clicks of the granularity search.
        per_granularity: Recorded granularity (grid value, as text) -> mean annotator IoU.
    """

    count: int
    metrics: dict[str, float]
    miou_curve: tuple[float, ...]
    per_granularity: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN as None)."""

        def clean(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "count": self.count,
            "metrics": {k: clean(v) for k, v in self.metrics.items()},
            "miou_curve": [clean(v) for v in self.miou_curve],
            "per_granularity": {k: clean(v) for k, v in self.per_granularity.items()},
        }


def _grid_label(granularity: float) -> str:
    return f"{min(max(round(granularity, 1), 0.1), 1.0):.1f}"


def score_model(
    predictor: GranularityPredictor, masks: Sequence[HeldOutMask], config: GateConfig
) -> Scores:
    """Score one model on the held-out masks (deterministic for a model and its inputs)."""
    search = InteractiveConfig(
        method="granularity",
        max_clicks=config.max_clicks,
        iou_thresholds=NOC_THRESHOLDS,
        granularities=config.granularities,
    )
    result = evaluate_interactive(predictor, [m.sample for m in masks], config=search)
    annotator: list[float] = []
    by_grid: dict[str, list[float]] = {}
    for mask in masks:
        if mask.granularity is None:
            continue
        one_click = InteractiveConfig(
            method="granularity",
            max_clicks=1,
            iou_thresholds=NOC_THRESHOLDS,
            granularities=(mask.granularity,),
        )
        ious = evaluate_instance(predictor, mask.sample, config=one_click).ious
        iou = float(ious[0]) if ious else 0.0
        annotator.append(iou)
        by_grid.setdefault(_grid_label(mask.granularity), []).append(iou)
    summary = result.summary
    metrics = {
        "NoC85": summary.noc.get("NoC85", float("nan")),
        "NoC90": summary.noc.get("NoC90", float("nan")),
        "1-IoU": summary.one_click_iou,
        "annotator_iou": _nan_mean(annotator),
        "annotator_count": float(len(annotator)),
    }
    return Scores(
        count=summary.count,
        metrics=metrics,
        miou_curve=summary.miou_curve,
        per_granularity={k: _nan_mean(v) for k, v in sorted(by_grid.items())},
    )


@dataclass(frozen=True)
class Verdict:
    """The gate's decision.

    Attributes:
        decision: "publish", "reject" or "undecided" (too few held-out masks).
        metric: The metric that decided (the configured one, or 1-IoU when too few masks have
            a recorded granularity for the annotator IoU).
        candidate: The candidate's value of `metric` (NaN if unscored).
        current: The current version's value.
        improvement: Candidate minus current, signed so that positive is better.
        tolerance: The allowed worsening.
        reason: One line for logs, reports and job results.
    """

    decision: str
    metric: str
    candidate: float
    current: float
    improvement: float
    tolerance: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (NaN as None)."""
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in asdict(self).items()
        }


def undecided(reason: str, config: GateConfig) -> Verdict:
    """Return the verdict for a held-out set that cannot decide."""
    nan = float("nan")
    return Verdict("undecided", config.metric, nan, nan, nan, config.tolerance, reason)


def decide(candidate: Scores, current: Scores, config: GateConfig) -> Verdict:
    """Compare the candidate with the current version on the gate metric."""
    if candidate.count < config.min_masks:
        return undecided(
            f"only {candidate.count} held-out mask(s), fewer than the {config.min_masks} "
            "needed to decide; not published automatically (publish by hand if wanted)",
            config,
        )
    metric = config.metric
    note = ""
    if metric == "annotator_iou" and candidate.metrics["annotator_count"] < config.min_masks:
        metric, note = "1-IoU", " (too few masks with a recorded granularity: 1-IoU decides)"
    higher_better = GATE_METRICS[metric]
    new, old = candidate.metrics[metric], current.metrics[metric]
    improvement = (new - old) if higher_better else (old - new)
    passed = improvement >= -config.tolerance
    decision = "publish" if passed else "reject"
    reason = (
        f"{metric} {new:.3f} (candidate) vs {old:.3f} (current): "
        f"{'better' if improvement >= 0 else 'worse'} by {abs(improvement):.3f}, tolerance "
        f"{config.tolerance:g} -> {'passes' if passed else 'rejected'}{note}"
    )
    return Verdict(decision, metric, new, old, improvement, config.tolerance, reason)
