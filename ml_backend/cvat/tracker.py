"""A CVAT tracker: follow each shape from frame to frame with SAM-2's video memory.

Every tracked shape has its own server-side `VideoSession` over a short `FrameList` (the
session's frames are pushed one per call; only the last few are kept, and the session's memory
bank is bounded by the core), stored in a `SessionStore` behind a signed state key
(`ml_backend.cvat.tracker_sessions`). Per shape and call:

- no usable state (none, forged, expired, evicted, replayed, another function's, another
  frame size or model version): a new session starts on this frame from the shape (rectangle
  or polygon: its box as a box prompt at the preset's granularity; mask: the mask itself, the
  granularity kept for propagation); the shape is returned unchanged with a new state;
- a state of the current step: the frame is pushed into the session and tracked one step; the
  reply is the tracked mask as a shape of the request shape's type, with the next state. An
  object the model does not find on the frame keeps the request's shape (CVAT's UI maps every
  reply to a box and cannot take an empty one), and its session goes on, so it is picked up
  again when it reappears.

Model work runs in the encode lane of the process's model door (`ml_backend.model_door`): a
tracking step is an image encoder run plus light memory work, so it queues with the other
encoder runs and clicks on already embedded images do not wait behind it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from core_model.imageio import MAX_IMAGE_PIXELS
from core_model.modeling.unsamv2 import UnSAMv2Model
from core_model.serving import MaskPredictor
from core_model.video.frames import FrameList
from core_model.video.predictor import VideoPredictor, VideoSession
from ml_backend.cvat import tracker_shapes as shapes
from ml_backend.cvat.track_propagation import prompt_shape
from ml_backend.cvat.tracker_sessions import Entry, SessionStore, StateSigner
from ml_backend.video_access import video_model_access

logger = logging.getLogger(__name__)

FRAMES_KEPT = 3
"""Frames kept per session. A session reads only the newest frame and, at its first step, the
prompted one: memories are kept as features (bounded by the core), not as frames, so holding
``num_maskmem`` frames would only cost memory (7 x 6 MB per session at 1080p)."""


@dataclass(eq=False)
class Track:
    """One tracked object's session.

    Attributes:
        session: The video session (one object, `track_propagation.OBJECT_ID`).
        frames: Its frames, the newest few only.
        model_version: The weights it runs on (another version restarts the track).
    """

    session: VideoSession
    frames: FrameList
    model_version: str

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of its frames."""
        return self.frames.size

    def close(self) -> None:
        """Release memories, features and frames."""
        self.session.close()
        self.frames.close()


class CvatTracker:
    """The tracker functions' state and logic (one instance serves every tracker preset).

    Args:
        max_sessions: Tracked shapes kept at once (also the most shapes per request).
        ttl_s: Idle time after which a shape's session and state expire.
        secret: State signing key (None: random per process, with a warning).
        max_image_pixels: Largest frame.
        polygon_tolerance_px: Simplification of reply polygons.
        clock: Unix time (state expiry); tests pass their own.
        monotonic: Idle-time clock; tests pass their own.
    """

    def __init__(
        self,
        *,
        max_sessions: int = 16,
        ttl_s: float = 600.0,
        secret: str | bytes | None = None,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        polygon_tolerance_px: float = 1.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.signer = StateSigner(secret, clock=clock)
        self.store: SessionStore[Track] = SessionStore(
            max_sessions, ttl_s, close=Track.close, monotonic=monotonic
        )
        self.max_image_pixels = max_image_pixels
        self.polygon_tolerance_px = polygon_tolerance_px

    def track(
        self,
        request: shapes.TrackerRequest,
        frame: npt.NDArray[np.uint8],
        *,
        predictor: MaskPredictor,
        model_version: str,
        function: str,
        granularity: float,
    ) -> dict[str, list[Any]]:
        """Answer one tracker call.

        Args:
            request: The validated shapes and states.
            frame: (H, W, 3) uint8 RGB, the frame the shapes are to be found on.
            predictor: The serving predictor (its model tracks; its door serialises).
            model_version: Its weights' version.
            function: The function's name (states are bound to it).
            granularity: The preset's granularity in [0.1, 1].

        Returns:
            ``{"shapes": [...], "states": [...]}``, one of each per request shape.

        Raises:
            InvalidPromptError: a shape with no area on the frame.
            BadRequestError: a malformed mask.
            ModelBusyError: the model's queue is full.
        """
        model, lane = video_model_access(predictor)
        for shape in request.shapes:  # refuse a bad shape before any model work
            shapes.check_shape(shape, *frame.shape[:2])
        started, counts = time.perf_counter(), {"new": 0, "tracked": 0, "lost": 0}
        replies, states = [], []
        for shape, state in zip(request.shapes, request.states, strict=True):
            found = self._continuable(state, function, frame, model_version)
            step = self._continue(found, lane, shape, frame, function) if found else None
            if step is None:
                reply, key = self._start(
                    model, lane, shape, frame, function, granularity, model_version
                )
                counts["new"] += 1
            else:
                reply, key, visible = step
                counts["tracked" if visible else "lost"] += 1
            replies.append(reply)
            states.append(key)
        logger.info(
            "cvat tracker %s: %d shape(s): %d new, %d tracked, %d not found, in %.0f ms",
            function,
            len(replies),
            counts["new"],
            counts["tracked"],
            counts["lost"],
            (time.perf_counter() - started) * 1000,
        )
        return {"shapes": replies, "states": states}

    def _continuable(
        self,
        state: str | None,
        function: str,
        frame: npt.NDArray[np.uint8],
        model_version: str,
    ) -> tuple[Entry[Track], int] | None:
        """The stored session a state continues, with the step it must still be at."""
        key = self.signer.verify(function, state) if state else None
        entry = self.store.get(key, function) if key is not None else None
        if key is None or entry is None:
            return None
        track = entry.value
        if track.size != frame.shape[:2] or track.model_version != model_version:
            return None
        return entry, key.step

    def _start(
        self,
        model: UnSAMv2Model,
        lane: Callable[[], Any],
        shape: shapes.TrackedShape,
        frame: npt.NDArray[np.uint8],
        function: str,
        granularity: float,
        model_version: str,
    ) -> tuple[Any, str]:
        frames = FrameList([frame], keep_last=FRAMES_KEPT, max_pixels=self.max_image_pixels)
        session = VideoPredictor(model).open(frames)
        track = Track(session, frames, model_version)
        try:
            with lane():
                prompt_shape(session, 0, shape, granularity)
        except BaseException:
            track.close()
            raise
        entry = self.store.add(function, track)
        key = self.signer.issue(function, entry.session_id, entry.step, self.store.ttl_s)
        return shapes.shape_reply(shape), key

    def _continue(
        self,
        found: tuple[Entry[Track], int],
        lane: Callable[[], Any],
        shape: shapes.TrackedShape,
        frame: npt.NDArray[np.uint8],
        function: str,
    ) -> tuple[Any, str, bool] | None:
        """Track one step; None when the session moved on or was dropped meanwhile."""
        entry, step = found
        with self._running(entry) as current:
            if not current or entry.step != step:
                return None
            track = entry.value
            try:
                index = track.frames.push(frame)
                with lane():
                    (result,) = track.session.propagate(start=index, max_frames=0)
            except BaseException:
                self.store.discard(entry)  # a pushed frame without its step: start afresh
                raise
            entry.step += 1
            mask = result.masks()[0]
        key = self.signer.issue(function, entry.session_id, entry.step, self.store.ttl_s)
        if not mask.any():
            return shapes.shape_reply(shape), key, False
        return shapes.encode_shape(mask, shape, tolerance_px=self.polygon_tolerance_px), key, True

    @contextmanager
    def _running(self, entry: Entry[Track]) -> Iterator[bool]:
        """Hold a session's lock; yield whether it is still stored; close it if it was dropped."""
        with entry.lock:
            try:
                yield self.store.is_stored(entry)
            finally:
                if not self.store.is_stored(entry):
                    entry.value.close()
