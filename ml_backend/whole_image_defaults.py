"""Defaults of whole-image (automatic mask) segmentation in the serving adapters.

One source for Label Studio pre-annotation (the project's extra params) and the CVAT detectors
(per preset): a 16 x 16 point grid, predicted IoU >= 0.8 and stability >= 0.92. SAM's own
automatic generator uses 32 x 32 and 0.95, four times the decoder work for little gain at
annotation time (``core_model.whole_image`` keeps SAM's values as its library defaults).
"""

from __future__ import annotations

POINTS_PER_SIDE = 16
"""Grid of points_per_side^2 single-click prompts."""

MAX_POINTS_PER_SIDE = 32
"""Largest accepted grid (SAM's own automatic grid)."""

PRED_IOU_THRESH = 0.8
"""Minimum predicted IoU of a kept mask."""

STABILITY_SCORE_THRESH = 0.92
"""Minimum stability score of a kept mask."""
