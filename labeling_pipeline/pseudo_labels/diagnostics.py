"""Per-stage records of one pseudo-label run, for diagnostics and benchmarks.

`pseudo_label_image(..., trace=StageTrace())` fills the trace with the masks each stage
produced: the divide's candidates, the instances after refinement, the raw conquer regions
(before NMS and refinement), the final masks, and the fallback used, if any. Masks are kept as
boxed crops (`BoxedMask`) so a run with hundreds of conquer regions on a large image stays
small; `best_iou` scores a ground-truth mask against a stage without decoding full frames.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from core_model.types import BoolMask

STAGES = ("divide", "instances", "conquer", "final")


@dataclass(frozen=True)
class BoxedMask:
    """A mask stored as its crop: `crop` (h, w) bool whose top-left pixel is (y0, x0)."""

    y0: int
    x0: int
    crop: BoolMask

    @classmethod
    def from_mask(cls, mask: BoolMask, y0: int = 0, x0: int = 0) -> BoxedMask | None:
        """Return the tight crop of `mask` (placed at (y0, x0) in the image), None if empty."""
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None
        crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
        return cls(y0 + int(rows[0]), x0 + int(cols[0]), np.ascontiguousarray(crop))

    def iou(self, truth: BoolMask, truth_area: int) -> float:
        """Return the IoU with a full-frame (H, W) bool mask of `truth_area` pixels."""
        h, w = self.crop.shape
        inter = np.count_nonzero(truth[self.y0 : self.y0 + h, self.x0 : self.x0 + w] & self.crop)
        union = truth_area + np.count_nonzero(self.crop) - inter
        return inter / union if union > 0 else 0.0


@dataclass
class StageTrace:
    """Masks per stage of one image (see the module docstring); `fallback` says why one ran."""

    stages: dict[str, list[BoxedMask]] = field(default_factory=lambda: {s: [] for s in STAGES})
    fallback: str = ""

    def add(self, stage: str, mask: BoolMask, y0: int = 0, x0: int = 0) -> None:
        """Record a mask (in a frame whose top-left pixel is (y0, x0) of the image)."""
        boxed = BoxedMask.from_mask(mask, y0, x0)
        if boxed is not None:
            self.stages[stage].append(boxed)

    def rescaled(self, scale_y: float, scale_x: float) -> StageTrace:
        """Return the trace with every mask resized by (scale_y, scale_x) (bilinear, > 0.5)."""
        out = StageTrace(fallback=self.fallback)
        for stage, masks in self.stages.items():
            for m in masks:
                y0, x0 = round(m.y0 * scale_y), round(m.x0 * scale_x)
                h, w = m.crop.shape
                size = (
                    max(1, round((m.y0 + h) * scale_y) - y0),
                    max(1, round((m.x0 + w) * scale_x) - x0),
                )
                crop = cv2.resize(
                    m.crop.astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_LINEAR
                )
                out.add(stage, crop > 0.5, y0, x0)
        return out

    def best_iou(self, stage: str, truth: BoolMask) -> float:
        """Return the best IoU of a full-frame (H, W) bool mask with the stage's masks."""
        area = np.count_nonzero(truth)
        return max((m.iou(truth, area) for m in self.stages[stage]), default=0.0)
