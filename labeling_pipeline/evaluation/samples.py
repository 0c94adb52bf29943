"""Plain-value inputs of the evaluation harness and its errors.

An interactive sample is one object instance in one image: the image, its ground-truth mask and
an optional ignore mask (pixels labelled -1 in GrabCut-style data, excluded from IoU and never
clicked). A whole-image sample is an image with all its ground-truth masks (for AR@1000).
Tuples `(image, gt)` / `(image, gt, ignore)` and `(image, masks)` are accepted wherever these
classes are, so other code can feed plain arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.errors import UnSAMv2Error


class EvaluationError(UnSAMv2Error, ValueError):
    """Evaluation inputs are malformed (shapes, empty masks, unknown method or settings)."""


class DatasetError(EvaluationError):
    """An evaluation dataset cannot be read (missing files, bad JSON, size mismatches)."""


@dataclass(frozen=True, eq=False)
class EvalSample:
    """One instance to segment interactively.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        gt: (H, W) bool, True on the object.
        ignore: (H, W) bool, True on ignored pixels (label -1), or None.
        image_id: Identifier of the image (several instances may share it).
        instance_id: Identifier of the instance within the dataset.
        image_key: Content key for the embedding cache (equal keys = equal pixels), or None to
            hash the pixels.
    """

    image: npt.NDArray[np.uint8]
    gt: npt.NDArray[np.bool_]
    ignore: npt.NDArray[np.bool_] | None = None
    image_id: str = ""
    instance_id: str = ""
    image_key: str | None = None

    def __post_init__(self) -> None:
        image, gt = np.asarray(self.image), np.asarray(self.gt)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EvaluationError(
                f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}"
            )
        if gt.shape != image.shape[:2]:
            raise EvaluationError(f"gt shape {gt.shape} differs from image {image.shape[:2]}")
        object.__setattr__(self, "gt", gt.astype(bool, copy=False))
        if self.ignore is not None:
            ignore = np.asarray(self.ignore).astype(bool, copy=False)
            if ignore.shape != gt.shape:
                raise EvaluationError(f"ignore shape {ignore.shape} differs from gt {gt.shape}")
            object.__setattr__(self, "ignore", ignore)


@dataclass(frozen=True, eq=False)
class ImageSample:
    """One image with every ground-truth mask (class-agnostic), for AR@1000.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        masks: N (H, W) bool ground-truth masks.
        iscrowd: N flags (COCO crowd regions: matched but not counted), or empty for all 0.
        image_id: Identifier of the image.
        image_key: Content key for the embedding cache, or None.
    """

    image: npt.NDArray[np.uint8]
    masks: Sequence[npt.NDArray[np.bool_]]
    iscrowd: Sequence[bool] = field(default=())
    image_id: str = ""
    image_key: str | None = None

    def __post_init__(self) -> None:
        if self.iscrowd and len(self.iscrowd) != len(self.masks):
            raise EvaluationError(f"{len(self.iscrowd)} iscrowd flags for {len(self.masks)} masks")
        for mask in self.masks:
            if np.asarray(mask).shape != np.asarray(self.image).shape[:2]:
                raise EvaluationError("every gt mask must have the image's (H, W) shape")


def as_eval_sample(value: EvalSample | Sequence[Any], index: int = 0) -> EvalSample:
    """Return `value` as an `EvalSample`; tuples are (image, gt[, ignore]), ids from `index`."""
    if isinstance(value, EvalSample):
        return value
    if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
        raise EvaluationError("a sample is an EvalSample or a tuple (image, gt[, ignore])")
    ignore = value[2] if len(value) == 3 else None
    return EvalSample(value[0], value[1], ignore, image_id=str(index), instance_id=str(index))


def as_image_sample(value: ImageSample | Sequence[Any], index: int = 0) -> ImageSample:
    """Return `value` as an `ImageSample`; tuples are (image, masks), id from `index`."""
    if isinstance(value, ImageSample):
        return value
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise EvaluationError("an image sample is an ImageSample or a tuple (image, masks)")
    return ImageSample(value[0], list(value[1]), image_id=str(index))
