"""Run one video tracking request: prompt keyframe boxes, propagate, collect mask boxes.

Kept apart from the Label Studio request handling (`video_predict`) so that it can be tested
with any frame source. Each model step (a keyframe prompt, or one frame of all objects) holds
the process's encode lane (`ml_backend.video_access`), so other requests interleave
between frames.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from core_model.errors import FrameIndexError, VideoReadError
from core_model.modeling.unsamv2 import UnSAMv2Model
from core_model.types import Prompts
from core_model.video.frames import FrameSource
from core_model.video.predictor import VideoPredictor, VideoSession
from ml_backend.errors import BadRequestError
from ml_backend.label_studio.video_convert import VideoObject, keyframe_box_px, mask_box_pct
from ml_backend.video_access import Lane

logger = logging.getLogger(__name__)

BoxPct = tuple[float, float, float, float]


@dataclass(frozen=True)
class TrackRun:
    """What one tracking run found.

    Attributes:
        boxes: Per object (in the order given): (frame, (x, y, width, height) percent or None
            where the mask is empty) per tracked frame; frames 1-based as in Label Studio.
        scores: Per object: mean visibility probability (sigmoid of the object score) over the
            tracked frames.
        frames: Frames tracked.
        cut_off: The last tracked frame is not the clip's last frame.
        partial: Stopped early by the deadline or an unreadable frame (not by the frame limit).
    """

    boxes: list[list[tuple[int, BoxPct | None]]]
    scores: list[float]
    frames: int
    cut_off: bool
    partial: bool


def _prompt(session: VideoSession, objects: Sequence[VideoObject], lane: Lane) -> None:
    height, width = session.size
    for obj_id, obj in enumerate(objects):
        for keyframe in obj.keyframes:
            box = keyframe_box_px(keyframe, height, width)
            with lane():
                session.add_prompts(keyframe.frame - 1, obj_id, Prompts(box=box), obj.granularity)


def _check_span(objects: Sequence[VideoObject], max_frames: int) -> int:
    """Return the first prompted frame index; refuse keyframes beyond the frame limit."""
    start = min(obj.first_frame for obj in objects) - 1
    last = max(k.frame for obj in objects for k in obj.keyframes) - 1
    if last - start > max_frames:
        raise BadRequestError(
            f"the keyframes span frames {start + 1} to {last + 1}, more than the "
            f"{max_frames} frames tracked at once (UNSAMV2_VIDEO_MAX_FRAMES)"
        )
    return start


def track_objects(
    model: UnSAMv2Model,
    lane: Lane,
    source: FrameSource,
    objects: Sequence[VideoObject],
    *,
    max_frames: int,
    deadline: float,
) -> TrackRun:
    """Track `objects` forwards from their first keyframe through `source`.

    Args:
        model: The serving model.
        lane: Makes the context held around each model step (`video_model_access`).
        source: The clip.
        objects: Regions to track (object ids are their positions).
        max_frames: Frames tracked beyond the first keyframe.
        deadline: `time.monotonic()` value after which no further frame is started.

    Raises:
        BadRequestError: keyframes spanning more than `max_frames`, or a box outside the frame.
        FrameIndexError: a keyframe past the clip's end.
        VideoReadError: a keyframe's frame cannot be decoded.
    """
    start = _check_span(objects, max_frames)
    session = VideoPredictor(model).open(source)
    boxes: list[list[tuple[int, BoxPct | None]]] = [[] for _ in objects]
    visible = np.zeros(len(objects))
    last, partial = start - 1, False
    try:
        _prompt(session, objects, lane)
        steps = session.propagate(start=start, max_frames=max_frames)
        while True:
            if last >= start and time.monotonic() > deadline:
                partial = True
                break
            try:
                with lane():
                    result = next(steps, None)
            except (FrameIndexError, VideoReadError) as exc:
                if last < start:  # not even the first frame: the request fails
                    raise
                logger.warning("video tracking stopped after frame %d: %s", last + 1, exc)
                partial = True
                break
            if result is None:
                break
            masks = result.masks()
            for row, obj_id in enumerate(result.obj_ids):
                boxes[obj_id].append((result.frame + 1, mask_box_pct(masks[row])))
            visible += 1 / (1 + np.exp(-result.object_scores.astype(np.float64)))
            last = result.frame
        cut_off = last < session.num_frames - 1
    finally:
        session.close()
    frames = max(last - start + 1, 0)
    scores = [float(v / frames) if frames else 0.0 for v in visible]
    return TrackRun(boxes, scores, frames, cut_off, partial)
