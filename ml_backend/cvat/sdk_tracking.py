"""Tracking with cvat-sdk: a whole track over a task's frames in one call, or a tracking agent.

A whole track (any CVAT; a Python call with an SDK client)::

    from cvat_sdk import make_client
    from ml_backend.cvat.sdk_tracking import track_task
    with make_client("http://localhost:8080", credentials=("user", "pass")) as client:
        task = client.tasks.retrieve(42)
        track_task(task, frame=10, shape={"type": "rectangle", "points": [x1, y1, x2, y2]},
                   label_id=7, granularity=0.5)

reads the task's frames one at a time (`TaskFrames`), tracks the shape forwards to the last
frame and back to the first (`ml_backend.cvat.track_propagation`), and adds the result to the
task: rectangles and polygons as one track with a keyframe on every frame (``outside`` where the
object is not found), masks as one mask shape per frame (CVAT has no mask tracks).

A tracking agent (cvat-sdk >= 2.60, agent mode: Enterprise/Online), one command line::

    cvat-cli function create-native "UnSAMv2 tracker g=0.5"
        --function-module ml_backend.cvat.sdk_tracking -p granularity=float:0.5

The model comes from ``checkpoint``/``model``/``device`` or else the backend's settings, as in
`ml_backend.cvat.sdk_function`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import PIL.Image

from core_model.errors import DependencyError, VideoReadError
from core_model.imageio import MAX_IMAGE_PIXELS, load_image_rgb
from core_model.serving import MaskPredictor
from core_model.types import validate_granularity
from core_model.video.frames import FrameList, check_frame_index
from core_model.video.predictor import VideoPredictor, VideoSession
from ml_backend.cvat import tracker_shapes as shapes
from ml_backend.cvat.track_propagation import prompt_shape, propagate_shape
from ml_backend.cvat.tracker import FRAMES_KEPT
from ml_backend.video_access import video_model_access

try:
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk import models
    from cvat_sdk.core.proxies.annotations import AnnotationUpdateAction
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise DependencyError(
        f"the cvat-sdk tracking path needs cvat-sdk: pip install 'cvat-sdk[masks]' ({exc})"
    ) from exc

logger = logging.getLogger(__name__)


class SdkTask(Protocol):
    """The parts of cvat-sdk's ``Task`` proxy used here."""

    @property
    def size(self) -> int:
        """Frames in the task."""
        ...

    def get_frame(self, frame_id: int, *, quality: str | None = None) -> Any:
        """The frame's image file (a binary stream)."""
        ...

    def get_frames_info(self) -> Sequence[Any]:
        """Per frame: ``width``, ``height``, ``name``."""
        ...

    def update_annotations(self, data: Any, *, action: Any = ...) -> None:
        """Add, change or remove annotations."""
        ...


class TaskFrames:
    """A `FrameSource` over a CVAT task's frames, fetched and decoded one at a time.

    Args:
        task: A cvat-sdk task proxy.
        max_pixels: Largest accepted frame (H * W).
        quality: ``"original"`` (the uploaded files) or ``"compressed"``.
    """

    def __init__(
        self, task: SdkTask, *, max_pixels: int = MAX_IMAGE_PIXELS, quality: str = "original"
    ) -> None:
        self.task = task
        self.max_pixels = max_pixels
        self.quality = quality
        info = task.get_frames_info()
        self._num_frames = int(task.size)
        self._size = (int(info[0].height), int(info[0].width)) if info else (0, 0)

    @property
    def num_frames(self) -> int:
        """Frames in the task."""
        return self._num_frames

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the first frame (a task's frames share a size)."""
        return self._size

    def frame(self, index: int) -> npt.NDArray[np.uint8]:
        """Return frame `index` as (H, W, 3) uint8 RGB.

        Raises:
            FrameIndexError: `index` is not a frame of the task.
            VideoReadError: the frame cannot be decoded or has another size.
        """
        check_frame_index(index, self._num_frames)
        data = self.task.get_frame(index, quality=self.quality).read()
        try:
            image = load_image_rgb(data, max_pixels=self.max_pixels)
        except ValueError as exc:
            raise VideoReadError(f"task frame {index}: {exc}") from None
        if image.shape[:2] != self._size:
            raise VideoReadError(
                f"task frame {index} is {image.shape[1]}x{image.shape[0]}, the task's frames "
                f"are {self._size[1]}x{self._size[0]}"
            )
        return image

    def close(self) -> None:
        """Nothing to release (frames are fetched on demand)."""


def _tracked_shape(shape: Mapping[str, Any] | shapes.TrackedShape) -> shapes.TrackedShape:
    if isinstance(shape, shapes.TrackedShape):
        return shape
    request = shapes.parse_request({"image": "-", "shapes": [dict(shape)]}, max_shapes=1)
    return request.shapes[0]


def track_request(
    found: Mapping[int, Any | None], shape_type: str, *, label_id: int
) -> models.PatchedLabeledDataRequest:
    """Build the annotations that add a propagated shape to a task.

    Args:
        found: {frame: typed shape ``{"type", "points"}``, or None where not found}.
        shape_type: "rectangle", "polygon" or "mask".
        label_id: The task label's id.

    Returns:
        One track (rectangle, polygon) with a keyframe per frame and ``outside`` where the
        object is not found, or one mask shape per frame where it is (CVAT has no mask tracks).
    """
    if shape_type == "mask":
        masks = [
            models.LabeledShapeRequest(
                type="mask", frame=frame, label_id=label_id, points=value["points"]
            )
            for frame, value in found.items()
            if value is not None
        ]
        return models.PatchedLabeledDataRequest(shapes=masks)
    tracked, last = [], None
    for frame, value in found.items():
        last = value["points"] if value is not None else last
        if last is not None:  # an object is outside until first found
            tracked.append(
                models.TrackedShapeRequest(
                    type=shape_type, frame=frame, points=last, outside=value is None
                )
            )
    track = models.LabeledTrackRequest(
        label_id=label_id, frame=tracked[0].frame, shapes=tracked, source="semi-auto"
    )
    return models.PatchedLabeledDataRequest(tracks=[track])


def track_task(
    task: SdkTask,
    *,
    frame: int,
    shape: Mapping[str, Any] | shapes.TrackedShape,
    label_id: int,
    granularity: float = 0.5,
    predictor: MaskPredictor | None = None,
    backwards: bool = True,
    upload: bool = True,
) -> models.PatchedLabeledDataRequest:
    """Track one shape over all of a task's frames and add the result to the task.

    Args:
        task: A cvat-sdk task proxy (``client.tasks.retrieve(id)``).
        frame: The keyframe (task frame index) the shape is drawn on.
        shape: ``{"type": "rectangle" | "polygon" | "mask", "points": [...]}`` as CVAT
            stores shapes.
        label_id: The task label the track gets.
        granularity: In [0.1, 1].
        predictor: The predictor (default: from the backend's settings, `load_predictor`).
        backwards: Also track from the keyframe back to the first frame.
        upload: Add the result to the task (False: only return it).

    Returns:
        The annotations added (see `track_request`).
    """
    if predictor is None:
        from ml_backend.cvat.sdk_function import load_predictor

        predictor = load_predictor(checkpoint=None, model=None, device=None)
    model, lane = video_model_access(predictor)
    tracked = _tracked_shape(shape)
    typed = shapes.TrackedShape(tracked.type, tracked.points, typed=True)
    found = propagate_shape(
        model,
        TaskFrames(task, max_pixels=predictor.max_image_pixels),
        frame,
        typed,
        validate_granularity(granularity),
        backwards=backwards,
        lane=lane,
    )
    data = track_request(found, typed.type, label_id=label_id)
    if upload:
        task.update_annotations(data, action=AnnotationUpdateAction.CREATE)
    return data


@dataclass(eq=False)
class AgentTrack:
    """An agent's tracking state: one object's session over its newest frames."""

    session: VideoSession
    frames: FrameList
    shape: shapes.TrackedShape


class UnSAMv2Tracking:
    """A cvat-sdk tracking function (agent mode): rectangles, polygons and masks.

    Args:
        predictor: The predictor whose model tracks.
        granularity: In [0.1, 1].
        polygon_tolerance_px: Simplification of returned polygons.
    """

    def __init__(
        self, predictor: MaskPredictor, *, granularity: float, polygon_tolerance_px: float = 1.0
    ) -> None:
        self.model, self.lane = video_model_access(predictor)
        self.max_image_pixels = predictor.max_image_pixels
        self.granularity = validate_granularity(granularity)
        self.polygon_tolerance_px = polygon_tolerance_px

    @property
    def spec(self) -> cvataa.TrackingFunctionSpec:
        """The shape types this function tracks."""
        return cvataa.TrackingFunctionSpec(supported_shape_types=list(shapes.SHAPE_TYPES))

    def preprocess_image(self, context: Any, image: PIL.Image.Image) -> npt.NDArray[np.uint8]:
        """Return the image as (H, W, 3) uint8 RGB."""
        return np.array(image.convert("RGB"), dtype=np.uint8)

    def init_tracking_state(
        self, context: Any, pp_image: npt.NDArray[np.uint8], shape: cvataa.TrackableShape
    ) -> AgentTrack:
        """Start tracking `shape` on this image."""
        frames = FrameList([pp_image], keep_last=FRAMES_KEPT, max_pixels=self.max_image_pixels)
        session = VideoPredictor(self.model).open(frames)
        tracked = _tracked_shape({"type": shape.type, "points": list(shape.points)})
        with self.lane():
            prompt_shape(session, 0, tracked, self.granularity)
        return AgentTrack(session, frames, tracked)

    def track(
        self, context: Any, pp_image: npt.NDArray[np.uint8], state: AgentTrack
    ) -> cvataa.TrackableShape | None:
        """Return the shape on the next image, or None where the object is not found."""
        index = state.frames.push(pp_image)  # CVAT gives images of the first one's size
        with self.lane():
            (result,) = state.session.propagate(start=index, max_frames=0)
        mask = result.masks()[0]
        if not mask.any():
            return None
        like = shapes.TrackedShape(state.shape.type, (), typed=True)  # empty when no polygon
        reply = shapes.encode_shape(mask, like, tolerance_px=self.polygon_tolerance_px)
        if not reply["points"]:
            return None
        return cvataa.TrackableShape(type=state.shape.type, points=reply["points"])


def create(
    granularity: float = 0.5,
    *,
    checkpoint: str | None = None,
    model: str | None = None,
    device: str | None = None,
    scope: str = "global",
    predictor: MaskPredictor | None = None,
) -> UnSAMv2Tracking:
    """Create the tracking function (cvat-cli calls this with the ``-p`` parameters)."""
    from ml_backend.cvat.sdk_function import load_predictor

    granularity = validate_granularity(granularity)
    predictor = predictor or load_predictor(
        checkpoint=checkpoint, model=model, device=device, scope=scope
    )
    return UnSAMv2Tracking(predictor, granularity=granularity)
