"""The specialist's quality gate: held-out scores against a fixed bar and the current version.

A candidate passes when its held-out mIoU and Dice reach the bars and, if the lineage already
serves a specialist whose bases are unchanged, its mIoU is not worse than that one's on the same
held-out images by more than the tolerance. Only a passing candidate is published.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from labeling_pipeline.specialist.metrics import SegmentationScores, score_maps
from labeling_pipeline.specialist.trainer import SpecialistConfigError


@dataclass(frozen=True)
class SpecialistGate:
    """Bars of the gate.

    Attributes:
        min_miou: Held-out mIoU needed.
        min_dice: Held-out Dice needed.
        tolerance: mIoU points the candidate may lose against the current version.
        holdout_fraction: Share of the annotated images held out.
        min_holdout_images: Images held out at least.
        threshold: Fixed probability threshold of the masks.
    """

    min_miou: float = 0.5
    min_dice: float = 0.6
    tolerance: float = 0.02
    holdout_fraction: float = 0.2
    min_holdout_images: int = 2
    threshold: float = 0.5

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any] | None) -> SpecialistGate:
        """Build from a dict; unknown keys are refused."""
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise SpecialistConfigError(f"unknown gate setting(s) {unknown}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return asdict(self)


@dataclass(frozen=True)
class GateVerdict:
    """Outcome of the gate: `passed` and one line saying why."""

    passed: bool
    reason: str
    candidate: SegmentationScores
    current: SegmentationScores | None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict."""
        return {
            "passed": self.passed,
            "reason": self.reason,
            "candidate": self.candidate.to_dict(),
            "current": self.current.to_dict() if self.current is not None else None,
        }


def score_probabilities(
    probs: Sequence[npt.NDArray[np.float32]],
    class_maps: Sequence[npt.NDArray[np.uint8]],
    *,
    threshold: float = 0.5,
) -> SegmentationScores:
    """Score (C, H, W) probabilities against (H, W) class maps, per foreground class.

    A binary specialist's channel 0 is the foreground (class 1); a multi-class one's channel c
    is class c (c >= 1).
    """
    pairs_p, pairs_g = [], []
    for prob, cmap in zip(probs, class_maps, strict=True):
        channels = [(0, 1)] if prob.shape[0] == 1 else [(c, c) for c in range(1, prob.shape[0])]
        for channel, cls in channels:
            pairs_p.append(prob[channel])
            pairs_g.append(cmap == cls)
    return score_maps(pairs_p, pairs_g, threshold=threshold)


def decide(
    candidate: SegmentationScores, current: SegmentationScores | None, gate: SpecialistGate
) -> GateVerdict:
    """Apply the bars."""
    if candidate.images == 0 or math.isnan(candidate.miou):
        return GateVerdict(False, "no held-out image to judge the candidate", candidate, current)
    if candidate.miou < gate.min_miou or candidate.dice < gate.min_dice:
        return GateVerdict(
            False,
            f"held-out mIoU {candidate.miou:.3f} / Dice {candidate.dice:.3f} below the bar "
            f"{gate.min_miou:.2f} / {gate.min_dice:.2f}",
            candidate,
            current,
        )
    if current is not None and candidate.miou < current.miou - gate.tolerance:
        return GateVerdict(
            False,
            f"held-out mIoU {candidate.miou:.3f} worse than the current version's "
            f"{current.miou:.3f} by more than {gate.tolerance:.2f}",
            candidate,
            current,
        )
    return GateVerdict(
        True, f"held-out mIoU {candidate.miou:.3f}, Dice {candidate.dice:.3f}", candidate, current
    )
