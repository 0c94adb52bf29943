"""Request bodies of the playground routes, checked by pydantic before any work is done."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ml_backend.label_studio.schemas import MAX_CLICKS, Finite, Fraction, Granularity, LsId

SHA256_PATTERN = r"^[0-9a-f]{64}$"
"""An image id: the hex sha256 of the image file (the key of the content-addressed cache)."""

MAX_SWEEP_STEPS = 20
"""Granularities of one sweep: the slider's steps. Each is one row of the batched decoder call
and one mask in the answer."""

DEFAULT_SWEEP = tuple(round(0.1 * step, 1) for step in range(1, 11))
"""The slider's granularities, 0.1 to 1.0 in steps of 0.1."""

MAX_PLAYGROUND_POINTS_PER_SIDE = 16
"""Grid of the whole-image view: 16 x 16 = 256 one-click prompts; a small grid keeps the view
a few seconds at most on a CPU (the full 32 x 32 grid is for pre-annotation)."""

MAX_NAME_CHARS = 255
"""A file name of the playground folder (one path component on common file systems)."""

ImageId = Annotated[str, Field(strict=True, pattern=SHA256_PATTERN)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PointIn(_Strict):
    """One click: (x, y) in pixels of the displayed image, label 1 positive or 0 negative."""

    x: Finite
    y: Finite
    label: Literal[0, 1] = 1


class SweepRequest(_Strict):
    """Masks of one prompt set at every granularity of the slider."""

    image: ImageId
    points: Annotated[list[PointIn], Field(min_length=1, max_length=MAX_CLICKS)]
    granularities: Annotated[list[Granularity], Field(min_length=1, max_length=MAX_SWEEP_STEPS)] = (
        list(DEFAULT_SWEEP)
    )


class WholeImageRequest(_Strict):
    """Automatic masks of a small grid of clicks at one granularity."""

    image: ImageId
    granularity: Granularity
    points_per_side: Annotated[int, Field(strict=True, ge=1, le=MAX_PLAYGROUND_POINTS_PER_SIDE)] = 8
    pred_iou_thresh: Fraction = 0.7
    stability_score_thresh: Fraction = 0.9


class OpenFileRequest(_Strict):
    """A file of the playground folder, by the name the listing gave."""

    name: Annotated[str, Field(strict=True, min_length=1, max_length=MAX_NAME_CHARS)]


class OpenTaskRequest(_Strict):
    """A Label Studio task, by id; its first image is opened."""

    task: LsId
