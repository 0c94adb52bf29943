"""Continuous granularity of the masks of one instance hierarchy (UnSAMv2 stage 4).

    g(A) = 0.1 + 0.9 * (sqrt(A) - sqrt(A_min)) / (sqrt(A_max) - sqrt(A_min))

over the pixel areas A of the instance and its surviving parts: the smallest mask gets exactly
0.1, the largest (normally the instance) exactly 1.0, and when all areas are equal (e.g. an
instance without parts) every mask gets 1.0. Granularity is relative to its instance, not to
the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core_model.types import GRANULARITY_MAX, GRANULARITY_MIN


def granularity_from_areas(
    areas: Sequence[float] | npt.NDArray[np.number],
) -> npt.NDArray[np.float64]:
    """Return (N,) float64 granularities in [0.1, 1.0] for N >= 1 pixel areas (>= 0)."""
    values = np.asarray(areas, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"areas must be a non-empty 1-D sequence, got shape {values.shape}")
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("areas must be finite and non-negative")
    roots = np.sqrt(values)
    low, high = roots.min(), roots.max()
    if high - low <= 0:
        return np.full(values.shape, GRANULARITY_MAX)
    scaled = (roots - low) / (high - low)
    out: npt.NDArray[np.float64] = GRANULARITY_MIN + (GRANULARITY_MAX - GRANULARITY_MIN) * scaled
    out[roots == low] = GRANULARITY_MIN  # exact end points despite rounding
    out[roots == high] = GRANULARITY_MAX
    return out
