"""Pure converters between Label Studio video results and tracking prompts and tracks.

Label Studio labels video objects with ``videorectangle`` results (``<VideoRectangle>`` on a
``<Video>``): ``value.sequence`` lists keyframes ``{frame, enabled, rotation, x, y, width,
height, time}`` with 1-based ``frame`` numbers and boxes in percent of the frame; the editor
interpolates between keyframes, and a keyframe with ``enabled: false`` ends the object's
visible span after that frame (a later enabled keyframe starts a new one). ``value.labels``
holds the label of the ``<Labels>`` control; ``framesCount`` and ``duration`` are the video's
as the browser measured them.

Prompts: every enabled keyframe the annotator drew or moved is a box prompt on its frame (Label
Studio frame ``n`` is decoded frame ``n - 1``). Tracked keyframes the backend wrote carry
``model_box``, their box as written (the editor keeps extra keyframe fields, also when a
keyframe is moved); a keyframe whose box still equals it is not a prompt, so tracking a track
again (another granularity, a corrected box on a later frame) starts from the drawn boxes
only. The region's granularity resolves as for image clicks:
per-region TextArea, per-region Number (results with the region's id), the label's ``level``
attribute, the project default.

Tracks: the returned sequence has one keyframe per tracked frame (nothing is thinned: the
editor then shows the model's box on every frame instead of an interpolation). Prompted frames
keep the annotator's own box. On the first frame where the object's mask is empty, the last
visible keyframe is set to ``enabled: false`` (the box is hidden from there); a frame where the
object is found again starts a new span. A track cut short (frame limit, deadline, end of a
truncated file) before the clip's end is closed the same way. ``time`` is ``frame / fps``,
which is what Label Studio's editor itself writes for a keyframe.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from core_model.types import Box, validate_granularity
from labeling_pipeline.label_studio.config import LabelConfigError, ProjectConfig
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.convert import parse_granularity_text
from ml_backend.label_studio.schemas import (
    MAX_CONTEXT_RESULTS,
    Finite,
    LabelList,
    NumberRegion,
    RegionId,
    Text,
    TextRegion,
    validate,
)

MAX_FRAME = 10_000_000
"""Largest frame number read (about 46 hours at 60 frames/s)."""

MAX_SEQUENCE = 100_000
"""Keyframes of one region read (a dense track of a long clip; the body limit bounds it too)."""

MAX_PROMPT_KEYFRAMES = 20
"""Enabled keyframes of one region used as prompts. Each is a conditioning frame of the
tracker; a region with more (e.g. an accepted dense track) is refused with a hint."""

MAX_VIDEO_OBJECTS = 10
"""Regions tracked in one request: each adds a memory and a mask decoding per frame."""


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Keyframe(_Lenient):
    """One ``value.sequence`` entry of a ``videorectangle`` result (percent of the frame)."""

    frame: Annotated[int, Field(ge=1, le=MAX_FRAME)]
    enabled: StrictBool = True
    x: Finite
    y: Finite
    width: Finite
    height: Finite
    rotation: Finite | None = None
    model_box: Annotated[list[Finite], Field(max_length=4)] | None = None

    @property
    def from_model(self) -> bool:
        """Whether this is a tracked keyframe as the backend wrote it (not drawn or moved)."""
        own = (self.x, self.y, self.width, self.height)
        return (
            self.model_box is not None
            and len(self.model_box) == 4
            and all(abs(a - b) <= 1e-6 for a, b in zip(own, self.model_box, strict=True))
        )


class VideoBoxValue(_Lenient):
    """``value`` of a ``videorectangle`` result."""

    sequence: Annotated[list[Keyframe], Field(max_length=MAX_SEQUENCE)]
    framesCount: Annotated[int, Field(ge=1, le=MAX_FRAME)] | None = None  # noqa: N815
    duration: Annotated[float, Field(ge=0.0, allow_inf_nan=False)] | None = None
    labels: LabelList | None = None


class VideoBoxRegion(_Lenient):
    """A ``videorectangle`` result."""

    id: RegionId = ""
    type: Literal["videorectangle"]
    from_name: Text = ""
    to_name: Text = ""
    value: VideoBoxValue


@dataclass(frozen=True)
class VideoObject:
    """One region to track, decoded.

    Attributes:
        region_id: The region's id (the tracked result keeps it: accepting replaces it).
        from_name: Its VideoRectangle control.
        to_name: Its Video tag.
        labels: Its labels (copied to the tracked result).
        keyframes: Enabled keyframes used as prompts, by frame (1-based, increasing).
        granularity: Resolved granularity.
        granularity_source: "textarea", "number", "level" or "default".
        frames_count: ``framesCount`` Label Studio sent, if any.
        duration: ``duration`` Label Studio sent (seconds), if any.
    """

    region_id: str
    from_name: str
    to_name: str
    labels: tuple[str, ...]
    keyframes: tuple[Keyframe, ...]
    granularity: float
    granularity_source: str
    frames_count: int | None
    duration: float | None

    @property
    def first_frame(self) -> int:
        """The first prompted frame (1-based)."""
        return self.keyframes[0].frame


def keyframe_box_pct(keyframe: Keyframe) -> tuple[float, float, float, float]:
    """Return (x0, y0, x1, y1) in percent, clipped to the frame (rotated: the enclosing box)."""
    x, y, w, h = keyframe.x, keyframe.y, keyframe.width, keyframe.height
    corners = np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]])
    theta = math.radians(keyframe.rotation or 0.0)
    turn = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    points = corners @ turn.T + [x, y]
    low = np.clip(points.min(axis=0), 0.0, 100.0)
    high = np.clip(points.max(axis=0), 0.0, 100.0)
    return float(low[0]), float(low[1]), float(high[0]), float(high[1])


def keyframe_box_px(keyframe: Keyframe, height: int, width: int) -> Box:
    """Return the keyframe's box in video pixels (x0, y0, x1, y1).

    Raises:
        BadRequestError: the box has no area inside the frame.
    """
    x0, y0, x1, y1 = keyframe_box_pct(keyframe)
    if not (x1 > x0 and y1 > y0):
        raise BadRequestError(
            f"the box on frame {keyframe.frame} has no area inside the frame; draw it again"
        )
    return Box(x0 / 100 * width, y0 / 100 * height, x1 / 100 * width, y1 / 100 * height)


def _granularity(
    region: VideoBoxRegion,
    checked: Sequence[NumberRegion | TextRegion],
    config: ProjectConfig,
    default_granularity: float,
) -> tuple[float, str]:
    texts = [r for r in checked if isinstance(r, TextRegion) and r.from_name in config.textareas]
    if texts:
        raw = texts[-1].value.text if texts[-1].value is not None else None
        entries = raw if isinstance(raw, list) else [raw or ""]
        return parse_granularity_text(entries[-1] if entries else ""), "textarea"
    numbers = [r for r in checked if isinstance(r, NumberRegion) and r.from_name in config.numbers]
    if numbers:
        value = numbers[-1].value.number if numbers[-1].value is not None else None
        if value is None:
            raise BadRequestError("the granularity slider has no value")
        return validate_granularity(value), "number"
    for label in reversed(region.value.labels or []):
        for control in config.video_labels.values():
            known = control.get(label)
            if known is not None and known.level is not None:
                return known.level, "level"
    return validate_granularity(default_granularity), "default"


def prompt_keyframes(region: VideoBoxRegion) -> list[Keyframe]:
    """The region's prompt keyframes, by frame: its first enabled one, and those drawn or moved.

    Tracked keyframes the backend wrote carry ``model_box`` (their box as written); one whose
    box still equals it is model output, not a prompt, unless it starts the region (its drawn
    keyframe was deleted): a track is tracked again from where it starts.
    """
    enabled = sorted((k for k in region.value.sequence if k.enabled), key=lambda k: k.frame)
    return [k for index, k in enumerate(enabled) if index == 0 or not k.from_model]


def _video_object(
    region: VideoBoxRegion,
    controls: Sequence[NumberRegion | TextRegion],
    config: ProjectConfig,
    default_granularity: float,
) -> VideoObject:
    if not any(box.name == region.from_name for box in config.video_boxes):
        raise LabelConfigError(
            f"the labeling config has no <VideoRectangle name={region.from_name!r}> on a <Video>"
        )
    keyframes = prompt_keyframes(region)
    if not keyframes:
        raise BadRequestError(
            f"region {region.id}: no enabled keyframe to track from; draw a box on a frame"
        )
    if len(keyframes) > MAX_PROMPT_KEYFRAMES:
        raise BadRequestError(
            f"region {region.id} has {len(keyframes)} drawn keyframes, more than the "
            f"{MAX_PROMPT_KEYFRAMES} used as prompts: delete some, or draw a new box"
        )
    mine = [c for c in controls if str(c.id) == str(region.id)]
    granularity, source = _granularity(region, mine, config, default_granularity)
    return VideoObject(
        region_id=str(region.id),
        from_name=region.from_name,
        to_name=region.to_name,
        labels=tuple(region.value.labels or ()),
        keyframes=tuple(keyframes),
        granularity=granularity,
        granularity_source=source,
        frames_count=region.value.framesCount,
        duration=region.value.duration,
    )


_MODELS: dict[str, type[VideoBoxRegion | NumberRegion | TextRegion]] = {
    "videorectangle": VideoBoxRegion,
    "number": NumberRegion,
    "textarea": TextRegion,
}


def parse_video_results(
    results: Sequence[Any],
    config: ProjectConfig,
    *,
    default_granularity: float,
    where: str = "params.context.result",
    skip_tracks: bool = False,
) -> list[VideoObject]:
    """Decode the ``videorectangle`` regions of a result list (context, draft or annotation).

    Args:
        results: The results.
        config: The parsed labeling config.
        default_granularity: Granularity of regions that carry none.
        where: Where the results come from (for messages).
        skip_tracks: Leave out regions with more than `MAX_PROMPT_KEYFRAMES` prompt keyframes
            (e.g. tracks written before keyframes were marked) instead of refusing them.

    Returns:
        One `VideoObject` per region, in the order of the results; empty if there is none.

    Raises:
        BadRequestError: a region of the wrong shape, without enabled keyframes, with too many
            keyframes, or more than `MAX_VIDEO_OBJECTS` regions.
        LabelConfigError: a region of a control the config does not have.
        GranularityError: a per-region granularity that is not a number in [0.1, 1.0].
    """
    if len(results) > MAX_CONTEXT_RESULTS * 10:
        raise BadRequestError(f"{where}: more than {MAX_CONTEXT_RESULTS * 10} results")
    checked = []
    for index, item in enumerate(results):
        kind = item.get("type") if isinstance(item, Mapping) else None
        model = _MODELS.get(kind) if isinstance(kind, str) else None
        if model is not None:
            checked.append(validate(model, item, where=f"{where}.{index}"))
    regions = [r for r in checked if isinstance(r, VideoBoxRegion)]
    if skip_tracks:
        regions = [r for r in regions if len(prompt_keyframes(r)) <= MAX_PROMPT_KEYFRAMES]
    if len(regions) > MAX_VIDEO_OBJECTS:
        raise BadRequestError(
            f"{len(regions)} video regions to track, more than {MAX_VIDEO_OBJECTS} at once"
        )
    controls = [r for r in checked if not isinstance(r, VideoBoxRegion)]
    return [_video_object(r, controls, config, default_granularity) for r in regions]


def mask_box_pct(mask: npt.NDArray[np.bool_]) -> tuple[float, float, float, float] | None:
    """Return (x, y, width, height) in percent of an (H, W) bool mask's box; None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    height, width = mask.shape
    x0, x1 = int(cols[0]), int(cols[-1]) + 1  # exclusive right and bottom edges
    y0, y1 = int(rows[0]), int(rows[-1]) + 1
    return (100 * x0 / width, 100 * y0 / height, 100 * (x1 - x0) / width, 100 * (y1 - y0) / height)


def _entry(frame: int, box: tuple[float, float, float, float], fps: float) -> dict[str, Any]:
    """A tracked keyframe, marked with ``model_box`` (see `Keyframe.from_model`)."""
    x, y, w, h = (round(value, 4) for value in box)
    return {
        "frame": frame,
        "enabled": True,
        "rotation": 0.0,
        "x": x,
        "y": y,
        "width": w,
        "height": h,
        "time": round(frame / fps, 6),
        "model_box": [x, y, w, h],
    }


def track_sequence(
    obj: VideoObject,
    boxes: Sequence[tuple[int, tuple[float, float, float, float] | None]],
    *,
    fps: float,
    cut_off: bool,
) -> list[dict[str, Any]]:
    """Return the ``value.sequence`` of a tracked object.

    Args:
        obj: The prompted object.
        boxes: (frame, (x, y, width, height) percent or None when the mask is empty) per tracked
            frame, frames 1-based and increasing.
        fps: Frames per second used for ``time``.
        cut_off: Tracking stopped before the clip's last frame: the track ends after the last
            tracked frame.
    """
    prompted = {k.frame: k for k in obj.keyframes}
    sequence: list[dict[str, Any]] = []
    for frame, box in boxes:
        keyframe = prompted.get(frame)
        if keyframe is not None:  # the annotator's own box, as drawn
            own = keyframe.model_dump(exclude={"model_box"}, exclude_none=True)
            sequence.append(
                {"rotation": 0.0, **own, "enabled": True, "time": round(frame / fps, 6)}
            )
        elif box is None:
            if sequence and sequence[-1]["enabled"]:
                sequence[-1]["enabled"] = False  # lost here: hidden from this frame on
        else:
            sequence.append(_entry(frame, box, fps))
    if cut_off and sequence:
        sequence[-1]["enabled"] = False
    return sequence


def video_box_result(
    obj: VideoObject,
    sequence: list[dict[str, Any]],
    *,
    frames_count: int,
    duration: float,
    score: float,
) -> dict[str, Any]:
    """Encode a track as a ``videorectangle`` result with the region's id, labels and names."""
    value: dict[str, Any] = {
        "framesCount": int(frames_count),
        "duration": round(float(duration), 6),
        "sequence": sequence,
    }
    if obj.labels:
        value["labels"] = list(obj.labels)
    return {
        "id": obj.region_id,
        "from_name": obj.from_name,
        "to_name": obj.to_name,
        "type": "videorectangle",
        "value": value,
        "score": round(float(score), 4),
        "readonly": False,
    }
