"""cvat-sdk auto-annotation functions for ``cvat-cli --function-module``.

Detection (any CVAT; immediate mode), one command line::

    cvat-cli --server-host http://localhost:8080 --auth user task auto-annotate 42
        --function-module ml_backend.cvat.sdk_function -p granularity=float:0.3
        --allow-unmatched-labels --conf-threshold 0.85

Interaction (cvat-sdk >= 2.71, agent mode: Enterprise/Online), one command line::

    cvat-cli function create-native "UnSAMv2 g=0.3"
        --function-module ml_backend.cvat.sdk_function -p kind=str:interactor
        -p granularity=float:0.3

Parameters (``-p name=type:value``) are the keyword arguments of `create`. The model comes from
``checkpoint``/``model``/``device`` or else from the same settings as the backend
(``UNSAMV2_CHECKPOINT``, ``UNSAMV2_MODEL``, ``UNSAMV2_DEVICE``, the weights folder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import PIL.Image

from core_model.errors import DependencyError
from core_model.serving import MaskPredictor
from core_model.types import ImageEmbedding, Prompts, validate_granularity
from core_model.whole_image import WholeImageConfig, WholeImageSegmenter
from ml_backend.cvat import codec
from ml_backend.cvat.presets import DETECTOR_LABEL
from ml_backend.cvat.service import segmenter_config
from ml_backend.errors import BadRequestError
from ml_backend.whole_image_defaults import (
    POINTS_PER_SIDE,
    PRED_IOU_THRESH,
    STABILITY_SCORE_THRESH,
)

try:
    import cvat_sdk.auto_annotation as cvataa
    from cvat_sdk import models
    from cvat_sdk.masks import encode_mask
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise DependencyError(
        "the cvat-sdk function needs cvat-sdk with its masks extra: "
        f"pip install 'cvat-sdk[masks]' ({exc})"
    ) from exc

logger = logging.getLogger(__name__)

HAS_INTERACTION = hasattr(cvataa, "InteractionFunction")
"""Whether the installed cvat-sdk has interaction functions (2.71 and later)."""


def _rgb(image: PIL.Image.Image) -> npt.NDArray[np.uint8]:
    """Return a PIL image as (H, W, 3) uint8 RGB."""
    return np.array(image.convert("RGB"), dtype=np.uint8)  # writable: torch reads it


class UnSAMv2Detection:
    """Detection function: every object of the image at one granularity, as masks.

    Args:
        predictor: The predictor.
        granularity: In [0.1, 1.0].
        config: Whole-image settings; `pred_iou_thresh` is the default confidence threshold
            (CVAT's ``--conf-threshold`` replaces it).
        label: The function's one label (type mask).
        polygon_tolerance_px: Simplification of polygons when CVAT asks for polygons.
    """

    def __init__(
        self,
        predictor: MaskPredictor,
        *,
        granularity: float,
        config: WholeImageConfig,
        label: str = DETECTOR_LABEL,
        polygon_tolerance_px: float = 1.0,
    ) -> None:
        self.predictor = predictor
        self.granularity = validate_granularity(granularity)
        self.config = config
        self.label = label
        self.polygon_tolerance_px = polygon_tolerance_px

    @property
    def spec(self) -> cvataa.DetectionFunctionSpec:
        """One mask label."""
        return cvataa.DetectionFunctionSpec(labels=[cvataa.label_spec(self.label, 0, type="mask")])

    def detect(
        self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image
    ) -> list[models.LabeledShapeRequest]:
        """Return masks (or polygons, if the context asks) with confidence >= the threshold."""
        config = segmenter_config(self.config, context.conf_threshold)
        masks = WholeImageSegmenter(self.predictor, config).segment(
            _rgb(image), granularities=(self.granularity,)
        )
        shapes = []
        for generated in masks:
            if context.conf_threshold is not None and generated.score < context.conf_threshold:
                continue
            if context.conv_mask_to_poly:
                points = codec.polygon_points(
                    generated.mask, tolerance_px=self.polygon_tolerance_px
                )
                if points is not None:
                    shapes.append(cvataa.polygon(0, points))
            else:
                x0, y0, x1, y1 = (int(v) for v in generated.box_xyxy)
                shapes.append(cvataa.mask(0, encode_mask(generated.mask, bbox=[x0, y0, x1, y1])))
        logger.info("%s: %d shape(s)", context.frame_name, len(shapes))
        return shapes


class UnSAMv2Interaction:
    """Interaction function: one mask for clicks and an optional box, at one granularity.

    The agent calls `preprocess_image` once per frame and caches its result (the embedding),
    so follow-up clicks only decode. Positive points are optional when a box is given.
    """

    def __init__(self, predictor: MaskPredictor, *, granularity: float) -> None:
        self.predictor = predictor
        self.granularity = validate_granularity(granularity)

    @property
    def spec(self) -> Any:
        """Points optional (a box alone works), negative points and one box allowed."""
        return cvataa.InteractionFunctionSpec(
            min_pos_points=0, min_neg_points=0, min_bounding_boxes=0
        )

    def preprocess_image(self, context: Any, image: PIL.Image.Image) -> ImageEmbedding:
        """Embed the frame (the expensive, prompt-independent part)."""
        return self.predictor.embed(_rgb(image))

    def detect(self, context: Any, pp_image: ImageEmbedding, prompts: Any) -> list[Any]:
        """Return one mask shape, or nothing when the model finds no object there."""
        body = {
            "pos_points": [list(p) for p in prompts.pos_points],
            "neg_points": [list(p) for p in prompts.neg_points],
            "obj_bbox": [list(c) for c in prompts.bounding_box] if prompts.bounding_box else None,
        }
        height, width = pp_image.original_hw
        parsed: Prompts = codec.decode_prompts(body, height=height, width=width)
        result = self.predictor.predict(pp_image, parsed, granularity=self.granularity)
        mask = result.masks[0]
        if not mask.any():
            return []
        confidence = float(np.clip(result.scores[0], 0.0, 1.0))
        return [
            cvataa.InteractionResultShape(
                type="mask",
                points=encode_mask(mask),
                attributes=[
                    models.AttributeValRequest(
                        spec_id=cvataa.InteractionResultAttributes.CONFIDENCE,
                        value=f"{confidence:.4f}",
                    )
                ],
            )
        ]


def load_predictor(
    *, checkpoint: str | None, model: str | None, device: str | None, scope: str = "global"
) -> MaskPredictor:
    """Build the predictor from explicit arguments, else from the backend's settings.

    Without an explicit checkpoint, the scope's current version in the backend's store is used
    (a scope without one: global's, then the configured checkpoint).

    Raises:
        ModelUnavailableError: no usable checkpoint (the message says what to set).
    """
    from labeling_pipeline.store import Store
    from ml_backend.runtime import ModelRuntime
    from ml_backend.settings import Settings

    settings = Settings.from_env()
    changes: dict[str, object] = {}
    if checkpoint:
        changes["checkpoint"] = Path(checkpoint).expanduser()
    if model:
        changes["model"] = model
    if device:
        changes["device"] = device
    settings = settings.with_pipeline(**changes) if changes else settings
    store = None if checkpoint else Store(settings.pipeline.resolved_database_url)
    runtime = ModelRuntime(
        settings.pipeline,
        store=store,
        poll_s=0,
        cache_bytes=settings.cache_mb * 1024 * 1024,
        max_image_pixels=settings.max_image_pixels,
    )
    runtime.refresh()
    predictor: MaskPredictor = runtime.predictor(scope)
    return predictor


def create(
    granularity: float = 0.5,
    *,
    kind: str = "detector",
    checkpoint: str | None = None,
    model: str | None = None,
    device: str | None = None,
    pred_iou_thresh: float = PRED_IOU_THRESH,
    stability_score_thresh: float = STABILITY_SCORE_THRESH,
    points_per_side: int = POINTS_PER_SIDE,
    max_masks: int = 100,
    label: str = DETECTOR_LABEL,
    polygon_tolerance_px: float = 1.0,
    predictor: MaskPredictor | None = None,
    scope: str = "global",
) -> UnSAMv2Detection | UnSAMv2Interaction:
    """Create the function (cvat-cli calls this with the ``-p`` parameters).

    Args:
        granularity: In [0.1, 1.0]; 0.1 fine parts, 1.0 whole objects.
        kind: "detector" (auto-annotation) or "interactor" (needs cvat-sdk >= 2.71).
        checkpoint: Checkpoint file (default: ``UNSAMV2_CHECKPOINT`` or the weights folder).
        model: Model variant or YAML (default: ``UNSAMV2_MODEL``).
        device: "cpu" or "cuda" (default: ``UNSAMV2_DEVICE``).
        pred_iou_thresh: Default minimum confidence (predicted IoU) of a detected mask.
        stability_score_thresh: Minimum stability of a detected mask.
        points_per_side: Detection grid (points_per_side^2 clicks).
        max_masks: At most this many masks per image.
        label: Detector label name (type mask); match it to a task label.
        polygon_tolerance_px: Polygon simplification with ``--conv-mask-to-poly``.
        predictor: A ready predictor (Python callers; the model arguments are then unused).
        scope: Model lineage to use (``global``, ``ls:<id>``, ``project:<id>``): its current
            version in the backend's store (without `checkpoint`).

    Raises:
        BadRequestError: unknown kind, or "interactor" with an older cvat-sdk.
        GranularityError: granularity outside [0.1, 1.0].
    """
    granularity = validate_granularity(granularity)
    if kind not in ("detector", "interactor"):
        raise BadRequestError(f"kind must be 'detector' or 'interactor', got {kind!r}")
    if kind == "interactor" and not HAS_INTERACTION:
        raise BadRequestError("interaction functions need cvat-sdk 2.71 or later")
    predictor = predictor or load_predictor(
        checkpoint=checkpoint, model=model, device=device, scope=scope
    )
    if kind == "interactor":
        return UnSAMv2Interaction(predictor, granularity=granularity)
    config = WholeImageConfig(
        points_per_side=points_per_side,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
        max_masks=max_masks,
    )
    return UnSAMv2Detection(
        predictor,
        granularity=granularity,
        config=config,
        label=label,
        polygon_tolerance_px=polygon_tolerance_px,
    )
