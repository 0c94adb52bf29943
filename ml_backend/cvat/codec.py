"""Pure converters between CVAT's function protocol and `core_model` values.

Requests (built by CVAT's lambda manager): ``image`` is the frame file, base64; interactors add
``pos_points`` and ``neg_points`` (``[[x, y], ...]``, original-image pixels) and ``obj_bbox``
(``[[x1, y1], [x2, y2]]``, or ``[]``/``null``); ``threshold`` is present only when non-zero.

Clicks must lie on the frame; a box may reach past it (CVAT's UI does not clip the box the
user drags) and is clipped to the frame, and a box with no area left counts as no box. Both are
checked against the frame's size read from the file's header, before any pixel is decoded or
any embedding computed.

Replies: an interactor answers ``{"mask": rows of the cropped 0/1 mask, "bounds": [xtl, ytl,
xbr, ybr]}`` (inclusive corners, the crop's offset); when nothing is found it adds
``"points": []``, which makes CVAT's UI skip tracing an outline (it throws on a mask without a
contour) and draw nothing. A detector answers a list of shapes whose
``mask`` is the cropped mask flattened row-major followed by the inclusive corners (CVAT
run-length encodes it on its side) and whose ``points`` is the outline polygon, used by CVAT
when "convert masks to polygons" is on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import ExifTags, Image

from core_model.errors import InvalidImageError, InvalidPromptError
from core_model.imageio import load_image_rgb
from core_model.masks import mask_to_polygons
from core_model.types import Prompts
from ml_backend.errors import BadRequestError

ImageLoader = Callable[[], npt.NDArray[np.uint8]]

MAX_CLICKS = 100
"""Clicks (positive plus negative) in one interactor request: each is a prompt token of the
mask decoder; SAM is trained with up to a few dozen."""

EMPTY_MASK_MESSAGE = (
    "no object found at these prompts; add a positive point on the object or try another "
    "granularity preset"
)


def _shown(value: object) -> str:
    """A short repr of a client's value for an error message (values can be huge)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height


@dataclass(frozen=True, eq=False)
class Frame:
    """A request's frame file, not yet decoded.

    Attributes:
        key: ``file:<sha256 of the bytes>``, the embedding cache key.
        data: The file's bytes.
        max_pixels: Largest accepted image (H * W).
    """

    key: str
    data: bytes
    max_pixels: int

    def load(self) -> npt.NDArray[np.uint8]:
        """Decode the pixels: (H, W, 3) uint8 RGB, EXIF orientation applied.

        Raises:
            InvalidImageError: unreadable file, or more than `max_pixels` pixels.
        """
        return load_image_rgb(self.data, max_pixels=self.max_pixels)

    def size(self) -> tuple[int, int]:
        """Return (height, width) of the decoded image from the file's header alone.

        EXIF orientation is applied as `load` applies it (orientations 5-8 swap the sides).

        Raises:
            InvalidImageError: unreadable header, or more than `max_pixels` pixels.
        """
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                opened = Image.open(io.BytesIO(self.data))
                width, height = opened.size
                orientation = _orientation(opened)
        except Image.DecompressionBombError:
            raise InvalidImageError(
                f"image <bytes> has more pixels than the limit {self.max_pixels}"
            ) from None
        except (OSError, SyntaxError, ValueError):
            raise InvalidImageError(
                "cannot decode image <bytes>: not a recognised image format"
            ) from None
        if width * height > self.max_pixels:
            raise InvalidImageError(
                f"image <bytes> has {width}x{height} pixels, more than the limit {self.max_pixels}"
            )
        return (width, height) if orientation in _TRANSPOSED else (height, width)


def _orientation(opened: Image.Image) -> int:
    """EXIF orientation of an opened image (1 when absent), read without decoding pixels."""
    if opened.format == "PNG":  # PIL's PNG getexif() may decode the image to find the chunk
        raw = opened.info.get("exif")
        if not isinstance(raw, bytes):
            return 1
        exif = Image.Exif()
        exif.load(raw)
    else:
        exif = opened.getexif()
    value = exif.get(ExifTags.Base.Orientation, 1)
    return value if isinstance(value, int) else 1


def decode_frame(body: Mapping[str, Any], *, max_pixels: int) -> Frame:
    """Return the request's frame: its content key, its bytes, undecoded.

    The key is the sha256 of the decoded file bytes (``file:<hex>``, as the Label Studio
    backend keys files), so follow-up clicks on the same frame reuse the cached embedding and
    the image is decoded only on a cache miss.

    Raises:
        BadRequestError: no ``image`` string, or it is not valid base64.
    """
    encoded = body.get("image")
    if not isinstance(encoded, str) or not encoded.strip():
        raise BadRequestError("the request has no 'image' (the frame as a base64 string)")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequestError("'image' is not valid base64") from None
    if not data:
        raise BadRequestError("'image' decodes to an empty file")
    return Frame("file:" + hashlib.sha256(data).hexdigest(), data, max_pixels)


def decode_image(body: Mapping[str, Any], *, max_pixels: int) -> tuple[str, ImageLoader]:
    """Return a content key of the frame and a lazy loader of its pixels.

    The key is the sha256 of the decoded file bytes (``file:<hex>``, as the Label Studio
    backend keys files), so follow-up clicks on the same frame reuse the cached embedding and
    the image is decoded only on a cache miss.

    Args:
        body: The request; ``body["image"]`` is the base64 image file (JPEG, PNG, ...).
        max_pixels: Largest accepted image (H * W), checked before pixels are decoded.

    Returns:
        (key, loader); the loader returns (H, W, 3) uint8 RGB, EXIF orientation applied, and
        raises `InvalidImageError` for an unreadable or too large image.

    Raises:
        BadRequestError: no ``image`` string, or it is not valid base64.
    """
    frame = decode_frame(body, max_pixels=max_pixels)
    return frame.key, frame.load


def _points(body: Mapping[str, Any], name: str) -> npt.NDArray[np.float64]:
    raw = body.get(name)
    if raw is None:
        return np.zeros((0, 2), dtype=np.float64)
    try:
        array = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise BadRequestError(f"'{name}' must be a list of [x, y] pixel pairs") from None
    if array.size == 0:
        return np.zeros((0, 2), dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise BadRequestError(
            f"'{name}' must be a list of [x, y] pixel pairs, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise BadRequestError(f"'{name}' has a coordinate that is not a finite number")
    return array


def _box(body: Mapping[str, Any]) -> npt.NDArray[np.float64] | None:
    raw = body.get("obj_bbox")
    if raw is None:
        return None
    try:
        values = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError):
        raise BadRequestError("'obj_bbox' must be [[x1, y1], [x2, y2]] in pixels") from None
    if values.size == 0:
        return None
    if values.size != 4 or not np.isfinite(values).all():
        raise BadRequestError(
            f"'obj_bbox' must be [[x1, y1], [x2, y2]] in pixels, got {_shown(raw)}"
        )
    (x1, y1), (x2, y2) = values.reshape(2, 2)
    # the corners are the two ends of the user's drag, in any order
    return np.array([min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)])


def clip_box(
    box: npt.NDArray[np.float64] | None, height: int, width: int
) -> npt.NDArray[np.float64] | None:
    """Clip an (x0, y0, x1, y1) box to the [0, width] x [0, height] frame.

    Returns:
        The clipped box, or None when there is no box or nothing of it is left (zero width
        or height).
    """
    if box is None:
        return None
    clipped = np.clip(box, 0.0, [width, height, width, height])
    if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
        return None
    return clipped


def decode_prompts(body: Mapping[str, Any], *, height: int, width: int) -> Prompts:
    """Build prompts from an interactor request on a `height` x `width` frame.

    The box is clipped to the frame (`clip_box`); clicks must lie on it.

    Returns:
        Positive clicks (label 1), then negative clicks (label 0), (x, y) original-image
        pixels, and the optional box (x0, y0, x1, y1).

    Raises:
        BadRequestError: malformed points or box, or more than `MAX_CLICKS` clicks.
        InvalidPromptError: a click off the frame, or no click and no box left on the frame.
    """
    positive, negative = _points(body, "pos_points"), _points(body, "neg_points")
    if len(positive) + len(negative) > MAX_CLICKS:
        raise BadRequestError(
            f"at most {MAX_CLICKS} clicks per request, got {len(positive) + len(negative)}"
        )
    raw_box = _box(body)
    box = clip_box(raw_box, height, width)
    coords = np.concatenate([positive, negative])
    if not len(coords) and box is None:
        raise InvalidPromptError(
            "prompts are empty: give at least one point or a box"
            if raw_box is None
            else f"the box has no area on the {width}x{height} image; draw it on the image"
        )
    labels = np.concatenate([np.ones(len(positive)), np.zeros(len(negative))]).astype(np.int32)
    prompts = Prompts.from_arrays(
        coords if len(coords) else None, labels if len(coords) else None, box
    )
    prompts.check_inside(height, width)
    return prompts


def decode_threshold(body: Mapping[str, Any]) -> float | None:
    """Return the detector's confidence threshold in [0, 1], or None when absent.

    Raises:
        BadRequestError: not a number in [0, 1].
    """
    raw = body.get("threshold")
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError):
        raise BadRequestError(
            f"'threshold' must be a number in [0, 1], got {_shown(raw)}"
        ) from None
    if not 0.0 <= value <= 1.0:
        raise BadRequestError(f"'threshold' must be a number in [0, 1], got {_shown(raw)}")
    return value


def crop_to_mask(
    mask: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.uint8], tuple[int, int, int, int]] | None:
    """Crop an (H, W) mask to its tight box.

    Returns:
        (crop (h, w) uint8 0/1, (xtl, ytl, xbr, ybr) inclusive pixel corners), or None when
        the mask is empty.
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    ytl, ybr, xtl, xbr = int(rows[0]), int(rows[-1]), int(cols[0]), int(cols[-1])
    crop = mask[ytl : ybr + 1, xtl : xbr + 1].astype(np.uint8)
    return crop, (xtl, ytl, xbr, ybr)


def _anchor(prompts: Prompts, height: int, width: int) -> tuple[int, int]:
    """Integer pixel of the first positive click, else the box's top-left, else (0, 0)."""
    positive = [p for p in prompts.points if p.label == 1]
    if positive:
        x, y = positive[0].x, positive[0].y
    elif prompts.box is not None:
        x, y = prompts.box.x0, prompts.box.y0
    else:
        x, y = 0.0, 0.0
    return min(max(int(x), 0), width - 1), min(max(int(y), 0), height - 1)


def interactor_reply(mask: npt.NDArray[np.bool_], prompts: Prompts) -> dict[str, Any]:
    """Encode an interactor answer.

    Args:
        mask: (H, W) bool, original image size.
        prompts: The request's prompts (they place the answer when the mask is empty).

    Returns:
        ``{"mask": rows of the 0/1 crop, "bounds": [xtl, ytl, xbr, ybr]}`` (inclusive). An
        empty mask gives a one-pixel background crop at the first positive click, an empty
        ``points`` list (CVAT's UI then skips its outline step, which throws on a mask without
        a contour, and draws nothing) and a ``message`` saying why (the UI ignores it).
    """
    cropped = crop_to_mask(mask)
    if cropped is None:
        x, y = _anchor(prompts, *mask.shape)
        return {
            "mask": [[0]],
            "bounds": [x, y, x, y],
            "points": [],
            "message": EMPTY_MASK_MESSAGE,
        }
    crop, bounds = cropped
    return {"mask": crop.tolist(), "bounds": list(bounds)}


def polygon_points(mask: npt.NDArray[np.bool_], *, tolerance_px: float) -> list[float] | None:
    """Return the largest outer contour of an (H, W) mask as flat [x1, y1, x2, y2, ...].

    Returns None when no polygon of at least 3 vertices exists (then CVAT keeps the mask).
    """
    polygons = mask_to_polygons(mask, tolerance_px=tolerance_px)
    if not polygons:
        return None
    largest = max(polygons, key=lambda p: _area(p))
    return [float(v) for v in largest.reshape(-1)]


def _area(polygon: npt.NDArray[np.float32]) -> float:
    x, y = polygon[:, 0].astype(np.float64), polygon[:, 1].astype(np.float64)
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def detector_shape(
    mask: npt.NDArray[np.bool_], score: float, *, label: str, tolerance_px: float = 1.0
) -> dict[str, Any] | None:
    """Encode one detected mask as a CVAT detector shape, or None if the mask is empty.

    Args:
        mask: (H, W) bool, original image size.
        score: Confidence in [0, 1] (the predicted IoU), sent as a string.
        label: A label name of the function's spec.
        tolerance_px: Simplification of the outline polygon in ``points``.

    Returns:
        ``{"label", "type": "mask", "mask": [crop 0/1 row-major..., xtl, ytl, xbr, ybr],
        "points": [x1, y1, ...], "confidence": "0.87"}``; ``points`` is left out when the
        mask has no polygon of 3 or more vertices.
    """
    cropped = crop_to_mask(mask)
    if cropped is None:
        return None
    crop, bounds = cropped
    shape: dict[str, Any] = {
        "label": label,
        "type": "mask",
        "mask": [*crop.reshape(-1).tolist(), *bounds],
        "confidence": f"{score:.2f}",
    }
    points = polygon_points(mask, tolerance_px=tolerance_px)
    if points is not None:
        shape["points"] = points
    return shape
