"""Invoke a CVAT function: decode the request, run the model, encode the reply.

`CvatService` is shared by the dashboard-compatible routes and the Nuclio handler. It holds no
model: `serving` returns the process's current predictor (the `ModelRuntime`'s, so Label Studio
and CVAT share one model and one embedding cache) at every call.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from core_model.imageio import MAX_IMAGE_PIXELS
from core_model.serving import MaskPredictor
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from labeling_pipeline.store.repository import NotFoundError
from ml_backend.cvat import codec
from ml_backend.cvat.presets import DETECTOR_LABEL, CvatFunction, DetectorSettings, Preset, catalog
from ml_backend.cvat.tracker import CvatTracker
from ml_backend.cvat.tracker_shapes import parse_request
from ml_backend.errors import BadRequestError

logger = logging.getLogger(__name__)

Serving = Callable[[str], tuple[MaskPredictor, str]]


class UnknownFunctionError(NotFoundError):
    """A function name that this server does not serve."""


@dataclass(frozen=True)
class CvatOptions:
    """How the functions run.

    Attributes:
        max_image_pixels: Largest accepted frame (H * W), as in the Label Studio backend.
        whole_image: Detector settings common to every preset (mask count, deadline, decoder
            batch); each preset's `DetectorSettings` set the grid and the thresholds, and a
            request's ``threshold`` replaces ``pred_iou_thresh``.
        polygon_tolerance_px: Simplification of detector and tracker outline polygons.
        label: The detectors' label name.
        tracker_sessions: Shapes the trackers keep tracking at once (and at most per request).
        tracker_ttl_s: Idle time after which a tracked shape's session and state expire.
        state_secret: Key signing tracker states (None: random per process).
    """

    max_image_pixels: int = MAX_IMAGE_PIXELS
    whole_image: WholeImageConfig = field(default_factory=WholeImageConfig)
    polygon_tolerance_px: float = 1.0
    label: str = DETECTOR_LABEL
    tracker_sessions: int = 16
    tracker_ttl_s: float = 600.0
    state_secret: str | None = field(default=None, repr=False)


class CvatService:
    """The functions of a list of granularity presets, run on the serving predictor.

    Args:
        serving: Returns (predictor, model version) of a scope; raises
            `ModelUnavailableError` while no model is loaded (`ModelRuntime.serving`).
        presets: One interactor, one detector and one tracker per preset.
        options: Image limit, detector and tracker settings.
    """

    def __init__(
        self, serving: Serving, presets: Sequence[Preset], options: CvatOptions | None = None
    ) -> None:
        self.serving = serving
        self.functions = catalog(presets)
        self.options = options or CvatOptions()
        self._tracker: CvatTracker | None = None
        self._tracker_lock = threading.Lock()

    @property
    def tracker(self) -> CvatTracker:
        """The trackers' sessions and state signer (made at the first use)."""
        with self._tracker_lock:
            if self._tracker is None:
                self._tracker = self._new_tracker()
            return self._tracker

    def _new_tracker(self) -> CvatTracker:
        return CvatTracker(
            max_sessions=self.options.tracker_sessions,
            ttl_s=self.options.tracker_ttl_s,
            secret=self.options.state_secret,
            max_image_pixels=self.options.max_image_pixels,
            polygon_tolerance_px=self.options.polygon_tolerance_px,
        )

    def function(self, name: str) -> CvatFunction:
        """Return the function called `name`, or raise `UnknownFunctionError` (HTTP 404)."""
        found = self.functions.get(name)
        if found is None:
            raise UnknownFunctionError(
                f"no function {name!r} here; this server serves {', '.join(self.functions)}"
            )
        return found

    def invoke(self, function: CvatFunction, body: object) -> Any:
        """Run a function on a CVAT request body and return the JSON-ready reply.

        Raises:
            BadRequestError, InvalidImageError, InvalidPromptError: bad request.
            ModelUnavailableError: no model loaded yet.
        """
        if not isinstance(body, Mapping):
            raise BadRequestError("the request body must be a JSON object")
        scope = function.preset.scope
        if function.kind == "interactor":
            return self.interact(body, granularity=function.granularity, scope=scope)
        if function.kind == "tracker":
            return self.track(body, function=function)
        return self.detect(body, preset=function.preset)

    def track(self, body: Mapping[str, Any], *, function: CvatFunction) -> dict[str, Any]:
        """Answer a tracker request: each shape on this frame, and its next state.

        See `ml_backend.cvat.tracker` (states, restarts) and `ml_backend.cvat.tracker_shapes`
        (accepted shapes).
        """
        tracker = self.tracker
        request = parse_request(body, max_shapes=tracker.store.max_sessions)
        frame = codec.decode_frame(body, max_pixels=self.options.max_image_pixels)
        if not request.shapes:
            return {"shapes": [], "states": []}
        predictor, version = self.serving(function.preset.scope)
        return tracker.track(
            request,
            frame.load(),
            predictor=predictor,
            model_version=version,
            function=function.name,
            granularity=function.granularity,
        )

    def interact(
        self, body: Mapping[str, Any], *, granularity: float, scope: str = "global"
    ) -> dict[str, Any]:
        """Answer an interactor request: one mask for the clicks (and box) at `granularity`.

        The prompts are checked against the frame's size from its file header, so a click off
        a new frame is refused before the frame is decoded or embedded.
        """
        started = time.perf_counter()
        frame = codec.decode_frame(body, max_pixels=self.options.max_image_pixels)
        height, width = frame.size()
        prompts = codec.decode_prompts(body, height=height, width=width)
        predictor, _ = self.serving(scope)
        embedding = predictor.embed_keyed(frame.key, frame.load)
        if embedding.original_hw != (height, width):  # a header that EXIF later contradicts
            height, width = embedding.original_hw
            prompts = codec.decode_prompts(body, height=height, width=width)
        result = predictor.predict(embedding, prompts, granularity=granularity)
        reply = codec.interactor_reply(result.masks[0], prompts)
        logger.info(
            "cvat interactor g=%.2f: %d click(s)%s -> %d px in %.0f ms",
            granularity,
            len(prompts.points),
            " + box" if prompts.box is not None else "",
            np.count_nonzero(result.masks[0]),
            (time.perf_counter() - started) * 1000,
        )
        return reply

    def detect(self, body: Mapping[str, Any], *, preset: Preset) -> list[dict[str, Any]]:
        """Answer a detector request: automatic masks with the preset's settings, best first.

        A ``threshold`` in the request is the minimum confidence (predicted IoU) of a mask.
        """
        started = time.perf_counter()
        threshold = codec.decode_threshold(body)
        frame = codec.decode_frame(body, max_pixels=self.options.max_image_pixels)
        predictor, _ = self.serving(preset.scope)
        config = detector_config(self.options.whole_image, preset.detector)
        shapes = detect_shapes(
            predictor,
            predictor.embed_keyed(frame.key, frame.load),
            granularities=preset.detector_granularities,
            threshold=threshold,
            options=replace(self.options, whole_image=config),
        )
        logger.info(
            "cvat detector %s (g=%s, %dx%d grid) threshold=%s: %d mask(s) in %.0f ms",
            preset.name,
            ",".join(f"{g:g}" for g in preset.detector_granularities),
            config.points_per_side,
            config.points_per_side,
            threshold,
            len(shapes),
            (time.perf_counter() - started) * 1000,
        )
        return shapes


def detector_config(base: WholeImageConfig, detector: DetectorSettings) -> WholeImageConfig:
    """Return `base` with a preset's grid and thresholds."""
    changes: dict[str, Any] = {
        "points_per_side": detector.points_per_side,
        "pred_iou_thresh": detector.pred_iou_thresh,
        "stability_score_thresh": detector.stability_score_thresh,
    }
    if detector.box_nms_thresh is not None:
        changes["box_nms_thresh"] = detector.box_nms_thresh
    return replace(base, **changes)


def segmenter_config(config: WholeImageConfig, threshold: float | None) -> WholeImageConfig:
    """Return `config` with ``pred_iou_thresh`` set to a caller's confidence threshold."""
    return config if threshold is None else replace(config, pred_iou_thresh=threshold)


def detect_shapes(
    predictor: MaskPredictor,
    image: Any,
    *,
    granularities: tuple[float, ...],
    threshold: float | None,
    options: CvatOptions,
) -> list[dict[str, Any]]:
    """Run whole-image segmentation and encode the masks as CVAT detector shapes.

    Args:
        predictor: The predictor.
        image: (H, W, 3) uint8 RGB, or its `ImageEmbedding`.
        granularities: Granularities in [0.1, 1.0] decoded for every grid click.
        threshold: Minimum confidence (predicted IoU), or None for the configured default.
        options: Segmenter settings, label and polygon tolerance.
    """
    config = segmenter_config(options.whole_image, threshold)
    run = WholeImageSegmenter(predictor, config).run(image, granularities=granularities)
    if not run.complete:
        logger.warning(
            "cvat detector stopped at the deadline after %d of %d grid clicks",
            run.points_decoded,
            run.points_total,
        )
    shapes = []
    for generated in run.masks:
        if threshold is not None and generated.score < threshold:
            continue
        shape = codec.detector_shape(
            generated.mask,
            generated.score,
            label=options.label,
            tolerance_px=options.polygon_tolerance_px,
        )
        if shape is not None:
            shapes.append(shape)
    return shapes
