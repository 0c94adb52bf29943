"""COCO run-length encoding through pycocotools, with validation of untrusted input.

A COCO RLE is ``{"size": [height, width], "counts": ...}`` over the column-major (Fortran) pixel
order; ``counts`` is the compressed ASCII string (as in COCO JSON files) or a list of run lengths
starting with a background run. pycocotools' C decoder writes runs without bounds checks, so
every RLE is checked (counts sum to height * width) before it is decoded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools import mask as mask_utils

from core_model.errors import InvalidMaskError

CocoRLE = dict[str, Any]


def _as_masks(masks: npt.ArrayLike) -> npt.NDArray[np.uint8]:
    array = np.asarray(masks)
    if array.ndim != 3 or 0 in array.shape:
        raise InvalidMaskError(f"masks must be a non-empty (N, H, W) array, got {array.shape}")
    return np.asfortranarray(np.moveaxis(array != 0, 0, -1).astype(np.uint8))


def encode_coco_rle(mask: npt.ArrayLike) -> CocoRLE:
    """Encode one (H, W) mask (non-zero = foreground) as compressed COCO RLE (str counts)."""
    array = np.asarray(mask)
    if array.ndim != 2:
        raise InvalidMaskError(f"mask must be 2-D (H, W), got shape {array.shape}")
    return encode_coco_rle_batch(array[None])[0]


def encode_coco_rle_batch(masks: npt.ArrayLike) -> list[CocoRLE]:
    """Encode (N, H, W) masks; returns N dicts with ``counts`` as ASCII strings (JSON-ready)."""
    encoded = mask_utils.encode(_as_masks(masks))
    return [
        {"size": [int(r["size"][0]), int(r["size"][1])], "counts": r["counts"].decode("ascii")}
        for r in encoded
    ]


def encode_coco_rle_placed(
    crop: npt.ArrayLike, top_left_yx: tuple[int, int], size_hw: tuple[int, int]
) -> CocoRLE:
    """Encode an (h, w) crop (non-zero = foreground) placed in an otherwise empty mask.

    Same result as `encode_coco_rle` of the full (H, W) mask, without building it in C order
    and converting it: the mask is written once, in the column-major order the encoder reads.

    Args:
        crop: (h, w) mask.
        top_left_yx: (y, x) of the crop's first pixel in the full mask.
        size_hw: (H, W) of the full mask; the crop must lie inside it.
    """
    array = np.asarray(crop)
    if array.ndim != 2:
        raise InvalidMaskError(f"crop must be 2-D (h, w), got shape {array.shape}")
    height, width = size_hw
    y, x = top_left_yx
    if height < 1 or width < 1 or y < 0 or x < 0:
        raise InvalidMaskError(f"cannot place a crop at {top_left_yx} in a {size_hw} mask")
    if y + array.shape[0] > height or x + array.shape[1] > width:
        raise InvalidMaskError(f"a {array.shape} crop at {top_left_yx} leaves a {size_hw} mask")
    full = np.zeros((height, width, 1), dtype=np.uint8, order="F")
    full[y : y + array.shape[0], x : x + array.shape[1], 0] = array != 0
    encoded = mask_utils.encode(full)[0]
    return {"size": [height, width], "counts": encoded["counts"].decode("ascii")}


def _string_counts(counts: str) -> list[int]:
    """Parse COCO's compressed counts string (6-bit chars, LEB128-like, delta from two back)."""
    runs: list[int] = []
    value = shift = 0
    for char in counts:
        code = ord(char) - 48
        if not 0 <= code < 64:
            raise InvalidMaskError(f"invalid character {char!r} in COCO RLE counts")
        value |= (code & 0x1F) << shift
        shift += 5
        if code & 0x20:
            continue
        if code & 0x10:
            value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
        value = shift = 0
    if shift:
        raise InvalidMaskError("COCO RLE counts string is truncated")
    return runs


def _checked(rle: Mapping[str, Any]) -> CocoRLE:
    """Return a pycocotools-ready RLE (bytes counts) after checking it describes H*W pixels."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise InvalidMaskError("COCO RLE must be a dict with 'size' and 'counts'")
    size = rle["size"]
    if (
        not isinstance(size, (list, tuple))
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)
    ):
        raise InvalidMaskError(f"COCO RLE size must be [height, width] > 0, got {size!r}")
    height, width = size
    counts = rle["counts"]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii", errors="replace")
    if isinstance(counts, str):
        runs = _string_counts(counts)
    elif isinstance(counts, (list, tuple)):
        if not all(isinstance(c, int) and not isinstance(c, bool) for c in counts):
            raise InvalidMaskError("uncompressed COCO RLE counts must be integers")
        runs = list(counts)
    else:
        raise InvalidMaskError(f"COCO RLE counts must be a string or a list, got {type(counts)}")
    if any(c < 0 for c in runs) or sum(runs) != height * width:
        raise InvalidMaskError(
            f"COCO RLE counts cover {sum(runs)} pixels with negative runs or not "
            f"{height}x{width} = {height * width}"
        )
    if isinstance(counts, str):
        return {"size": [height, width], "counts": counts.encode("ascii")}
    return mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)  # type: ignore[no-any-return]


def decode_coco_rle(rle: Mapping[str, Any]) -> npt.NDArray[np.bool_]:
    """Decode a COCO RLE (compressed or not) to an (H, W) bool mask.

    Raises:
        InvalidMaskError: malformed RLE or counts that do not cover height * width pixels.
    """
    return mask_utils.decode(_checked(rle)).astype(bool)  # type: ignore[no-any-return]


def coco_rle_area(rle: Mapping[str, Any]) -> int:
    """Return the foreground pixel count of a COCO RLE."""
    return int(mask_utils.area(_checked(rle)))


def coco_rle_bbox(rle: Mapping[str, Any]) -> list[float]:
    """Return the tight box [x, y, width, height] (COCO XYWH, pixels) of a COCO RLE."""
    return [float(v) for v in mask_utils.toBbox(_checked(rle))]
