"""Working resolution of the pseudo-label stages: images in, masks back at the input's size.

The stages (features, cuts, conquer, GrabCut, NMS) cost time in proportion to pixels, but their
boundaries come from patch features and colour models that do not need every pixel of a large
image. `pseudo_label_image` therefore works on the image downscaled to
`PseudoLabelConfig.work_max_side` and brings every mask back to the input's size here (bilinear,
threshold 0.5: a boundary moves by less than one working pixel).
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from core_model.masks import box_xyxy_to_xywh, decode_coco_rle, encode_coco_rle, mask_to_box_xyxy
from core_model.types import BoolMask


def working_size(height: int, width: int, max_side: int | None) -> tuple[int, int]:
    """Return the (height, width) to work at: the input's, or shrunk to `max_side` long."""
    if max_side is None or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_image(image: npt.NDArray[np.uint8], size_hw: tuple[int, int]) -> npt.NDArray[np.uint8]:
    """Return an (H, W, 3) uint8 image resized to `size_hw` (area averaging when shrinking)."""
    if image.shape[:2] == size_hw:
        return image
    resized = cv2.resize(image, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_AREA)
    out: npt.NDArray[np.uint8] = np.asarray(resized, dtype=np.uint8)
    return out


def resize_mask(mask: BoolMask, size_hw: tuple[int, int]) -> BoolMask:
    """Return an (h, w) bool mask resized to `size_hw` (bilinear, threshold 0.5)."""
    if mask.shape == size_hw:
        return mask
    resized = cv2.resize(
        mask.astype(np.float32), (size_hw[1], size_hw[0]), interpolation=cv2.INTER_LINEAR
    )
    out: BoolMask = resized > 0.5
    return out


def upscale_rle(
    segmentation: dict[str, Any], size_hw: tuple[int, int]
) -> tuple[dict[str, Any], int, tuple[float, float, float, float]] | None:
    """Return (COCO RLE, area, box (x, y, w, h)) of an RLE mask resized to `size_hw`.

    None when the mask vanishes at that size.
    """
    big = resize_mask(decode_coco_rle(segmentation), size_hw)
    if not big.any():
        return None
    x, y, w, h = (float(v) for v in box_xyxy_to_xywh(mask_to_box_xyxy(big)))
    return encode_coco_rle(big), int(big.sum()), (x, y, w, h)
