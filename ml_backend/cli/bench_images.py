"""Synthetic inputs shared by the `unsamv2 bench` subcommands."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt


def bench_image(width: int, height: int, seed: int = 0) -> npt.NDArray[np.uint8]:
    """Return an (H, W, 3) uint8 RGB image: a gradient background and six flat discs (seeded)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[..., 0] = (xx * 255 // max(width - 1, 1)).astype(np.uint8)
    image[..., 1] = (yy * 255 // max(height - 1, 1)).astype(np.uint8)
    image[..., 2] = 128
    for _ in range(6):
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(max(2, min(width, height) // 12), max(3, min(width, height) // 4)))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r * r
        image[disc] = rng.integers(0, 256, size=3, dtype=np.uint8)
    return image
