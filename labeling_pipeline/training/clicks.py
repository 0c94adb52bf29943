"""Click sampling for training: a first click inside the mask, then correction clicks.

Coordinates are (x, y) pixels of the frame the masks are given in. The GraCo-style sampler
takes the larger error region (false negatives or false positives, by the maximum of its
distance transform) and clicks a random pixel whose distance to the region's border exceeds
half that maximum: positive in a false negative, negative in a false positive. With no error, it
clicks a random background pixel as a negative (or a foreground pixel if there is none).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt


def _random_pixel(mask: npt.NDArray[np.bool_], rng: np.random.Generator) -> tuple[float, float]:
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(ys)))
    return float(xs[i]), float(ys[i])


def first_clicks(gt: npt.NDArray[np.bool_], rng: np.random.Generator) -> npt.NDArray[np.float32]:
    """Return (N, 2) clicks, one uniform pixel inside each of the (N, H, W) masks."""
    return np.array([_random_pixel(m, rng) for m in gt], dtype=np.float32).reshape(-1, 2)


def _distance(region: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    padded = np.pad(region, 1).astype(np.uint8)
    distance = np.asarray(cv2.distanceTransform(padded, cv2.DIST_L2, 5), dtype=np.float32)
    return distance[1:-1, 1:-1]


def _graco(
    gt: npt.NDArray[np.bool_], pred: npt.NDArray[np.bool_], rng: np.random.Generator
) -> tuple[float, float, int]:
    fn, fp = gt & ~pred, ~gt & pred
    if not fn.any() and not fp.any():
        background = ~gt
        if background.any():
            return (*_random_pixel(background, rng), 0)
        return (*_random_pixel(gt, rng), 1)
    dt_fn = _distance(fn) if fn.any() else np.zeros(gt.shape, np.float32)
    dt_fp = _distance(fp) if fp.any() else np.zeros(gt.shape, np.float32)
    positive = float(dt_fn.max()) >= float(dt_fp.max())
    dt = dt_fn if positive else dt_fp
    return (*_random_pixel(dt > dt.max() / 2.0, rng), int(positive))


def _uniform(
    gt: npt.NDArray[np.bool_], pred: npt.NDArray[np.bool_], rng: np.random.Generator
) -> tuple[float, float, int]:
    errors = gt ^ pred
    if not errors.any():
        return _graco(gt, pred, rng)
    x, y = _random_pixel(errors, rng)
    return x, y, int(gt[int(y), int(x)])


def correction_clicks(
    gt: npt.NDArray[np.bool_],
    pred: npt.NDArray[np.bool_],
    rng: np.random.Generator,
    *,
    sampler: str = "graco",
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int32]]:
    """Return (N, 2) clicks and (N,) labels (1 positive, 0 negative) from (N, H, W) errors."""
    pick = _graco if sampler == "graco" else _uniform
    clicks = [pick(g, p, rng) for g, p in zip(gt, pred, strict=True)]
    coords = np.array([(x, y) for x, y, _ in clicks], dtype=np.float32).reshape(-1, 2)
    labels = np.array([label for _, _, label in clicks], dtype=np.int32)
    return coords, labels
