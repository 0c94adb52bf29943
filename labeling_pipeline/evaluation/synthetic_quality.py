"""Quality of pseudo-labels on generated scenes: recall, IoU, granularity order, per stage.

Every ground-truth region (whole or part) is matched to the output mask of highest IoU (the
rule of `tests/integration/test_pseudo_recall.py`, one output may match several regions). From
the matches:

- **recall@t**: share of regions whose best IoU is at least t (0.5 and 0.8), per kind;
- **mean IoU**: mean best IoU per kind;
- **granularity order**: among parts whose own best match and whose whole's best match both
  reach IoU 0.5, the share where the part's mask has a lower granularity than the whole's;
- **per-stage recall@0.8**: the same matching against each stage of a `StageTrace` (divide
  candidates, refined instances, raw conquer regions, final masks), which says where a region
  was lost;
- **by part size**: part recall@0.8 in three bands of area (share of the image).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from labeling_pipeline.evaluation.synthetic import SyntheticScene
from labeling_pipeline.pseudo_labels.diagnostics import STAGES, StageTrace
from labeling_pipeline.pseudo_labels.divide_conquer import PseudoMask

IOU_LEVELS = (0.5, 0.8)
ORDER_MIN_IOU = 0.5  # both matches must at least overlap their region well to compare them
SIZE_BANDS = ((0.0, 0.005, "small <0.5%"), (0.005, 0.02, "medium 0.5-2%"), (0.02, 1.01, "large"))


@dataclass(frozen=True)
class RegionScore:
    """One ground-truth region's best match, overall and per stage."""

    region_id: int
    is_part: bool
    area_fraction: float
    best_iou: float
    stage_iou: dict[str, float]
    order_ok: bool | None  # parts only; None when the pair cannot be compared


@dataclass
class QualityTotals:
    """Accumulated scores of many images."""

    regions: list[RegionScore] = field(default_factory=list)
    masks_per_image: list[int] = field(default_factory=list)
    seconds_per_image: list[float] = field(default_factory=list)
    images_without_masks: int = 0
    fallbacks: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, object]:
        """Return the figures as a JSON-ready dict (see the module docstring)."""
        out: dict[str, object] = {}
        for kind, is_part in (("whole", False), ("part", True)):
            rows = [r for r in self.regions if r.is_part == is_part]
            ious = np.array([r.best_iou for r in rows], dtype=np.float64)
            figures: dict[str, object] = {"count": len(rows)}
            for level in IOU_LEVELS:
                figures[f"recall@{level}"] = float((ious >= level).mean()) if rows else 0.0
            figures["mean_iou"] = float(ious.mean()) if rows else 0.0
            figures["stage_recall@0.8"] = {
                s: float(np.mean([r.stage_iou[s] >= 0.8 for r in rows])) if rows else 0.0
                for s in STAGES
            }
            out[kind] = figures
        parts = [r for r in self.regions if r.is_part]
        ordered = [r.order_ok for r in parts if r.order_ok is not None]
        out["granularity_order"] = float(np.mean(ordered)) if ordered else 0.0
        out["granularity_pairs"] = len(ordered)
        out["part_recall@0.8_by_size"] = {
            name: _recall([r for r in parts if low <= r.area_fraction < high])
            for low, high, name in SIZE_BANDS
        }
        out["masks_per_image"] = statistics.fmean(self.masks_per_image or [0])
        out["seconds_per_image"] = statistics.fmean(self.seconds_per_image or [0.0])
        out["images_without_masks"] = self.images_without_masks
        out["fallbacks"] = list(self.fallbacks)
        return out


def _recall(rows: Sequence[RegionScore]) -> dict[str, float]:
    hits = [r.best_iou >= 0.8 for r in rows]
    return {"count": len(rows), "recall@0.8": float(np.mean(hits)) if hits else 0.0}


def _best(
    masks: Sequence[PseudoMask], decoded: npt.NDArray[np.float32], truth: npt.NDArray[np.float32]
) -> tuple[float, int]:
    """Return (best IoU, index) of a flat truth (H*W,) against decoded (N, H*W) float32 masks."""
    if not masks:
        return 0.0, -1
    inter = decoded @ truth
    union = decoded.sum(axis=1) + truth.sum() - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1.0), 0.0)
    index = int(iou.argmax())
    return float(iou[index]), index


def score_scene(
    scene: SyntheticScene, masks: Sequence[PseudoMask], trace: StageTrace | None = None
) -> list[RegionScore]:
    """Score one image's pseudo-labels against the scene's wholes and parts."""
    height, width = scene.image.shape[:2]
    decoded = (
        np.stack([m.decode().reshape(-1) for m in masks]).astype(np.float32)
        if masks
        else np.zeros((0, height * width), dtype=np.float32)
    )
    matches = {}
    for region in scene.regions:
        matches[region.region_id] = _best(
            masks, decoded, region.mask.reshape(-1).astype(np.float32)
        )
    out = []
    for region in scene.regions:
        iou, index = matches[region.region_id]
        order: bool | None = None
        if region.is_part and region.parent_id is not None:
            whole_iou, whole_index = matches[region.parent_id]
            if min(iou, whole_iou) >= ORDER_MIN_IOU and index != whole_index:
                order = masks[index].granularity < masks[whole_index].granularity
            elif min(iou, whole_iou) >= ORDER_MIN_IOU:
                order = False  # one mask standing for both a part and its whole
        stage_iou = {s: trace.best_iou(s, region.mask) if trace else 0.0 for s in STAGES}
        out.append(
            RegionScore(
                region.region_id,
                region.is_part,
                float(region.mask.sum()) / (height * width),
                iou,
                stage_iou,
                order,
            )
        )
    return out
