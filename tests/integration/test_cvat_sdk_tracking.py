"""The cvat-sdk tracking path: a whole track over a task's frames, and the tracking agent function.

No CVAT server runs here, so the task is a stub with the cvat-sdk ``Task`` methods the path calls
(``size``, ``get_frames_info``, ``get_frame``, ``update_annotations``); everything else (the
model, the video predictor, the SDK's request models and mask codec) is real.
"""

from __future__ import annotations

import io
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from cvat_sdk import models
from cvat_sdk.auto_annotation import TrackableShape, TrackingFunctionShapeContext
from cvat_sdk.masks import decode_mask
from PIL import Image

from core_model.errors import FrameIndexError, VideoReadError
from core_model.predictor import GranularityPredictor
from core_model.types import Prompts
from core_model.video.frames import FrameList
from core_model.video.predictor import VideoPredictor
from ml_backend.cvat import sdk_tracking
from ml_backend.cvat.track_propagation import propagate_shape
from ml_backend.cvat.tracker_shapes import TrackedShape, encode_cvat_mask

H, W = 96, 128


def moving_frame(step: int) -> np.ndarray:
    frame = np.random.default_rng(step).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    frame[30:54, 10 + 6 * step : 40 + 6 * step] = [200, 40, 40]
    return frame


class StubTask:
    """A cvat-sdk ``Task`` stand-in: PNG frames on demand, annotations recorded."""

    def __init__(self, frames: list[np.ndarray]) -> None:
        self.frames = frames
        self.size = len(frames)
        self.fetched: list[int] = []
        self.uploads: list[tuple[Any, Any]] = []

    def get_frames_info(self) -> list[SimpleNamespace]:
        return [SimpleNamespace(height=f.shape[0], width=f.shape[1]) for f in self.frames]

    def get_frame(self, frame_id: int, *, quality: str | None = None) -> io.BytesIO:
        assert quality == "original"
        self.fetched.append(frame_id)
        stream = io.BytesIO()
        Image.fromarray(self.frames[frame_id]).save(stream, format="PNG")
        stream.seek(0)
        return stream

    def update_annotations(self, data: Any, *, action: Any = None) -> None:
        self.uploads.append((data, action))


@pytest.fixture(scope="module")
def predictor(tiny_model) -> GranularityPredictor:
    return GranularityPredictor(tiny_model)


def test_a_rectangle_track_covers_every_frame_and_matches_the_video_predictor(predictor) -> None:
    frames = [moving_frame(i) for i in range(5)]
    box = [22.0, 30.0, 52.0, 54.0]  # on frame 2
    found = propagate_shape(
        predictor.model, FrameList(frames), 2, TrackedShape("rectangle", tuple(box)), 0.5
    )
    assert list(found) == [0, 1, 2, 3, 4] and found[2] == box
    session = VideoPredictor(predictor.model).open(FrameList(frames))
    session.add_prompts(2, 1, Prompts.from_arrays(box=box), 0.5)
    for result in [*session.propagate(start=2), *session.propagate(start=2, reverse=True)]:
        if result.frame == 2:
            continue
        rows, cols = np.nonzero(result.masks()[0])
        expected = [cols.min(), rows.min(), cols.max() + 1, rows.max() + 1] if rows.size else None
        assert found[result.frame] == (None if expected is None else [float(v) for v in expected])


def test_track_task_uploads_one_track_with_a_keyframe_per_frame(predictor) -> None:
    task = StubTask([moving_frame(i) for i in range(4)])
    shape = {"type": "polygon", "points": [16, 30, 46, 30, 46, 54, 16, 54]}
    data = sdk_tracking.track_task(
        task, frame=1, shape=shape, label_id=7, granularity=0.3, predictor=predictor
    )
    assert task.uploads == [(data, sdk_tracking.AnnotationUpdateAction.CREATE)]
    (track,) = data.tracks
    assert isinstance(track, models.LabeledTrackRequest) and track.label_id == 7
    assert track.source == "semi-auto"
    frames = [s.frame for s in track.shapes]
    assert frames == sorted(frames) and track.frame == frames[0] and 1 in frames
    keyframe = next(s for s in track.shapes if s.frame == 1)
    assert keyframe.points == shape["points"] and not keyframe.outside
    for tracked in track.shapes:
        assert tracked.type.value == "polygon" and len(tracked.points) >= 6
    assert sorted(set(task.fetched)) == [0, 1, 2, 3]  # read on demand, never all at once


def test_masks_become_one_mask_shape_per_frame(predictor) -> None:
    task = StubTask([moving_frame(i) for i in range(3)])
    mask = np.zeros((H, W), dtype=bool)
    mask[30:54, 10:40] = True
    shape = {"type": "mask", "points": encode_cvat_mask(mask)}
    data = sdk_tracking.track_task(
        task, frame=0, shape=shape, label_id=3, predictor=predictor, upload=False
    )
    assert task.uploads == [] and not data.get("tracks")
    assert [s.frame for s in data.shapes][0] == 0
    for labeled in data.shapes:
        assert labeled.type.value == "mask" and labeled.label_id == 3
        assert decode_mask(labeled.points, image_width=W, image_height=H).any()
    first = decode_mask(data.shapes[0].points, image_width=W, image_height=H)
    assert np.array_equal(first, mask)


def test_a_lost_object_is_outside_until_found_again() -> None:
    found = {0: None, 1: {"points": [1, 2, 3, 4]}, 2: None, 3: {"points": [2, 3, 4, 5]}}
    (track,) = sdk_tracking.track_request(found, "rectangle", label_id=1).tracks
    assert [(s.frame, s.outside, s.points) for s in track.shapes] == [
        (1, False, [1, 2, 3, 4]),
        (2, True, [1, 2, 3, 4]),
        (3, False, [2, 3, 4, 5]),
    ]


def test_task_frames_refuse_bad_indices_and_sizes() -> None:
    task = StubTask([moving_frame(0), np.zeros((10, 10, 3), dtype=np.uint8)])
    source = sdk_tracking.TaskFrames(task)
    assert (source.num_frames, source.size) == (2, (H, W))
    assert np.array_equal(source.frame(0), moving_frame(0))
    with pytest.raises(FrameIndexError):
        source.frame(2)
    with pytest.raises(VideoReadError, match="10x10"):
        source.frame(1)
    with pytest.raises(VideoReadError, match="more than the limit"):
        sdk_tracking.TaskFrames(task, max_pixels=100).frame(0)


class ShapeContext(TrackingFunctionShapeContext):
    """The agent's per-shape context (the agent itself needs a CVAT server)."""

    def __init__(self, shape_type: str) -> None:
        self._type = shape_type

    @property
    def original_shape_type(self) -> str:
        return self._type


def test_the_agent_function_tracks_each_shape_type(predictor) -> None:
    function = sdk_tracking.create(granularity=0.4, predictor=predictor)
    assert function.spec.supported_shape_types == {"rectangle", "polygon", "mask"}
    mask = np.zeros((H, W), dtype=bool)
    mask[30:54, 10:40] = True
    for shape in [
        TrackableShape(type="rectangle", points=[10, 30, 40, 54]),
        TrackableShape(type="polygon", points=[10, 30, 40, 30, 40, 54, 10, 54]),
        TrackableShape(type="mask", points=encode_cvat_mask(mask)),
    ]:
        context = ShapeContext(shape.type)
        first = function.preprocess_image(context, Image.fromarray(moving_frame(0)))
        state = function.init_tracking_state(context, first, shape)
        for step in range(1, 5):
            image = function.preprocess_image(context, Image.fromarray(moving_frame(step)))
            tracked = function.track(context, image, state)
            assert tracked is None or tracked.type == shape.type
            if tracked is not None and shape.type == "mask":
                assert decode_mask(tracked.points, image_width=W, image_height=H).any()
        # only the newest frames are held: memory does not grow with the clip
        assert state.frames.num_frames == 5 and sdk_tracking.FRAMES_KEPT < 5
        with pytest.raises(FrameIndexError, match="dropped"):
            state.frames.frame(0)
