"""The serving benchmark's answer check: rounding flips at the threshold are not wrong answers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from ml_backend.cli.bench_clicks import ROUNDING_LOGIT, _flipped_pixels


def _reference(low: np.ndarray) -> SimpleNamespace:
    # constant 4x4 logits upsample to the same constant: the mask is low > 0 everywhere
    mask = np.broadcast_to(low[0, :1, :1] > 0, (8, 8)).copy()
    return SimpleNamespace(masks=mask[None], low_res_logits=low)


def test_only_pixels_within_rounding_of_the_threshold_may_differ() -> None:
    near = _reference(np.full((1, 4, 4), ROUNDING_LOGIT / 2, dtype=np.float32))
    far = _reference(np.full((1, 4, 4), 0.5, dtype=np.float32))
    same = near.masks[0].copy()
    flipped = same.copy()
    flipped[2, 3] = ~flipped[2, 3]
    assert _flipped_pixels(same, near, 0.0) == 0
    assert _flipped_pixels(flipped, near, 0.0) == 1  # a rounding flip, counted apart
    wrong = far.masks[0].copy()
    wrong[2, 3] = ~wrong[2, 3]
    assert _flipped_pixels(wrong, far, 0.0) == -1  # a logit of 0.5 never flips by rounding
