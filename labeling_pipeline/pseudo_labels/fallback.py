"""A last-resort instance for an image where the divide stage yields no instance.

An image without a single mask teaches the model nothing and usually means the thresholds
missed a real object (one just under the instance size, or a scene whose colours defeat the
features). `fallback_instance` returns one coarse instance and the reason, in order:

1. the largest divide proposal, when there is one (it was only below the instance size);
2. a colour-contrast segmentation: pixels whose smoothed Lab colour is far from every colour
   of the image border (k-means centres of the border pixels), thresholded with Otsu, opened,
   largest connected component, when it covers at least `min_area_fraction` of the image;
3. nothing: the image has no region standing out from its border colours.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import numpy.typing as npt

from core_model.types import BoolMask

_WORK_SIDE = 256  # the colour segmentation runs on a copy this size: coarse is enough here
_BORDER_COLOURS = 4  # k-means centres of the border: a gradient and some clutter


def _border_distance(lab: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Return (h, w) distance of every pixel's Lab colour to the nearest border colour."""
    ring = np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]).astype(np.float32)
    k = min(_BORDER_COLOURS, len(ring))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    labels = np.zeros((len(ring), 1), dtype=np.int32)
    _, _, found = cv2.kmeans(ring, k, labels, criteria, 2, cv2.KMEANS_PP_CENTERS)
    centres = np.asarray(found, dtype=np.float32)
    flat = lab.reshape(-1, 3)
    distance = np.min(np.linalg.norm(flat[:, None, :] - centres[None], axis=2), axis=1)
    out: npt.NDArray[np.float32] = distance.reshape(lab.shape[:2]).astype(np.float32)
    return out


def contrast_segmentation(
    image: npt.NDArray[np.uint8], *, min_area_fraction: float, min_contrast: float
) -> BoolMask | None:
    """Return the largest region standing out from the border colours, (H, W) bool, or None.

    Args:
        image: (H, W, 3) uint8 RGB.
        min_area_fraction: Least area of the region as a fraction of the image.
        min_contrast: Least mean Lab distance of the region to the border colours (noise or a
            plain image has no such region).
    """
    height, width = image.shape[:2]
    scale = min(1.0, _WORK_SIDE / max(height, width))
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 1.5)
    lab = cv2.cvtColor(small, cv2.COLOR_RGB2LAB).astype(np.float32)
    distance = _border_distance(lab)
    scaled = np.clip(distance * (255.0 / max(float(distance.max()), 1e-6)), 0, 255)
    _, foreground = cv2.threshold(
        scaled.astype(np.uint8), 0, 1, cv2.THRESH_BINARY + cv2.THRESH_OTSU
    )
    foreground = cv2.morphologyEx(foreground, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    count, labels, stats, _ = cv2.connectedComponentsWithStats(foreground, connectivity=8)
    if count < 2:
        return None
    best = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    if stats[best, cv2.CC_STAT_AREA] < min_area_fraction * size[0] * size[1]:
        return None
    inside = labels == best
    if float(distance[inside].mean()) < min_contrast:
        return None
    region = inside.astype(np.float32)
    mask: BoolMask = cv2.resize(region, (width, height), interpolation=cv2.INTER_LINEAR) > 0.5
    return mask if mask.any() else None


def fallback_instance(
    image: npt.NDArray[np.uint8],
    proposals: Sequence[BoolMask],
    *,
    min_area_fraction: float,
    min_contrast: float,
) -> tuple[BoolMask | None, str]:
    """Return (an instance mask (H, W) bool or None, the reason) for an image without instances.

    Args:
        image: (H, W, 3) uint8 RGB.
        proposals: The divide's proposals, (H, W) bool each (none of them became an instance).
        min_area_fraction: Least area of a colour-contrast region, as a fraction of the image.
        min_contrast: Least mean Lab distance of that region to the border colours.
    """
    nonempty = [p for p in proposals if p.any()]
    if nonempty:
        largest = max(nonempty, key=lambda p: int(p.sum()))
        share = 100.0 * float(largest.mean())
        return largest, (
            f"no proposal reached the instance size; kept the divide's largest ({share:.1f} % "
            "of the image)"
        )
    region = contrast_segmentation(
        image, min_area_fraction=min_area_fraction, min_contrast=min_contrast
    )
    if region is not None:
        share = 100.0 * float(region.mean())
        return region, (
            f"the divide found no object; used a colour-contrast segmentation against the "
            f"border colours ({share:.1f} % of the image)"
        )
    return None, "no object found: no region stands out from the border colours"
