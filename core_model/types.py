"""Value objects that cross package boundaries: prompts, predictions, embeddings.

Coordinates are always pixels of the *original* image, (x, y) order, x to the right and y down,
with the image spanning [0, width] x [0, height] (pixel centres at half-integers, as in SAM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from core_model.errors import GranularityError, InvalidPromptError

if TYPE_CHECKING:
    import torch

BoolMask = npt.NDArray[np.bool_]
"""An (H, W) bool mask in image pixels, True inside."""

GRANULARITY_MIN = 0.1
GRANULARITY_MAX = 1.0
# Values within this distance outside the range are clamped instead of rejected, so that float32
# round trips (0.1 -> 0.10000000149) and percentages computed by clients do not fail.
_GRANULARITY_TOLERANCE = 1e-6

PredictionMode = Literal["granularity", "sam2-multimask"]
"""How a mask was chosen: by the granularity modules, or (no trained granularity modules) by
picking among SAM-2's three multimask outputs by area rank."""


def validate_granularity(
    value: object, *, low: float = GRANULARITY_MIN, high: float = GRANULARITY_MAX
) -> float:
    """Return `value` as a float in [low, high], or raise `GranularityError`.

    Args:
        value: A real number (Python, numpy or 0-d tensor). Booleans and strings are rejected;
            parse strings at the adapter that received them.
        low: Smallest accepted value (0.1: finest parts).
        high: Largest accepted value (1.0: whole objects).

    Returns:
        The value as a Python float, clamped into [low, high] when it lies within 1e-6 outside.

    Raises:
        GranularityError: not a real number, NaN or infinite, or outside [low, high].
    """
    if isinstance(value, (bool, np.bool_, str, bytes)):
        raise GranularityError(
            f"granularity must be a number, got {type(value).__name__} {value!r}"
        )
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise GranularityError(
            f"granularity must be a number, got {type(value).__name__} {value!r}"
        ) from None
    if not math.isfinite(number):
        raise GranularityError(f"granularity must be finite, got {number}")
    if not (low - _GRANULARITY_TOLERANCE <= number <= high + _GRANULARITY_TOLERANCE):
        raise GranularityError(
            f"granularity must lie in [{low}, {high}] (fine parts .. whole objects), got {number}"
        )
    return min(max(number, low), high)


def granularity_or_none(value: object) -> float | None:
    """Return `value` as a valid granularity (see `validate_granularity`), or None if it is not.

    For readers of stored or third-party data, where a bad value means "unknown", not an error.
    """
    try:
        return validate_granularity(value)
    except GranularityError:
        return None


def _check_finite(name: str, *values: float) -> None:
    for v in values:
        if not math.isfinite(v):
            raise InvalidPromptError(f"{name} coordinates must be finite numbers, got {values}")


@dataclass(frozen=True)
class Point:
    """A click: (x, y) in original-image pixels and a label, 1 positive or 0 negative."""

    x: float
    y: float
    label: int = 1

    def __post_init__(self) -> None:
        _check_finite("point", self.x, self.y)
        if self.label not in (0, 1):
            raise InvalidPromptError(
                f"point label must be 1 (positive) or 0 (negative), got {self.label!r}"
            )


@dataclass(frozen=True)
class Box:
    """A box (x0, y0, x1, y1) in original-image pixels, x0 < x1 and y0 < y1."""

    x0: float
    y0: float
    x1: float
    y1: float

    def __post_init__(self) -> None:
        _check_finite("box", self.x0, self.y0, self.x1, self.y1)
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise InvalidPromptError(
                "box must be (x0, y0, x1, y1) with x0 < x1 and y0 < y1, got "
                f"({self.x0}, {self.y0}, {self.x1}, {self.y1})"
            )

    def as_array(self) -> npt.NDArray[np.float32]:
        """Return the box as a (4,) float32 array (x0, y0, x1, y1)."""
        return np.array([self.x0, self.y0, self.x1, self.y1], dtype=np.float32)


@dataclass(frozen=True)
class Prompts:
    """One prompt set for one object: clicks and/or a box. At least one of them is required."""

    points: tuple[Point, ...] = ()
    box: Box | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        if not self.points and self.box is None:
            raise InvalidPromptError("prompts are empty: give at least one point or a box")
        for p in self.points:
            if not isinstance(p, Point):
                raise InvalidPromptError(f"points must be Point objects, got {type(p).__name__}")

    @classmethod
    def from_arrays(
        cls,
        point_coords: npt.ArrayLike | None = None,
        point_labels: npt.ArrayLike | None = None,
        box: npt.ArrayLike | None = None,
    ) -> Prompts:
        """Build prompts from arrays.

        Args:
            point_coords: (N, 2) float, (x, y) pixels in the original image; or None.
            point_labels: (N,) integers, 1 positive / 0 negative; required with `point_coords`.
            box: (4,) float (x0, y0, x1, y1) pixels; or None.

        Raises:
            InvalidPromptError: shapes disagree, labels are not 0/1, or nothing is given.
        """
        points: list[Point] = []
        if point_coords is not None:
            coords = np.asarray(point_coords, dtype=np.float64)
            if coords.ndim != 2 or coords.shape[1] != 2:
                raise InvalidPromptError(f"point_coords must have shape (N, 2), got {coords.shape}")
            if point_labels is None:
                raise InvalidPromptError("point_labels are required with point_coords")
            labels = np.asarray(point_labels)
            if labels.shape != (coords.shape[0],):
                raise InvalidPromptError(
                    f"point_labels must have shape ({coords.shape[0]},), got {labels.shape}"
                )
            for (x, y), raw in zip(coords.tolist(), labels.tolist(), strict=True):
                if raw not in (0, 1):
                    raise InvalidPromptError(
                        f"point labels must be 1 (positive) or 0 (negative), got {raw!r}"
                    )
                points.append(Point(float(x), float(y), int(raw)))
        elif point_labels is not None:
            raise InvalidPromptError("point_labels given without point_coords")
        box_obj = None
        if box is not None:
            values = np.asarray(box, dtype=np.float64).reshape(-1)
            if values.shape != (4,):
                raise InvalidPromptError(f"box must have 4 values (x0, y0, x1, y1), got {values}")
            box_obj = Box(*(float(v) for v in values))
        return cls(points=tuple(points), box=box_obj)

    def coords_array(self) -> npt.NDArray[np.float32]:
        """Return the clicks as (N, 2) float32, (x, y) original-image pixels."""
        return np.array([(p.x, p.y) for p in self.points], dtype=np.float32).reshape(-1, 2)

    def labels_array(self) -> npt.NDArray[np.int32]:
        """Return the click labels as (N,) int32, 1 positive / 0 negative."""
        return np.array([p.label for p in self.points], dtype=np.int32)

    def check_inside(self, height: int, width: int) -> None:
        """Raise `InvalidPromptError` if a point or the box leaves [0, width] x [0, height]."""
        for p in self.points:
            if not (0.0 <= p.x <= width and 0.0 <= p.y <= height):
                raise InvalidPromptError(
                    f"point ({p.x}, {p.y}) lies outside the {width}x{height} image "
                    "(x must be in [0, width], y in [0, height])"
                )
        b = self.box
        if b is not None and not (b.x0 >= 0.0 and b.y0 >= 0.0 and b.x1 <= width and b.y1 <= height):
            raise InvalidPromptError(
                f"box ({b.x0}, {b.y0}, {b.x1}, {b.y1}) leaves the {width}x{height} image"
            )


@dataclass(frozen=True, eq=False)
class MaskPrediction:
    """Masks for one prompt set at C granularities (C = 1 for `predict`).

    Attributes:
        masks: (C, H, W) bool, original image size.
        scores: (C,) float32, the model's predicted IoU of each mask.
        low_res_logits: (C, S/4, S/4) float32 logits in the model's square input frame
            (S = model image size, 1024 for real models), clamped to [-32, 32]; can be fed back
            as `mask_input`.
        granularities: C granularity values, one per mask.
        mode: "granularity", or "sam2-multimask" when the model has no trained granularity
            modules and SAM-2's multimask outputs were picked by area rank instead.
        model_version: Version of the model that produced the masks.
    """

    masks: npt.NDArray[np.bool_]
    scores: npt.NDArray[np.float32]
    low_res_logits: npt.NDArray[np.float32]
    granularities: tuple[float, ...]
    mode: PredictionMode
    model_version: str


@dataclass(frozen=True, eq=False)
class ImageEmbedding:
    """Image features computed once per image and model, reused for every click.

    Attributes:
        image_embed: (1, C, S/16, S/16) tensor, lowest-resolution features (no-memory embedding
            already added).
        high_res_features: the decoder's high-resolution features in its sub-pixel layout
            ((1, S/16, S/16, 4, 4, C/8), (1, S/16, S/16, 4, C/4)); see
            `core_model.modeling.subpixel`.
        original_hw: (height, width) of the original image in pixels.
        model_version: Version of the model that computed the features.
        key: Cache key (content hash, model version, preprocessing version).
    """

    image_embed: torch.Tensor
    high_res_features: tuple[torch.Tensor, ...]
    original_hw: tuple[int, int]
    model_version: str
    key: str = field(default="")

    @property
    def nbytes(self) -> int:
        """Return the memory held by the feature tensors, in bytes."""
        tensors = (self.image_embed, *self.high_res_features)
        return sum(int(t.numel()) * int(t.element_size()) for t in tensors)


def as_granularity_tuple(values: Sequence[object]) -> tuple[float, ...]:
    """Validate several granularities; raise `GranularityError` if empty or any is invalid."""
    if len(values) == 0:
        raise GranularityError("at least one granularity value is required")
    return tuple(validate_granularity(v) for v in values)
