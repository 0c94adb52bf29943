"""CVAT tracker requests and shapes: validation, decoding to masks, encoding back.

CVAT's lambda manager sends a tracker ``{"image": <frame file, base64>, "shapes": [...],
"states": [...]}`` and passes the function's ``{"shapes": [...], "states": [...]}`` back to the
UI, one shape and one state per tracked object, in request order. CVAT's UI tracks rectangles
only and sends each as its flat ``points`` list ``[x1, y1, x2, y2]``; its first call for an
object has no ``states`` at all (CVAT then sends ``[]``) and it keeps only the states of that
answer. It maps every returned shape to the bounding box of its points.

Accepted shapes (anything else is refused with HTTP 400, one line):

- a flat list: 4 numbers are a rectangle ``[x1, y1, x2, y2]`` (corners in any order), 6 or more
  (an even count) a polygon ``[x1, y1, x2, y2, x3, y3, ...]``;
- an object ``{"type": "rectangle" | "polygon" | "mask", "points": [...]}`` (as cvat-sdk's
  ``TrackableShape``), where a mask's points are CVAT's mask encoding: run lengths over the
  mask's box, row-major, background run first, followed by ``xtl, ytl, xbr, ybr`` inclusive.

A reply shape has the form and type of its request shape: a rectangle is the tight box of the
tracked mask, a polygon its largest outer contour, a mask the mask in CVAT's encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import cv2
import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core_model.errors import InvalidPromptError
from ml_backend.cvat import codec
from ml_backend.errors import BadRequestError, validation_message

ShapeType = Literal["rectangle", "polygon", "mask"]
SHAPE_TYPES: tuple[ShapeType, ...] = ("rectangle", "polygon", "mask")
MAX_POINTS = 200_000
"""Numbers in one shape's ``points`` (a polygon's vertices or a mask's runs)."""

_Number = Annotated[float, Field(allow_inf_nan=False)]


class _TypedShape(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: str
    points: Annotated[list[_Number], Field(max_length=MAX_POINTS)]


class _TrackerRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    image: str
    shapes: list[Annotated[list[_Number], Field(max_length=MAX_POINTS)] | _TypedShape]
    states: list[Any] = []


@dataclass(frozen=True)
class TrackedShape:
    """One shape of a tracker request.

    Attributes:
        type: "rectangle", "polygon" or "mask".
        points: The shape's numbers as CVAT gives them (see the module docstring).
        typed: Whether it came as ``{"type", "points"}`` (the reply then has that form too).
    """

    type: ShapeType
    points: tuple[float, ...]
    typed: bool = False


@dataclass(frozen=True)
class TrackerRequest:
    """A validated tracker request.

    Attributes:
        shapes: One shape per tracked object.
        states: One state per shape: the string the tracker returned last time, or None
            (missing, null or not a string: tracking starts from the shape).
    """

    shapes: tuple[TrackedShape, ...]
    states: tuple[str | None, ...]


def parse_request(body: object, *, max_shapes: int) -> TrackerRequest:
    """Validate a tracker request body (the frame itself is read by `codec.decode_frame`).

    Raises:
        BadRequestError: not the expected shape, more than `max_shapes` shapes, a shape of
            another type than rectangle, polygon or mask, or malformed points.
    """
    try:
        parsed = _TrackerRequest.model_validate(body)
    except ValidationError as exc:
        raise BadRequestError(f"tracker request: {validation_message(exc)}") from None
    if len(parsed.shapes) > max_shapes:
        raise BadRequestError(
            f"at most {max_shapes} shapes per tracker request, got {len(parsed.shapes)}"
        )
    shapes = tuple(_shape(raw, index) for index, raw in enumerate(parsed.shapes))
    states = tuple(
        state if isinstance(state, str) and state else None
        for state in parsed.states[: len(shapes)]
    )
    return TrackerRequest(shapes, states + (None,) * (len(shapes) - len(states)))


def _shape(raw: list[float] | _TypedShape, index: int) -> TrackedShape:
    if isinstance(raw, list):
        if len(raw) == 4:
            return TrackedShape("rectangle", tuple(raw))
        if len(raw) >= 6 and len(raw) % 2 == 0:
            return TrackedShape("polygon", tuple(raw))
        raise BadRequestError(
            f"shapes[{index}] has {len(raw)} numbers: give a rectangle [x1, y1, x2, y2] or a "
            "polygon [x1, y1, x2, y2, x3, y3, ...]"
        )
    kind = raw.type.strip().lower()
    if kind not in SHAPE_TYPES:
        raise BadRequestError(
            f"shapes[{index}] is a {raw.type[:40]!r}: the tracker takes rectangle, polygon "
            "or mask shapes"
        )
    expected = {"rectangle": "== 4", "polygon": ">= 6, even", "mask": ">= 5"}[kind]
    count = len(raw.points)
    if (
        (kind == "rectangle" and count != 4)
        or (kind == "polygon" and (count < 6 or count % 2))
        or (kind == "mask" and count < 5)
    ):
        raise BadRequestError(
            f"shapes[{index}]: a {kind} needs {expected} numbers in 'points', got {count}"
        )
    return TrackedShape(kind, tuple(raw.points), typed=True)


# ----------------------------------------------------------------- shape -> mask or box


def rectangle_box(shape: TrackedShape, height: int, width: int) -> npt.NDArray[np.float64]:
    """Return the (x0, y0, x1, y1) box of a rectangle or polygon, clipped to the frame.

    Raises:
        InvalidPromptError: nothing of the shape lies on the `height` x `width` frame.
    """
    xy = np.asarray(shape.points, dtype=np.float64).reshape(-1, 2)
    box = np.array([xy[:, 0].min(), xy[:, 1].min(), xy[:, 0].max(), xy[:, 1].max()])
    clipped = codec.clip_box(box, height, width)
    if clipped is None:
        raise InvalidPromptError(
            f"the {shape.type} has no area on the {width}x{height} frame; draw it on the frame"
        )
    return clipped


def check_shape(shape: TrackedShape, height: int, width: int) -> None:
    """Check that a shape can prompt a `height` x `width` frame.

    Raises:
        InvalidPromptError: a rectangle or polygon with no area on the frame.
        BadRequestError: a malformed mask.
    """
    if shape.type == "mask":
        decode_cvat_mask(shape.points, height, width)
    else:
        rectangle_box(shape, height, width)


def polygon_mask(shape: TrackedShape, height: int, width: int) -> npt.NDArray[np.bool_]:
    """Rasterise a polygon's inside (its outline pixels included) as an (H, W) bool mask."""
    canvas = np.zeros((height, width), dtype=np.uint8)
    xy = np.round(np.asarray(shape.points, dtype=np.float64).reshape(-1, 2)).astype(np.int32)
    cv2.fillPoly(canvas, [xy.reshape(-1, 1, 2)], 1)
    return canvas.astype(bool)


def decode_cvat_mask(
    points: tuple[float, ...] | list[float], height: int, width: int
) -> npt.NDArray[np.bool_]:
    """Decode CVAT's mask encoding into an (H, W) bool mask of the frame.

    Args:
        points: Run lengths over the box (row-major, background first), then
            ``xtl, ytl, xbr, ybr`` inclusive pixel corners.
        height: Frame height H.
        width: Frame width W.

    Raises:
        BadRequestError: runs that do not fill the box, or a box not on the frame.
    """
    *runs, xtl, ytl, xbr, ybr = (float(v) for v in points)
    x0, y0, x1, y1 = (int(v) for v in (xtl, ytl, xbr, ybr))
    if (x0, y0, x1, y1) != (xtl, ytl, xbr, ybr) or not (0 <= x0 <= x1 and 0 <= y0 <= y1):
        raise BadRequestError(
            f"mask box {[xtl, ytl, xbr, ybr]} must be whole pixels xtl <= xbr, ytl <= ybr"
        )
    if x1 >= width or y1 >= height:
        raise BadRequestError(
            f"mask box {[x0, y0, x1, y1]} reaches past the {width}x{height} frame"
        )
    lengths = np.asarray(runs, dtype=np.float64)
    box_w, box_h = x1 - x0 + 1, y1 - y0 + 1
    if (lengths < 0).any() or (lengths != np.round(lengths)).any():
        raise BadRequestError("mask runs must be whole numbers >= 0")
    covered = float(lengths.sum())  # compared as a float: huge runs must not overflow
    if covered != box_w * box_h:
        raise BadRequestError(
            f"mask runs cover {covered:.0f} pixels, its {box_w}x{box_h} box has {box_w * box_h}"
        )
    values = np.repeat(np.arange(len(lengths)) % 2 == 1, lengths.astype(np.int64))
    mask = np.zeros((height, width), dtype=bool)
    mask[y0 : y1 + 1, x0 : x1 + 1] = values.reshape(box_h, box_w)
    return mask


def encode_cvat_mask(mask: npt.NDArray[np.bool_]) -> list[int] | None:
    """Encode an (H, W) bool mask in CVAT's mask encoding over its tight box.

    Returns:
        Run lengths (background first) then ``xtl, ytl, xbr, ybr`` inclusive, or None when the
        mask is empty.
    """
    cropped = codec.crop_to_mask(mask)
    if cropped is None:
        return None
    crop, bounds = cropped
    flat = crop.reshape(-1) != 0
    edges = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
    lengths = np.diff(np.concatenate([[0], edges, [flat.size]])).tolist()
    runs = ([0] if flat[0] else []) + [int(n) for n in lengths]
    return runs + list(bounds)


def mask_box(mask: npt.NDArray[np.bool_]) -> list[float] | None:
    """Return the rectangle [x0, y0, x1, y1] around an (H, W) mask's pixels, or None if empty.

    Pixel (x, y) covers [x, x + 1) x [y, y + 1), so a one-pixel mask is a 1 x 1 rectangle.
    """
    cropped = codec.crop_to_mask(mask)
    if cropped is None:
        return None
    _, (xtl, ytl, xbr, ybr) = cropped
    return [float(xtl), float(ytl), float(xbr + 1), float(ybr + 1)]


def encode_shape(
    mask: npt.NDArray[np.bool_], like: TrackedShape, *, tolerance_px: float = 1.0
) -> Any:
    """Encode a tracked (H, W) mask as a shape of the type and form of `like`.

    Returns:
        A flat list or ``{"type", "points"}`` (as `like` came), or `like` unchanged when the
        mask is empty or has no polygon of 3 or more vertices (the object was not found on
        this frame: it stays where it was last seen).
    """
    points: list[float] | list[int] | None
    if like.type == "rectangle":
        points = mask_box(mask)
    elif like.type == "polygon":
        points = codec.polygon_points(mask, tolerance_px=tolerance_px)
    else:
        points = encode_cvat_mask(mask)
    return shape_reply(like, points)


def shape_reply(like: TrackedShape, points: list[float] | list[int] | None = None) -> Any:
    """Return `points` (default: `like`'s own) in `like`'s form: flat list or typed object."""
    values: list[Any] = list(like.points) if points is None else points
    return {"type": like.type, "points": values} if like.typed else values
