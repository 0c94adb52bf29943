"""Propagate one CVAT shape through a whole clip in one call (no CVAT server or SDK needed).

The core of the cvat-sdk tracking path (`ml_backend.cvat.sdk_tracking`) and of the tracker
functions' first frame (`ml_backend.cvat.tracker`): a rectangle or polygon on a keyframe is
given to the video predictor as its box (a box prompt at the granularity), a mask as itself
(the granularity is kept for propagation); the object is then tracked forwards to the clip's
end and, optionally, backwards to its start.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from typing import Any

from core_model.modeling.unsamv2 import UnSAMv2Model
from core_model.types import Prompts
from core_model.video.frames import FrameSource, check_frame_index
from core_model.video.predictor import FrameResult, VideoPredictor, VideoSession
from ml_backend.cvat import tracker_shapes as shapes

logger = logging.getLogger(__name__)

OBJECT_ID = 1


def prompt_shape(
    session: VideoSession, frame: int, shape: shapes.TrackedShape, granularity: float
) -> FrameResult:
    """Give a session the object `OBJECT_ID` as `shape` on `frame`.

    Raises:
        InvalidPromptError: a rectangle or polygon with no area on the frame.
        BadRequestError: a malformed mask.
    """
    height, width = session.size
    if shape.type == "mask":
        mask = shapes.decode_cvat_mask(shape.points, height, width)
        return session.add_mask(frame, OBJECT_ID, mask, granularity=granularity)
    box = shapes.rectangle_box(shape, height, width)
    return session.add_prompts(frame, OBJECT_ID, Prompts.from_arrays(box=box), granularity)


def _steps(
    session: VideoSession, keyframe: int, *, backwards: bool, lane: Callable[[], Any]
) -> Iterator[FrameResult]:
    """Yield the results after the keyframe (forwards), then before it (backwards)."""
    runs = [session.propagate(start=keyframe)]
    if backwards:
        runs.append(session.propagate(start=keyframe, reverse=True))
    for run in runs:
        while True:
            with lane():  # one frame at a time: other model users get their turn between frames
                result = next(run, None)
            if result is None:
                break
            if result.frame != keyframe:
                yield result


def propagate_shape(
    model: UnSAMv2Model,
    source: FrameSource,
    keyframe: int,
    shape: shapes.TrackedShape,
    granularity: float,
    *,
    backwards: bool = True,
    lane: Callable[[], Any] = nullcontext,
    polygon_tolerance_px: float = 1.0,
) -> dict[int, Any | None]:
    """Track a shape from a keyframe through every frame of a clip.

    Args:
        model: The model (the serving one: no second model is built).
        source: The clip's frames, read one at a time.
        keyframe: Index of the frame `shape` is drawn on.
        shape: A rectangle, polygon or mask (see `ml_backend.cvat.tracker_shapes`).
        granularity: In [0.1, 1]; 0.1 fine parts, 1.0 whole objects.
        backwards: Also track from the keyframe back to frame 0.
        lane: A context held around each model step (the serving process's encode lane).
        polygon_tolerance_px: Simplification of polygons.

    Returns:
        {frame index: shape in the type and form of `shape`, or None where the object is not
        found}, in frame order; the keyframe maps to `shape` itself.

    Raises:
        FrameIndexError: `keyframe` is not a frame of the clip.
        InvalidPromptError, BadRequestError: see `prompt_shape`.
    """
    keyframe = check_frame_index(keyframe, source.num_frames)
    started = time.perf_counter()
    session = VideoPredictor(model).open(source)
    found: dict[int, Any | None] = {keyframe: shapes.shape_reply(shape)}
    try:
        with lane():
            prompt_shape(session, keyframe, shape, granularity)
        for result in _steps(session, keyframe, backwards=backwards, lane=lane):
            mask = result.masks()[0]
            found[result.frame] = (
                shapes.encode_shape(mask, shape, tolerance_px=polygon_tolerance_px)
                if mask.any()
                else None
            )
    finally:
        session.close()
    lost = sum(value is None for value in found.values())
    logger.info(
        "tracked a %s from frame %d over %d frame(s) (%d without the object) in %.1f s",
        shape.type,
        keyframe,
        len(found),
        lost,
        time.perf_counter() - started,
    )
    return dict(sorted(found.items()))
