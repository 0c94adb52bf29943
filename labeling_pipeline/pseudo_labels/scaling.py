"""Working resolution of the pseudo-label stages: images in, masks back at the input's size.

The stages (features, cuts, conquer, GrabCut, NMS) cost time in proportion to pixels, but their
boundaries come from patch features and colour models that do not need every pixel of a large
image. `pseudo_label_image` therefore works on the image downscaled to
`PseudoLabelConfig.work_max_side` and brings every mask back to the input's size here (bilinear,
threshold 0.5: a boundary moves by less than one working pixel).
"""

from __future__ import annotations

import cv2
import numpy as np
import numpy.typing as npt

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


def _linear_taps(
    n_out: int, n_in: int, lo: int, hi: int
) -> tuple[int, npt.NDArray[np.intp], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Bilinear taps of the outputs that read source samples lo..hi-1 (one axis).

    The sampling is OpenCV's `resize` with INTER_LINEAR: output i reads the source at
    (i + 0.5) * scale - 0.5, clamped to the edges. Returns (first output, source index of the
    first tap relative to lo - 1 (a one-sample zero border), weight of the first tap, weight of
    the second), for the contiguous run of outputs whose taps touch [lo, hi).
    """
    scale = 1.0 / (n_out / n_in)
    position = ((np.arange(n_out, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    first = np.floor(position).astype(np.intp)
    fraction = position - first.astype(np.float32)
    low, high = first < 0, first >= n_in - 1
    first[low], fraction[low] = 0, 0.0
    first[high], fraction[high] = n_in - 1, 0.0
    touching = np.flatnonzero((first <= hi - 1) & (first + 1 >= lo))
    run = slice(int(touching[0]), int(touching[-1]) + 1) if touching.size else slice(0, 0)
    weight = fraction[run].astype(np.float32)
    return run.start, first[run] - lo + 1, (np.float32(1.0) - weight), weight


def upscale_framed(
    framed: BoolMask,
    top_left_yx: tuple[int, int],
    work_hw: tuple[int, int],
    out_hw: tuple[int, int],
) -> tuple[BoolMask, tuple[int, int]] | None:
    """Resize a mask given as a crop of a (h, w) working image to the (H, W) output size.

    The same bilinear resize and 0.5 threshold as `resize_mask` of the whole mask, computed only
    over the output window the crop can reach, so its cost follows the crop, not the image.

    Args:
        framed: (fh, fw) bool crop; pixels outside it are background.
        top_left_yx: (y, x) of the crop in the working image.
        work_hw: (h, w) of the working image.
        out_hw: (H, W) of the output.

    Returns:
        (crop at the output size (bool), its (y, x) in the output), trimmed to the foreground;
        None when nothing is left.
    """
    y0, x0 = top_left_yx
    fh, fw = framed.shape
    row0, rows, b0, b1 = _linear_taps(out_hw[0], work_hw[0], y0, y0 + fh)
    col0, cols, a0, a1 = _linear_taps(out_hw[1], work_hw[1], x0, x0 + fw)
    if rows.size == 0 or cols.size == 0:
        return None
    padded = np.zeros((fh + 2, fw + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = framed
    # horizontal pass, then vertical, as OpenCV does
    across = padded[:, cols] * a0 + padded[:, cols + 1] * a1
    values = across[rows] * b0[:, None] + across[rows + 1] * b1[:, None]
    big = values > 0.5
    ys, xs = np.flatnonzero(big.any(axis=1)), np.flatnonzero(big.any(axis=0))
    if ys.size == 0:
        return None
    trimmed: BoolMask = big[ys[0] : ys[-1] + 1, xs[0] : xs[-1] + 1]
    return trimmed, (row0 + int(ys[0]), col0 + int(xs[0]))
